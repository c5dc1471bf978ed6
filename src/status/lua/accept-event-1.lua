--[[
  The last step of ingest: the event counts (is accepted) once its plan job is queued, if that
  happens before the caller's deadline. Without this step a Redis that froze between recording
  the event and queueing its plan would still run the queueing after the caller was answered 503.

  KEYS[1] event hash
  ARGV[1] deadline in epoch ms of the Redis clock

  Returns 'accepted' (also when it already was), 'expired' (too late: the planner or the janitor
  drops the event) or 'gone'.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
if redis.call('HEXISTS', KEYS[1], '_acceptBy') == 0 then return 'accepted' end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if now > tonumber(ARGV[1]) then return 'expired' end
redis.call('HDEL', KEYS[1], '_acceptBy')
return 'accepted'
