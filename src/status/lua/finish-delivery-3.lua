--[[
  Ends a delivery attempt: writes its outcome on the row and lets go of the user+app lock.

  KEYS[1] event hash
  KEYS[2] user+app lock
  KEYS[3] lock waiters

  ARGV[1] app id
  ARGV[2] the attempt's lock token (`<job id>#<attempt>`)
  ARGV[3] patch (JSON) for the row, applied only while the row is `active` in this very attempt
          (a stale attempt, e.g. of a worker that was paused, never overwrites a later one);
          '' = leave the row
  ARGV[4] 'release': delete the lock if this attempt holds it, and hand back its waiters to wake;
          'hold': leave it until its TTL ends (the attempt was cut off, and the target may still
          be applying it, so nothing for this user and app may start yet — not even a retry)
  ARGV[5] the attempt number

  Returns {row JSON or '', waiter job ids...}.
]]
--- @include "rows"

local row = ''
if ARGV[3] ~= '' then
  local raw = redis.call('HGET', KEYS[1], ARGV[1])
  local current = raw and cjson.decode(raw)
  if current and current.state == 'active' and tonumber(current.attempts) == tonumber(ARGV[5]) then
    row = cjson.encode(patch_row(KEYS[1], ARGV[1], cjson.decode(ARGV[3])))
  end
end
local out = {row}
if ARGV[4] == 'release' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  for _, waiter in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(out, waiter) end
  redis.call('DEL', KEYS[3])
end
return out
