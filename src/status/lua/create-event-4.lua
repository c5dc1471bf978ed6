--[[
  Records a received event, and seals its credential in the same step.

  KEYS[1] event hash            (<prefix>:{u:<user>}:ev:<id>)
  KEYS[2] vault entry           (<prefix>:vault:{u:<user>}:<id>)
  KEYS[3] the user's arrival sequence (<prefix>:{u:<user>}:seq): ranks compare within one user only
  KEYS[4] user hash              (app -> rank of the newest change; see plan-event)

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
  ARGV[7] occurredAt, epoch ms
  ARGV[8..] the apps the input already changed itself (`alreadyDone`, e.g. the directory a user
          changed their own password in): a new event claims "newest change for this user and
          app" for them NOW, not when planned, so that an older change's delivery to that app
          finds itself superseded even while the planner is down (it must never land after the
          change the app already has). The older event it displaces is kept in `_claimed`
          (app -> id) for plan-event to supersede. A newer change already there is left alone.
          An event dropped later as never accepted keeps its claim: the app has that change
          all the same (the input made it), so an older one must still not land there.

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
--- @include "rows"

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
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], '_meta', ARGV[1], '_seq', seq)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], '_acceptBy', ARGV[6]) end
if #ARGV >= 8 then
  local at = tonumber(ARGV[7])
  local id = cjson.decode(ARGV[1]).id
  local claimed = {}
  for i = 8, #ARGV do
    local app = ARGV[i]
    local cur = redis.call('HGET', KEYS[4], app)
    local other = ''
    local mine_newer = true
    if cur then
      local c_at, c_seq, c_id = parse_rank(cur)
      if newer(c_at, c_seq, c_id, at, seq, id) then mine_newer = false else other = c_id end
    end
    if mine_newer then
      redis.call('HSET', KEYS[4], app, ARGV[7] .. '|' .. seq .. '|' .. id)
      claimed[app] = other
    end
  end
  if next(claimed) then redis.call('HSET', KEYS[1], '_claimed', cjson.encode(claimed)) end
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 'created'
