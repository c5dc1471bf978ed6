import type { Redis } from 'ioredis';
import type { EventMeta } from '../events/event.js';
import type { AppRow, AppState } from './model.js';

/** Lua shared by the scripts below: read-merge-write of one app row (JSON null in a patch deletes a key). */
const PRELUDE = `
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
local function state_in(state, list)
  for s in string.gmatch(list, '[^,]+') do if s == state then return true end end
  return false
end
`;

/**
 * Creates the event record unless it exists, and seals its credential in the same step:
 * returns created | same | conflict. KEYS: event, vault entry. ARGV: meta, body hash, retention,
 * sealed credential or '', vault ttl. A retry of an event whose plan has not run yet restores a
 * missing credential; after planning, a wiped credential stays wiped.
 */
const CREATE_EVENT = `
local existing = redis.call('HGET', KEYS[1], '_meta')
if existing then
  local meta = cjson.decode(existing)
  if meta.bodyHash ~= ARGV[2] then return 'conflict' end
  if ARGV[4] ~= '' and not meta.planned then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5], 'NX') end
  return 'same'
end
redis.call('HSET', KEYS[1], '_meta', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 'created'
`;

/**
 * Per user and app, remembers the newest change (by occurredAt, then id). For each app returns
 * "new:<previous event id or empty>" when this event is now the newest, or "old:<newer id>".
 */
const CLAIM_LATEST = `
local result = {}
local mine = tonumber(ARGV[2])
for i = 4, #ARGV do
  local app = ARGV[i]
  local cur = redis.call('HGET', KEYS[1], app)
  local take = true
  local prev = ''
  if cur then
    local sep = string.find(cur, '|', 1, true)
    local at = tonumber(string.sub(cur, 1, sep - 1))
    local id = string.sub(cur, sep + 1)
    if id == ARGV[1] then take = true
    elseif at > mine or (at == mine and id > ARGV[1]) then take = false; prev = id
    else prev = id end
  end
  if take then
    redis.call('HSET', KEYS[1], app, ARGV[2] .. '|' .. ARGV[1])
    if prev ~= '' and prev ~= ARGV[1] then table.insert(result, 'new:' .. prev) else table.insert(result, 'new:') end
  else
    table.insert(result, 'old:' .. prev)
  end
end
local latest = redis.call('HGET', KEYS[1], '_latest')
local newest = true
if latest then
  local sep = string.find(latest, '|', 1, true)
  local at = tonumber(string.sub(latest, 1, sep - 1))
  if at > mine or (at == mine and string.sub(latest, sep + 1) > ARGV[1]) then newest = false end
end
if newest then redis.call('HSET', KEYS[1], '_latest', ARGV[2] .. '|' .. ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return result
`;

/** Sets each app row only if absent (a re-run of the planner changes nothing), then marks the event planned. */
const WRITE_PLAN = `
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
local meta = cjson.decode(redis.call('HGET', KEYS[1], '_meta'))
meta.planned = true
if ARGV[1] ~= '' then meta.supersededBy = ARGV[1] end
redis.call('HSET', KEYS[1], '_meta', cjson.encode(meta))
return 1
`;

/** Patches a row only when its state is one of ARGV[2] (comma list); returns the new row JSON or false. */
const PATCH_IF = `${PRELUDE}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
if ARGV[2] ~= '' and not state_in(cjson.decode(raw).state, ARGV[2]) then return false end
return cjson.encode(patch_row(KEYS[1], ARGV[1], cjson.decode(ARGV[3])))
`;

/**
 * The gate every delivery passes. KEYS: event, user, lock, rate counter. ARGV: app, event id,
 * job id, lock ttl, now, rate max, rate window. Returns {verdict, meta, row|wait}.
 * In one step: superseded? rate-limited? another change for this user+app in flight? else active,
 * counting the attempt (the row, not BullMQ, is the one record of attempts).
 */
const BEGIN = `${PRELUDE}
local meta = redis.call('HGET', KEYS[1], '_meta')
if not meta then return {'gone'} end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'gone'} end
local row = cjson.decode(raw)
if row.state == 'superseded' then return {'superseded', meta, raw} end
local latest = redis.call('HGET', KEYS[2], ARGV[1])
if latest then
  local id = string.sub(latest, string.find(latest, '|', 1, true) + 1)
  if id ~= ARGV[2] then
    local now = tonumber(ARGV[5])
    row = patch_row(KEYS[1], ARGV[1], {state = 'superseded', supersededBy = id, finishedAt = now})
    return {'superseded', meta, cjson.encode(row)}
  end
end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[3] then
  return {'locked', meta, tostring(math.max(redis.call('PTTL', KEYS[3]), 50))}
end
local max = tonumber(ARGV[6])
if max > 0 then
  local per = tonumber(ARGV[7])
  local now = tonumber(ARGV[5])
  local window = math.floor(now / per)
  local counter = KEYS[4] .. ':' .. window
  local n = redis.call('INCR', counter)
  if n == 1 then redis.call('PEXPIRE', counter, per * 2) end
  if n > max then return {'limited', meta, tostring((window + 1) * per - now)} end
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
row = patch_row(KEYS[1], ARGV[1], {state = 'active', startedAt = tonumber(ARGV[5]), attempts = (row.attempts or 0) + 1})
return {'ok', meta, cjson.encode(row)}
`;

