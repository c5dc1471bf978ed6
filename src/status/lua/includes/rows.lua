-- Shared by the app-row scripts. An app row is one JSON value in the event hash, keyed by app id.
-- Rows hold no arrays (cjson would turn an empty one into an object), so decode/encode is safe.

-- Read-merge-write of one row; a JSON null in the patch deletes that key. Returns the new row or nil.
local function patch_row(key, field, patch)
  local raw = redis.call('HGET', key, field)
  if not raw then return nil end
  local row = cjson.decode(raw)
  for k, v in pairs(patch) do
    if v == cjson.null then row[k] = nil else row[k] = v end
  end
  redis.call('HSET', key, field, cjson.encode(row))
  return row
end

-- Whether state is one of a comma-separated list.
local function state_in(state, list)
  for s in string.gmatch(list, '[^,]+') do if s == state then return true end end
  return false
end

-- A change's position in a user's history: "occurredAt|seq|eventId" (seq = arrival order at
-- ingest). Values written before seq existed ("occurredAt|eventId") read with seq 0.
local function parse_rank(value)
  local at, rest = string.match(value, '^([^|]*)|(.*)$')
  local seq, id = string.match(rest, '^(%d+)|(.*)$')
  if not seq then return tonumber(at), 0, rest end
  return tonumber(at), tonumber(seq), id
end

-- Whether rank a is newer than rank b: later occurredAt, then later arrival, then larger id.
local function newer(a_at, a_seq, a_id, b_at, b_seq, b_id)
  if a_at ~= b_at then return a_at > b_at end
  if a_seq ~= b_seq then return a_seq > b_seq end
  return a_id > b_id
end
