--[[
  Records a received event, and seals its credential in the same step.

  KEYS[1] event hash            (<prefix>:{u:<user>}:ev:<id>)
  KEYS[2] vault entry           (<prefix>:vault:{u:<user>}:<id>)
  KEYS[3] the user's arrival sequence (<prefix>:{u:<user>}:seq): ranks compare within one user only

  The caller has put the id in `<prefix>:unplanned` (zset; another slot) before this step, so an
  event recorded here but never accepted is always found by the janitor.

  ARGV[1] event meta (JSON)
  ARGV[2] sha256 of the body
  ARGV[3] status retention, ms
  ARGV[4] sealed credential, or ''
  ARGV[5] vault ttl, ms
  ARGV[6] deadline in epoch ms of the Redis clock, or '': the request's caller gives up then.
          The event is then recorded as not yet accepted (`_acceptBy`): `accept-event` makes it
          count once its plan job is queued, before that deadline; the planner waits for that,
          and drops it if the deadline passes first.

  Returns:
  - 'created'
  - 'same': the same id and body again; nothing changes, except that a repeat before the plan
    ran restores a missing credential (after planning a wiped credential stays wiped)
  - 'conflict': the same id with another body
  - 'expired': run after the deadline (by a Redis that was frozen or very slow): nothing is
    written, since the caller was already told that nothing was accepted
  A new event takes the next arrival number (`_seq`), which breaks ties between changes with
  the same occurredAt.
]]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if ARGV[6] ~= '' and now > tonumber(ARGV[6]) then return 'expired' end
local existing = redis.call('HGET', KEYS[1], '_meta')
if existing then
  if cjson.decode(existing).bodyHash ~= ARGV[2] then return 'conflict' end
  if redis.call('HEXISTS', KEYS[1], '_planned') == 0 then
    if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5], 'NX') end
    -- Not accepted yet: this retry gets its own chance to be.
    if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], '_acceptBy') == 1 then
      redis.call('HSET', KEYS[1], '_acceptBy', ARGV[6])
    end
  end
  return 'same'
end
redis.call('HSET', KEYS[1], '_meta', ARGV[1], '_seq', redis.call('INCR', KEYS[3]))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], '_acceptBy', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 'created'
