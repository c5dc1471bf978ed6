--[[
  Gives back an attempt taken by reserve-attempt that did not fail (the password was right).
  KEYS[1] the counter. Never below 0, and a counter that expired meanwhile stays gone.
]]
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n