/** Patches the row and releases the user+app lock if this job holds it. KEYS: event, lock. */
const FINISH = `${PRELUDE}
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
local row = patch_row(KEYS[1], ARGV[1], cjson.decode(ARGV[3]))
if not row then return false end
return cjson.encode(row)
`;

/**
 * Moves a waiting (or dependency-blocked) app to scheduled once every dependency is done or
 * skipped. ARGV: app, dependency apps... Returns the row JSON when released, else false.
 */
const RELEASE = `${PRELUDE}
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local row = cjson.decode(raw)
if row.state ~= 'waiting' and not (row.state == 'skipped' and row.blockedBy) then return false end
for i = 2, #ARGV do
  local dep = redis.call('HGET', KEYS[1], ARGV[i])
  if dep then
    local s = cjson.decode(dep).state
    if s ~= 'done' and s ~= 'skipped' then return false end
  end
end
row = patch_row(KEYS[1], ARGV[1], {state = 'scheduled', blockedBy = cjson.null, lastError = cjson.null, finishedAt = cjson.null})
return cjson.encode(row)
`;

type Ok = string | null;

interface Scripts {
  rippleCreateEvent(
    key: string,
    vaultKey: string,
    meta: string,
    hash: string,
    ttl: number,
    sealed: string,
    vaultTtl: number,
  ): Promise<'created' | 'same' | 'conflict'>;
  rippleClaimLatest(key: string, id: string, at: number, ttl: number, ...apps: string[]): Promise<string[]>;
  rippleWritePlan(key: string, supersededBy: string, ...fieldsAndRows: string[]): Promise<number>;
  ripplePatchIf(key: string, app: string, states: string, patch: string): Promise<Ok>;
  rippleBegin(
    event: string,
    user: string,
    lock: string,
    rate: string,
    ...args: (string | number)[]
  ): Promise<[string, string?, string?]>;
  rippleFinish(event: string, lock: string, app: string, jobId: string, patch: string): Promise<Ok>;
  rippleRelease(event: string, app: string, ...deps: string[]): Promise<Ok>;
}

export type BeginVerdict =
  | { verdict: 'ok'; meta: EventMeta; row: AppRow }
  | { verdict: 'superseded'; meta: EventMeta; row: AppRow }
  | { verdict: 'locked' | 'limited'; meta: EventMeta; waitMs: number }
  | { verdict: 'gone' };

export interface ClaimResult {
  app: string;
  /** This event is newer: the previous newest event for this app, to supersede. */
  supersedes?: string;
  /** This event is older than one already seen for this app. */
  supersededBy?: string;
}

/** Patch values: undefined leaves a key, null deletes it. */
export type RowPatch = { [K in keyof AppRow]?: AppRow[K] | null };

/**
 * Event status in Redis: one hash per event (`_meta` plus one JSON row per app) and one
 * hash per user (newest change per app). All transitions that race go through Lua.
 */
export class StatusStore {
  private readonly redis: Redis & Scripts;

  constructor(
    redis: Redis,
    readonly prefix: string,
    private readonly retentionMs: number,
  ) {
    const r = redis as Redis & Scripts;
    if (typeof r.rippleBegin !== 'function') {
      redis.defineCommand('rippleCreateEvent', { numberOfKeys: 2, lua: CREATE_EVENT });
      redis.defineCommand('rippleClaimLatest', { numberOfKeys: 1, lua: CLAIM_LATEST });
      redis.defineCommand('rippleWritePlan', { numberOfKeys: 1, lua: WRITE_PLAN });
      redis.defineCommand('ripplePatchIf', { numberOfKeys: 1, lua: PATCH_IF });
      redis.defineCommand('rippleBegin', { numberOfKeys: 4, lua: BEGIN });
      redis.defineCommand('rippleFinish', { numberOfKeys: 2, lua: FINISH });
      redis.defineCommand('rippleRelease', { numberOfKeys: 1, lua: RELEASE });
    }
    this.redis = r;
  }

  eventKey(id: string): string {
    return `${this.prefix}:ev:${id}`;
  }
  /** Usernames compare case-insensitively, as directories do (and as the session registry does). */
  userKey(username: string): string {
    return `${this.prefix}:user:${username.toLowerCase()}`;
  }
  lockKey(app: string, username: string): string {
    return `${this.prefix}:lock:${app}:${username.toLowerCase()}`;
  }
  rateKey(app: string): string {
    return `${this.prefix}:rate:${app}`;
  }

