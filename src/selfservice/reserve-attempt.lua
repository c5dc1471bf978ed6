--[[
  Takes one attempt from a lockout counter, or says how long it is locked.
  KEYS[1] the counter (per username, or per client address)
  ARGV[1] maxFailures   ARGV[2] window, ms
  Returns 0 when the attempt may go ahead (it counts as a failure until refunded), else the ms
  until the lockout ends. The window starts with the first failure and is not extended.
]]
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return left end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(ARGV[2])
end
redis.call('INCR', KEYS[1])
if n == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
