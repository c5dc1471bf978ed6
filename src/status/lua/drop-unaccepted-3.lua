--[[
  Drops an event that was recorded but never accepted: its caller was answered 503 ("nothing
  was accepted") because Redis failed or froze between the steps of ingest. Only once the last
  deadline it could have been accepted by has passed, and never an accepted or planned event.

  KEYS[1] event hash
  KEYS[2] vault entry
  KEYS[3] events not yet planned (zset)
  ARGV[1] event id

  Returns 1 when dropped, 0 when it was accepted (it is taken off the zset only once planned),
  or -1 when it may still be accepted.
]]
if redis.call('HEXISTS', KEYS[1], '_planned') == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
local by = redis.call('HGET', KEYS[1], '_acceptBy')
if not by then
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[1]) end
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now <= tonumber(by) then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