  /** Records the event and, atomically with it, its sealed credential (see Vault.sealFor). */
  createEvent(
    meta: EventMeta,
    credential: { key: string; sealed: string; ttlMs: number } | undefined,
  ): Promise<'created' | 'same' | 'conflict'> {
    return this.redis.rippleCreateEvent(
      this.eventKey(meta.id),
      credential?.key ?? `${this.prefix}:vault:${meta.id}`,
      JSON.stringify(meta),
      meta.bodyHash,
      this.retentionMs,
      credential?.sealed ?? '',
      Math.round(credential?.ttlMs ?? 0),
    );
  }

  async getEvent(id: string): Promise<{ meta: EventMeta; rows: Record<string, AppRow> } | undefined> {
    const all = await this.redis.hgetall(this.eventKey(id));
    if (!all._meta) return undefined;
    const { _meta, ...rest } = all;
    const rows: Record<string, AppRow> = {};
    for (const [app, raw] of Object.entries(rest)) rows[app] = JSON.parse(raw) as AppRow;
    return { meta: JSON.parse(_meta) as EventMeta, rows };
  }

  async getRow(eventId: string, app: string): Promise<AppRow | undefined> {
    const raw = await this.redis.hget(this.eventKey(eventId), app);
    return raw ? (JSON.parse(raw) as AppRow) : undefined;
  }

  async claimLatest(username: string, eventId: string, occurredAtMs: number, apps: string[]): Promise<ClaimResult[]> {
    const out = await this.redis.rippleClaimLatest(
      this.userKey(username),
      eventId,
      occurredAtMs,
      this.retentionMs,
      ...apps,
    );
    return apps.map((app, i) => {
      const [kind, other] = (out[i] ?? 'new:').split(':', 2) as [string, string];
      if (kind === 'old') return { app, supersededBy: other };
      return other ? { app, supersedes: other } : { app };
    });
  }

  /** The newest change per app for a user: app → event id. */
  async latestForUser(username: string): Promise<{ latest?: string; apps: Record<string, string> }> {
    const all = await this.redis.hgetall(this.userKey(username));
    const id = (v: string) => v.slice(v.indexOf('|') + 1);
    const { _latest, ...apps } = all;
    return {
      ...(_latest ? { latest: id(_latest) } : {}),
      apps: Object.fromEntries(Object.entries(apps).map(([a, v]) => [a, id(v)])),
    };
  }

  async writePlan(eventId: string, rows: Record<string, AppRow>, supersededBy?: string): Promise<void> {
    const args = Object.entries(rows).flatMap(([app, row]) => [app, JSON.stringify(row)]);
    await this.redis.rippleWritePlan(this.eventKey(eventId), supersededBy ?? '', ...args);
  }

  /** Patches a row if it is in one of `fromStates` (any state when empty); returns the new row or undefined. */
  async patchIf(eventId: string, app: string, fromStates: AppState[], patch: RowPatch): Promise<AppRow | undefined> {
    const out = await this.redis.ripplePatchIf(
      this.eventKey(eventId),
      app,
      fromStates.join(','),
      JSON.stringify(patch),
    );
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }

  async begin(args: {
    eventId: string;
    app: string;
    username: string;
    jobId: string;
    lockTtlMs: number;
    now: number;
    rateLimit?: { max: number; per: number } | undefined;
  }): Promise<BeginVerdict> {
    const [verdict, meta, third] = await this.redis.rippleBegin(
      this.eventKey(args.eventId),
      this.userKey(args.username),
      this.lockKey(args.app, args.username),
      this.rateKey(args.app),
      args.app,
      args.eventId,
      args.jobId,
      Math.round(args.lockTtlMs),
      args.now,
      args.rateLimit?.max ?? 0,
      args.rateLimit?.per ?? 0,
    );
    if (verdict === 'gone' || !meta || !third) return { verdict: 'gone' };
    const parsed = JSON.parse(meta) as EventMeta;
    if (verdict === 'locked' || verdict === 'limited') return { verdict, meta: parsed, waitMs: Number(third) };
    return { verdict: verdict as 'ok' | 'superseded', meta: parsed, row: JSON.parse(third) as AppRow };
  }

  async finish(
    eventId: string,
    app: string,
    username: string,
    jobId: string,
    patch: RowPatch,
  ): Promise<AppRow | undefined> {
    const out = await this.redis.rippleFinish(
      this.eventKey(eventId),
      this.lockKey(app, username),
      app,
      jobId,
      JSON.stringify(patch),
    );
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }

  async release(eventId: string, app: string, deps: string[]): Promise<AppRow | undefined> {
    const out = await this.redis.rippleRelease(this.eventKey(eventId), app, ...deps);
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }
}
