--[[
  Patches one app row, only when its state is one of a list.

  KEYS[1] event hash
  ARGV[1] app id
  ARGV[2] allowed current states, comma-separated ('' = any)
  ARGV[3] patch (JSON object; null deletes a key)

  Returns the new row JSON, or false (no such row, or in another state).
]]
--- @include "rows"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
if ARGV[2] ~= '' and not state_in(cjson.decode(raw).state, ARGV[2]) then return false end
return cjson.encode(patch_row(KEYS[1], ARGV[1], cjson.decode(ARGV[3])))
