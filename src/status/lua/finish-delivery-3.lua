--[[
  Ends a delivery attempt: writes its outcome on the row and lets go of the user+app lock.

  KEYS[1] event hash
  KEYS[2] user+app lock
  KEYS[3] lock waiters

  ARGV[1] app id
  ARGV[2] job id
  ARGV[3] patch (JSON) for the row, applied only while it is `active`; '' = leave the row
  ARGV[4] 'release': delete the lock if this job holds it, and hand back its waiters to wake;
          'hold': keep it until its TTL, marked `<job>:held` so that not even this job's own
          retry takes it over (the attempt was cut off and the target may still be applying
          it, so nothing for this user and app may start yet)

  Returns {row JSON or '', waiter job ids...}.
]]
--- @include "rows"

local row = ''
if ARGV[3] ~= '' then
  local raw = redis.call('HGET', KEYS[1], ARGV[1])
  if raw and cjson.decode(raw).state == 'active' then
    row = cjson.encode(patch_row(KEYS[1], ARGV[1], cjson.decode(ARGV[3])))
  end
end
local out = {row}
local holder = redis.call('GET', KEYS[2])
if ARGV[4] == 'hold' and holder == ARGV[2] then
  redis.call('SET', KEYS[2], ARGV[2] .. ':held', 'KEEPTTL')
elseif ARGV[4] == 'release' and holder == ARGV[2] then
  redis.call('DEL', KEYS[2])
  for _, waiter in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(out, waiter) end
  redis.call('DEL', KEYS[3])
end
return out
