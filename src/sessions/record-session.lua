--[[
  Records a session, or updates the entry already recorded for the same OIDC sid or SAML
  SessionIndex of the same user at the same app, so that one session is one entry whatever
  how often, or how concurrently, the IdP records it.

  KEYS[1]  the user's index at the app (sorted set of session ids by createdAt)
  ARGV[1]  prefix of entry keys (`<prefix>:{u:<user>}:session:`): entry = ARGV[1] .. id, in the
           index's hash slot (the user's tag), as a script on Redis Cluster may only touch its own slot
  ARGV[2]  id for a new entry
  ARGV[3]  the record as JSON, without `id`
  ARGV[4]  createdAt, ms (the index score)
  ARGV[5]  time to live, ms
  ARGV[6]  sid, or '' for none
  ARGV[7]  sessionIndex, or '' for none
  ARGV[8]  '1' when this record brings a refresh token

  Returns { id, created (1|0), the stored record as JSON }, or { 'conflict', sidId, indexId } when
  the sid and the sessionIndex are recorded in two different entries.
]]
local sid, sessionIndex = ARGV[6], ARGV[7]
local sidMatch, indexMatch, previous
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if not raw then
    redis.call('ZREM', KEYS[1], id) -- expired
  else
    local entry = cjson.decode(raw)
    if sid ~= '' and entry.sid == sid then sidMatch = id; previous = previous or entry end
    if sessionIndex ~= '' and entry.sessionIndex == sessionIndex then indexMatch = id; previous = previous or entry end
  end
end
if sidMatch and indexMatch and sidMatch ~= indexMatch then
  return { 'conflict', sidMatch, indexMatch }
end

local id = sidMatch or indexMatch or ARGV[2]
local record = cjson.decode(ARGV[3])
record.id = id
-- A refresh token recorded earlier stays (it may still be valid) unless this record brings a new one.
local hasRefreshToken = ARGV[8] == '1' or (previous ~= nil and previous.hasRefreshToken == true)
record.hasRefreshToken = hasRefreshToken
if previous ~= nil then
  for _, field in ipairs({ 'sid', 'sessionIndex', 'nameId' }) do
    if record[field] == nil then record[field] = previous[field] end
  end
end

local ttl = tonumber(ARGV[5])
local json = cjson.encode(record)
redis.call('SET', ARGV[1] .. id, json, 'PX', ttl)
redis.call('ZADD', KEYS[1], ARGV[4], id)
-- The index lives as long as its longest entry.
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return { id, previous == nil and 1 or 0, json }
