--[[
  Decides a `waiting` app row from the rows it waits on (`after:`), in one step:
  - every dependency done, or skipped on its own (not because it was blocked) -> `scheduled`
  - a dependency failed, was superseded, or was skipped because it was blocked -> `skipped`,
    with `blockedBy` naming it (an operator retry that makes it succeed runs this row again)
  - otherwise (a dependency is still to run) -> stays `waiting`
  A dependency with no row (not assigned to this user) is ignored.

  KEYS[1] event hash
  ARGV[1] app id
  ARGV[2] now, epoch ms
  ARGV[3..] the app ids it waits on

  Returns the new row JSON when it changed, else false.
]]
--- @include "rows"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or cjson.decode(raw).state ~= 'waiting' then return false end
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
    elseif s ~= 'done' and s ~= 'skipped' then pending = true end
    if reason then
      return cjson.encode(patch_row(KEYS[1], ARGV[1], {
        state = 'skipped', blockedBy = ARGV[i], lastError = 'not run: ' .. reason, finishedAt = tonumber(ARGV[2])
      }))
    end
  end
end
if pending then return false end
return cjson.encode(patch_row(KEYS[1], ARGV[1], {
  state = 'scheduled', blockedBy = cjson.null, lastError = cjson.null, finishedAt = cjson.null
}))
