--[[
  Records a received event, and seals its credential in the same step.

  KEYS[1] event hash           (<prefix>:ev:<id>)
  KEYS[2] vault entry          (<prefix>:vault:<id>)
  KEYS[3] arrival sequence     (<prefix>:seq)

  ARGV[1] event meta (JSON)
  ARGV[2] sha256 of the body
  ARGV[3] status retention, ms
  ARGV[4] sealed credential, or ''
  ARGV[5] vault ttl, ms

  Returns 'created', 'same' (the same id and body again: nothing changes) or 'conflict' (the same
  id with another body). A repeat before the plan ran restores a missing credential; after
  planning a wiped credential stays wiped. A new event takes the next arrival number (`_seq`),
  which breaks ties between changes with the same occurredAt.
]]
local existing = redis.call('HGET', KEYS[1], '_meta')
if existing then
  if cjson.decode(existing).bodyHash ~= ARGV[2] then return 'conflict' end
  if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], '_planned') == 0 then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5], 'NX')
  end
  return 'same'
end
redis.call('HSET', KEYS[1], '_meta', ARGV[1], '_seq', redis.call('INCR', KEYS[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 'created'
