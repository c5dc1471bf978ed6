--[[
  The gate every delivery attempt passes, in one step. In this order:
  1. the row is gone (event expired)                     -> 'gone'
  2. the row is no longer runnable (done, skipped, failed,
     superseded, waiting): never deliver it again         -> 'finished', meta, row
  3. a newer change exists for this user and app         -> 'superseded', meta, row (row written so)
  4. another change for this user and app is in flight   -> 'locked', meta, wait ms, holder
     (this job is added to the lock's waiters, woken when it is released)
  5. otherwise: take the lock for this attempt, row -> active, count the attempt -> 'ok', meta, row

  KEYS[1] event hash
  KEYS[2] user hash            (app -> rank of the newest change)
  KEYS[3] user+app lock        (value: `<job id>#<attempt>` of the attempt holding it)
  KEYS[4] lock waiters         (set of job ids)

  ARGV[1] app id
  ARGV[2] event id
  ARGV[3] job id
  ARGV[4] lock ttl, ms (outlives the attempt's longest possible run)
  ARGV[5] now, epoch ms

  Every key is the user's (one hash slot). An app's rate limit is another slot, shared by all
  users: `take-rate-slot` runs before this step, and `give-back-rate-slot` returns the slot when
  this step says anything but 'ok'.
]]
--- @include "rows"

local ev, user, lock, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local app, id, job = ARGV[1], ARGV[2], ARGV[3]
local ttl, now = tonumber(ARGV[4]), tonumber(ARGV[5])

local meta = redis.call('HGET', ev, '_meta')
if not meta then return {'gone'} end
local raw = redis.call('HGET', ev, app)
if not raw then return {'gone'} end
local row = cjson.decode(raw)
if row.state ~= 'scheduled' and row.state ~= 'retrying' and row.state ~= 'active' then
  return {'finished', meta, raw}
end

local latest = redis.call('HGET', user, app)
if latest then
  local _, _, newest = parse_rank(latest)
  if newest ~= id then
    row = patch_row(ev, app, {state = 'superseded', supersededBy = newest, finishedAt = now})
    return {'superseded', meta, cjson.encode(row)}
  end
end

-- Any holder blocks, an earlier attempt of this same job included: a worker that crashed, was
-- paused or lost Redis may still have that attempt open at the target, so its outcome is
-- unknown until it settles (it lets go) or its TTL ends.
local holder = redis.call('GET', lock)
if holder then
  local left = math.max(redis.call('PTTL', lock), 50)
  redis.call('SADD', waiters, job)
  redis.call('PEXPIRE', waiters, left + 60000)
  return {'locked', meta, tostring(left), holder}
end

local attempt = (row.attempts or 0) + 1
redis.call('SET', lock, job .. '#' .. attempt, 'PX', ttl)
row = patch_row(ev, app, {state = 'active', startedAt = now, attempts = attempt})
return {'ok', meta, cjson.encode(row)}
