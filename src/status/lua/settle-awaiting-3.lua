--[[
  Records one party's answer for an `awaiting` row (see expect-answers) and decides the row, in
  one step. Run by whoever got an answer (the device routes) and by the delivery that parked the
  row, right after parking it (an answer may have come between the two), so no answer is missed.

  Answer: counts only while the party's entry is `pending` -> 'recorded'; the same answer again
  -> 'same' (a repeat, nothing changes); another answer after the first -> 'not_pending'; no
  such party -> 'unknown'; no answer given -> ''.

  Then, if the row is `awaiting`:
  - a newer change for this user and app exists -> `superseded` (as begin-delivery would)
  - a party answered `failed`                   -> `failed`, lastError = the failed notes
  - every party answered `done`                 -> `done`, detail = every note
  - otherwise it keeps waiting (unchanged)

  KEYS[1] event hash
  KEYS[2] answers hash
  KEYS[3] user hash            (app -> rank of the newest change)

  ARGV[1] app id
  ARGV[2] event id
  ARGV[3] now, epoch ms
  ARGV[4] party id, or '' (no answer: decide only)
  ARGV[5] answer JSON {state = 'done' | 'failed', note}, with ARGV[4]

  Returns {answer verdict, new row JSON or ''}.
]]
--- @include "rows"

local ev, answers, user = KEYS[1], KEYS[2], KEYS[3]
local app, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])

local verdict = ''
if ARGV[4] ~= '' then
  local raw = redis.call('HGET', answers, ARGV[4])
  if not raw then
    verdict = 'unknown'
  else
    local entry, answer = cjson.decode(raw), cjson.decode(ARGV[5])
    if entry.state == 'pending' then
      entry.state, entry.note, entry.at = answer.state, answer.note, now
      redis.call('HSET', answers, ARGV[4], cjson.encode(entry))
      verdict = 'recorded'
    elseif entry.state == answer.state then
      verdict = 'same'
    else
      verdict = 'not_pending'
    end
  end
end

local raw = redis.call('HGET', ev, app)
if not raw or cjson.decode(raw).state ~= 'awaiting' then return {verdict, ''} end

local latest = redis.call('HGET', user, app)
if latest then
  local _, _, newest = parse_rank(latest)
  if newest ~= id then
    local row = patch_row(ev, app, {state = 'superseded', supersededBy = newest, finishedAt = now})
    return {verdict, cjson.encode(row)}
  end
end

local failed, done, pending = {}, {}, false
local all = redis.call('HGETALL', answers)
for i = 1, #all, 2 do
  local entry = cjson.decode(all[i + 1])
  if entry.state == 'failed' then table.insert(failed, entry.note or entry.label)
  elseif entry.state == 'done' then table.insert(done, entry.note or entry.label)
  else pending = true end
end
-- HGETALL has no order: sort, so the same answers always read the same.
table.sort(failed)
table.sort(done)
local row
if #failed > 0 then
  row = patch_row(ev, app, {
    state = 'failed', finishedAt = now, lastError = table.concat(failed, '; '),
    detail = (#done > 0) and table.concat(done, '; ') or cjson.null
  })
elseif not pending then
  row = patch_row(ev, app, {state = 'done', finishedAt = now, lastError = cjson.null, detail = table.concat(done, '; ')})
end
return {verdict, row and cjson.encode(row) or ''}
