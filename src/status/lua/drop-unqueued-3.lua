--[[
  Drops an event that was recorded but never queued for planning: Redis failed (or froze)
  between the two steps of ingest, so its caller was answered 503 and told nothing was
  accepted. Only if it is still listed as not queued and was not planned meanwhile.

  KEYS[1] event hash
  KEYS[2] vault entry
  KEYS[3] events not yet queued (zset)
  ARGV[1] event id
  ARGV[2] recorded no later than this (epoch ms, Redis clock): a repeat of the request since
          then moved it later, and it may be queued right now

  Returns 1 when dropped, else 0.
]]
local at = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not at or tonumber(at) > tonumber(ARGV[2]) then return 0 end
if redis.call('HEXISTS', KEYS[1], '_planned') == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
