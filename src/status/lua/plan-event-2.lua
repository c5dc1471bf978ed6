--[[
  Plans an event in one step: for each app, claims "newest change for this user and app" or
  finds a newer one, and writes the app's row accordingly. Nothing is half-planned: a crash
  before this step leaves the event unplanned, after it leaves everything needed to finish
  (the `_supersedes` list says which older rows to supersede; doing that again is harmless).

  KEYS[1] event hash
  KEYS[2] user hash            (<prefix>:{u:<user>}:user:<username as compared>; app -> rank, _latest -> rank)
  (the caller then takes the id off the zset of events not yet planned, in another slot)

  ARGV[1] event id
  ARGV[2] occurredAt, epoch ms
  ARGV[3] status retention, ms
  ARGV[4] now, epoch ms
  ARGV[5..] pairs: app id, row JSON (state scheduled or waiting; or skipped, which claims nothing)

  Returns a flat list: app, 'new' | 'old' | 'skip', the other event id ('' when none).
  - new: this event is now the newest for the app; the other (older) event's row is to be superseded.
  - old: a newer event exists for the app; this event's row is written `superseded` by it.
  A second run (the event is already planned) changes nothing and returns the recorded claims.
]]
--- @include "rows"

local ev, user = KEYS[1], KEYS[2]
local id, at = ARGV[1], tonumber(ARGV[2])
local seq = tonumber(redis.call('HGET', ev, '_seq') or '0')
local mine = ARGV[2] .. '|' .. seq .. '|' .. id
local out = {}

if redis.call('HEXISTS', ev, '_planned') == 1 then
  local supersedes = cjson.decode(redis.call('HGET', ev, '_supersedes') or '{}')
  for app, other in pairs(supersedes) do
    table.insert(out, app); table.insert(out, 'new'); table.insert(out, other)
  end
  return out
end

local supersedes = {}
local superseded_by = nil
-- Apps this event claimed when it was recorded (see create-event): the older event it displaced.
local claimed = cjson.decode(redis.call('HGET', ev, '_claimed') or '{}')
for i = 5, #ARGV, 2 do
  local app, row = ARGV[i], cjson.decode(ARGV[i + 1])
  if row.state == 'skipped' then
    -- Nothing for this change to do at the app (a credential app, and a change that carries no
    -- password): it claims nothing, so an older change's pending work there still goes ahead.
    redis.call('HSETNX', ev, app, ARGV[i + 1])
    table.insert(out, app); table.insert(out, 'skip'); table.insert(out, '')
  else
  local cur = redis.call('HGET', user, app)
  local claim, other = 'new', ''
  if cur then
    local c_at, c_seq, c_id = parse_rank(cur)
    if c_id ~= id then
      if newer(c_at, c_seq, c_id, at, seq, id) then claim, other = 'old', c_id else other = c_id end
    elseif claimed[app] then
      other = claimed[app]
    end
  end
  if claim == 'new' then
    redis.call('HSET', user, app, mine)
    if other ~= '' then supersedes[app] = other end
  else
    row.state = 'superseded'
    row.supersededBy = other
    row.finishedAt = tonumber(ARGV[4])
    superseded_by = other
  end
  redis.call('HSETNX', ev, app, cjson.encode(row))
  table.insert(out, app); table.insert(out, claim); table.insert(out, other)
  end
end

local latest = redis.call('HGET', user, '_latest')
local l_newest = true
if latest then
  local l_at, l_seq, l_id = parse_rank(latest)
  if l_id ~= id and newer(l_at, l_seq, l_id, at, seq, id) then l_newest = false end
end
if l_newest then redis.call('HSET', user, '_latest', mine) end
redis.call('PEXPIRE', user, ARGV[3])

redis.call('HSET', ev, '_planned', '1')
if next(supersedes) then redis.call('HSET', ev, '_supersedes', cjson.encode(supersedes)) end
if superseded_by then redis.call('HSET', ev, '_supersededBy', superseded_by) end
return out
