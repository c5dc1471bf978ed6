--[[
  Parks the question "has every party caught up?" for one app row (kind `device`: the user's
  computers). Writes who must answer, keeping each answer already given as `done` (after an
  operator retry, a computer that synced is not asked again); a `failed` one is asked again.
  Parties no longer in the list are forgotten.

  KEYS[1] answers hash         (<prefix>:answers:<event id>:<app>; party -> JSON {label, state, note?, at?})
  KEYS[2] event hash           (the answers expire with it)

  ARGV[1] status retention, ms (used when the event hash has no TTL)
  ARGV[2..] pairs: party id, entry JSON (state `pending`, or `done` with its note)

  Returns the party ids left `pending`.
]]
local answers, ev = KEYS[1], KEYS[2]
local keep = {}
local pending = {}
for i = 2, #ARGV, 2 do
  local party, entry = ARGV[i], cjson.decode(ARGV[i + 1])
  keep[party] = true
  local raw = redis.call('HGET', answers, party)
  local old = raw and cjson.decode(raw)
  if not (old and old.state == 'done') then
    redis.call('HSET', answers, party, ARGV[i + 1])
    if entry.state == 'pending' then table.insert(pending, party) end
  end
end
for _, party in ipairs(redis.call('HKEYS', answers)) do
  if not keep[party] then redis.call('HDEL', answers, party) end
end
local ttl = redis.call('PTTL', ev)
if ttl <= 0 then ttl = tonumber(ARGV[1]) end
redis.call('PEXPIRE', answers, ttl)
return pending
