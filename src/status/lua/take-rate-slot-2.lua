--[[
  An app's rate limit: gives a delivery its own slot. A window (named by its start in epoch ms)
  admits `max`; a delivery takes a slot in the current window if it has room, else reserves one
  in the first later window with room and sleeps until then, running on it without asking
  again. A reservation whose window has passed (the workers were busy) is given up for a fresh
  slot, so no window ever admits more than `max`. Each delivery so asks at most twice, however
  many wait: nothing wakes the waiting ones at each window's edge.

  The app's own hash slot (shared by every user), taken before the user's gate
  (`begin-delivery`); a slot the gate then does not use goes back with `give-back-rate-slot`.

  KEYS[1] rate state           (hash: w = start (epoch ms) of the window being filled, n = slots taken in it)
  KEYS[2] rate reservations    (hash: job id -> start of its window; the row's dueAt says it too)

  ARGV[1] job id
  ARGV[2] now, epoch ms
  ARGV[3] max per window
  ARGV[4] window, ms

  Returns {'ok', window start} or {'limited', ms to wait, window start}.
]]
local rate, resv = KEYS[1], KEYS[2]
local job, now, max, per = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- Windows are named by their start (epoch ms), so a changed `per` never reads an old index.
local window = now - (now % per)
local reserved = tonumber(redis.call('HGET', resv, job))
if reserved and reserved > now then
  return {'limited', tostring(reserved - now), tostring(reserved)}
end
if reserved then redis.call('HDEL', resv, job) end
if reserved == window then return {'ok', tostring(window)} end
local w = tonumber(redis.call('HGET', rate, 'w') or '0')
local n = tonumber(redis.call('HGET', rate, 'n') or '0')
if w < window or w % per ~= 0 then w, n = window, 0 end
if n >= max then w, n = w + per, 0 end
n = n + 1
redis.call('HSET', rate, 'w', w, 'n', n)
redis.call('PEXPIRE', rate, w + 2 * per - now)
if w > window then
  redis.call('HSET', resv, job, w)
  redis.call('PEXPIRE', resv, w + 2 * per - now)
  return {'limited', tostring(w - now), tostring(w)}
end
return {'ok', tostring(window)}
