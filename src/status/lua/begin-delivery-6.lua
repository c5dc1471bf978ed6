--[[
  The gate every delivery attempt passes, in one step. In this order:
  1. the row is gone (event expired)                     -> 'gone'
  2. the row is no longer runnable (done, skipped, failed,
     superseded, waiting): never deliver it again         -> 'finished', meta, row
  3. a newer change exists for this user and app         -> 'superseded', meta, row (row written so)
  4. another change for this user and app is in flight   -> 'locked', meta, wait ms, holder
     (this job is added to the lock's waiters, woken when it is released)
  5. the app's rate limit has no room in this window     -> 'limited', meta, wait ms
     (the job gets its own slot in a later window, written as the row's dueAt, and runs then
     without asking again; a slot whose window has passed is given up for a fresh one)
  6. otherwise: take the lock for this attempt, row -> active, count the attempt -> 'ok', meta, row

  KEYS[1] event hash
  KEYS[2] user hash            (app -> rank of the newest change)
  KEYS[3] user+app lock        (value: `<job id>#<attempt>` of the attempt holding it)
  KEYS[4] lock waiters         (set of job ids)
  KEYS[5] rate state           (hash: w = start (epoch ms) of the window being filled, n = slots taken in it)
  KEYS[6] rate reservations    (hash: job id -> start of its window; the row's dueAt says it too)

  ARGV[1] app id
  ARGV[2] event id
  ARGV[3] job id
  ARGV[4] lock ttl, ms (outlives the attempt's longest possible run)
  ARGV[5] now, epoch ms
  ARGV[6] rate limit max per window (0 = none)
  ARGV[7] rate limit window, ms
]]
--- @include "rows"

local ev, user, lock, waiters, rate, resv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local app, id, job = ARGV[1], ARGV[2], ARGV[3]
local ttl, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local max, per = tonumber(ARGV[6]), tonumber(ARGV[7])

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

if max > 0 then
  -- Windows are named by their start (epoch ms), so a changed `per` never reads an old index.
  local window = now - (now % per)
  local reserved = tonumber(redis.call('HGET', resv, job))
  if reserved and reserved > now then
    return {'limited', meta, tostring(reserved - now)}
  end
  if reserved then redis.call('HDEL', resv, job) end
  -- A slot reserved in a window that has passed (the job ran late) is not used: a fresh one is
  -- taken, so no window ever admits more than `max`.
  if reserved ~= window then
    local w = tonumber(redis.call('HGET', rate, 'w') or '0')
    local n = tonumber(redis.call('HGET', rate, 'n') or '0')
    if w < window or w % per ~= 0 then w, n = window, 0 end
    if n >= max then w, n = w + per, 0 end
    n = n + 1
    redis.call('HSET', rate, 'w', w, 'n', n)
    redis.call('PEXPIRE', rate, w + 2 * per - now)
    if w > window then
      redis.call('HSET', resv, job, w)
      redis.call('PEXPIRE', resv, w + 2 * per - now)
      patch_row(ev, app, {dueAt = w})
      return {'limited', meta, tostring(w - now)}
    end
  end
end

local attempt = (row.attempts or 0) + 1
redis.call('SET', lock, job .. '#' .. attempt, 'PX', ttl)
row = patch_row(ev, app, {state = 'active', startedAt = now, attempts = attempt})
return {'ok', meta, cjson.encode(row)}
