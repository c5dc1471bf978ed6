--[[
  The gate every delivery attempt passes, in one step. In this order:
  1. the row is gone (event expired)                     -> 'gone'
  2. the row is no longer runnable (done, skipped, failed,
     superseded, waiting): never deliver it again         -> 'finished', meta, row
  3. a newer change exists for this user and app         -> 'superseded', meta, row (row written so)
  4. another change for this user and app is in flight   -> 'locked', meta, wait ms, holder
     (this job is added to the lock's waiters, woken when it is released)
  5. the app's rate limit has no room in this window     -> 'limited', meta, wait ms
     (the job gets its own slot in a later window and runs then without asking again)
  6. otherwise: take the lock, row -> active, count the attempt -> 'ok', meta, row

  KEYS[1] event hash
  KEYS[2] user hash            (app -> rank of the newest change)
  KEYS[3] user+app lock        (value: the delivery job id holding it)
  KEYS[4] lock waiters         (set of job ids)
  KEYS[5] rate state           (hash: w = window index being filled, n = slots taken in it)
  KEYS[6] rate reservations    (hash: job id -> window index)

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

local holder = redis.call('GET', lock)
if holder and holder ~= job then
  local left = math.max(redis.call('PTTL', lock), 50)
  redis.call('SADD', waiters, job)
  redis.call('PEXPIRE', waiters, left + 60000)
  return {'locked', meta, tostring(left), holder}
end

if max > 0 then
  local window = math.floor(now / per)
  local reserved = redis.call('HGET', resv, job)
  if reserved then
    reserved = tonumber(reserved)
    if reserved > window then return {'limited', meta, tostring(reserved * per - now)} end
    redis.call('HDEL', resv, job)
  else
    local w = tonumber(redis.call('HGET', rate, 'w') or '-1')
    local n = tonumber(redis.call('HGET', rate, 'n') or '0')
    if w < window then w, n = window, 0 end
    if n >= max then w, n = w + 1, 0 end
    n = n + 1
    redis.call('HSET', rate, 'w', w, 'n', n)
    redis.call('PEXPIRE', rate, (w + 2) * per - now)
    if w > window then
      redis.call('HSET', resv, job, w)
      redis.call('PEXPIRE', resv, (w + 2) * per - now)
      return {'limited', meta, tostring(w * per - now)}
    end
  end
end

redis.call('SET', lock, job, 'PX', ttl)
row = patch_row(ev, app, {state = 'active', startedAt = now, attempts = (row.attempts or 0) + 1})
return {'ok', meta, cjson.encode(row)}
