--[[
  Drops an event that was recorded but never accepted: its caller was answered 503 ("nothing
  was accepted") because Redis failed or froze between the steps of ingest. Only once the last
  deadline it could have been accepted by has passed, and never an accepted or planned event.

  KEYS[1] event hash
  KEYS[2] vault entry

  Returns 1 when dropped, 2 when planned, 0 when accepted (not yet planned), 3 when there is no
  such event, or -1 when it may still be accepted. The caller takes the id off the zset of events
  not yet planned (another slot) on 1, 2 and 3.
]]
if redis.call('HEXISTS', KEYS[1], '_planned') == 1 then return 2 end
local by = redis.call('HGET', KEYS[1], '_acceptBy')
if not by then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 3 end
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now <= tonumber(by) then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
