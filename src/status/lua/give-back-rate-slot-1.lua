--[[
  Returns a rate-limit slot that `take-rate-slot` gave but the user's gate did not use (the row
  was gone, finished, superseded or locked), so that a blocked delivery does not spend the
  app's throughput. Only while its window is still the one being filled: a slot in a window
  already full and passed over stays spent (that errs towards fewer deliveries, never more).

  KEYS[1] rate state (see take-rate-slot)
  ARGV[1] start of the slot's window, epoch ms

  Returns 1 when given back, else 0.
]]
if redis.call('HGET', KEYS[1], 'w') ~= ARGV[1] then return 0 end
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'n', n - 1)
return 1
