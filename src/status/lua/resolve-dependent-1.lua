--[[
  Decides an app row that waits on others (`after:`) from the rows it waits on, in one step.
  It looks at a `waiting` row, and at a row `skipped` because a dependency was blocked
  (`blockedBy`) once that dependency has since succeeded (an operator retry of it): then
  - every dependency done, or skipped on its own (not because it was blocked) -> `scheduled`
  - a dependency failed, was superseded, or was skipped because it was blocked -> `skipped`,
    with `blockedBy` naming it (an operator retry that makes it succeed runs this row again)
  - otherwise (a dependency is still to run) -> `waiting`
  A dependency with no row (not assigned to this user) is ignored.

  KEYS[1] event hash
  ARGV[1] app id
  ARGV[2] now, epoch ms
  ARGV[3..] the app ids it waits on

  Returns the new row JSON when it changed, else false.
]]
--- @include "rows"

local function satisfied(dep)
  return dep.state == 'done' or (dep.state == 'skipped' and not dep.blockedBy)
end

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local row = cjson.decode(raw)
if row.state == 'skipped' and row.blockedBy then
  local blocker = redis.call('HGET', KEYS[1], row.blockedBy)
  if not blocker or not satisfied(cjson.decode(blocker)) then return false end
elseif row.state ~= 'waiting' then
  return false
end

local pending = false
for i = 3, #ARGV do
  local dep_raw = redis.call('HGET', KEYS[1], ARGV[i])
  if dep_raw then
    local dep = cjson.decode(dep_raw)
    local s = dep.state
    local reason = nil
    if s == 'failed' then reason = ARGV[i] .. ' failed'
    elseif s == 'superseded' then reason = ARGV[i] .. ' was superseded by ' .. tostring(dep.supersededBy)
    elseif s == 'skipped' and dep.blockedBy then reason = string.gsub(dep.lastError or (ARGV[i] .. ' was not run'), '^not run: ', '')
    elseif not satisfied(dep) then pending = true end
    if reason then
      if row.state == 'skipped' and row.blockedBy == ARGV[i] then return false end
      return cjson.encode(patch_row(KEYS[1], ARGV[1], {
        state = 'skipped', blockedBy = ARGV[i], lastError = 'not run: ' .. reason, finishedAt = tonumber(ARGV[2])
      }))
    end
  end
end
local cleared = {blockedBy = cjson.null, lastError = cjson.null, finishedAt = cjson.null}
if pending then
  if row.state == 'waiting' then return false end
  cleared.state = 'waiting'
else
  cleared.state = 'scheduled'
end
return cjson.encode(patch_row(KEYS[1], ARGV[1], cleared))
