import type { Redis } from 'ioredis';
import { type EventMeta, sameUserKey } from '../events/event.js';
import { isCluster } from '../redis/connections.js';
import { userTag } from '../redis/keys.js';
import type { AppRow, AppState } from './model.js';
import { SCRIPTS } from './scripts.js';

type Args = (string | number)[];
/** The ioredis commands defined from `lua/*.lua`: `begin-delivery` → `rippleBeginDelivery(...keys, ...argv)`. */
type Scripts = Record<string, (...args: Args) => Promise<unknown>>;

const commandName = (script: string) =>
  `ripple${script.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase())}`;

/** Which step of the delivery gate ran: the app's rate limit, or the user's gate. */
export type GateStep = 'rate' | 'user';

/** How long a remembered event id → user tag is trusted before it is read again (an id may be reused after `status.retention`). */
const TAG_CACHE_MS = 10 * 60_000;
const TAG_CACHE_SIZE = 50_000;

export type BeginVerdict =
  | { verdict: 'ok'; meta: EventMeta; row: AppRow }
  | { verdict: 'superseded' | 'finished'; meta: EventMeta; row: AppRow }
  | { verdict: 'locked'; meta: EventMeta; waitMs: number; holder: string }
  | { verdict: 'limited'; waitMs: number }
  | { verdict: 'gone' };

export interface ClaimResult {
  app: string;
  /** This event is newer: the previous newest event for this app, whose row is to be superseded. */
  supersedes?: string;
  /** This event is older than one already seen for this app (its row was written superseded). */
  supersededBy?: string;
}

/** Patch values: undefined leaves a key, null deletes it. */
export type RowPatch = { [K in keyof AppRow]?: AppRow[K] | null };

export interface StoredEvent {
  meta: EventMeta;
  rows: Record<string, AppRow>;
}

/**
 * Event status in Redis: one hash per event (`_meta`, bookkeeping fields starting with `_`, and
 * one JSON row per app), one hash per user (the newest change per app), and per user+app a lock
 * held by the delivery in flight. Every transition that races is one script in `lua/` (see
 * `lua/README.md` for the state machine of an app row).
 *
 * Key layout (README "Redis topologies"): everything about one user carries the user's hash tag
 * (`userTag`), so each script touches one slot; `<prefix>:evu:<event id>` says which user tag an
 * event id has (for callers that know only the id: the status API, operator retry, the
 * janitor); an app's rate limit is its own slot; `<prefix>:unplanned` is one key.
 */
export class StatusStore {
  private readonly redis: Redis;
  /** Event id → user tag, as learnt here (ingest, a delivery job's data) or read from `evu`. */
  private readonly tags = new Map<string, { tag: string; at: number }>();

  constructor(
    redis: Redis,
    readonly prefix: string,
    private readonly retentionMs: number,
    /** Counts each step of the delivery gate run (the metric `ripple_gate_calls_total`). */
    private readonly onGateStep: (step: GateStep) => void = () => {},
  ) {
    const scripts = redis as unknown as Scripts;
    for (const script of SCRIPTS.values()) {
      const name = commandName(script.name);
      if (typeof scripts[name] !== 'function') {
        redis.defineCommand(name, { numberOfKeys: script.numberOfKeys, lua: script.lua });
      }
    }
    this.redis = redis;
  }

  /** Runs one of `lua/*.lua` by its name (EVALSHA, loading it on first use). */
  private run(script: string, ...args: Args): Promise<unknown> {
    const command = (this.redis as unknown as Scripts)[commandName(script)];
    if (!command) throw new Error(`no script lua/${script}-N.lua`);
    return command.call(this.redis, ...args);
  }

  private eventKeyIn(tag: string, id: string): string {
    return `${this.prefix}:${tag}:ev:${id}`;
  }
  /** Usernames compare as directories compare them (see `sameUserKey`), as everywhere in Ripple. */
  userKey(username: string): string {
    return `${this.prefix}:${userTag(username)}:user:${sameUserKey(username)}`;
  }
  lockKey(app: string, username: string): string {
    return `${this.prefix}:${userTag(username)}:lock:${app}:${sameUserKey(username)}`;
  }
  private waitersKey(app: string, username: string): string {
    return `${this.lockKey(app, username)}:waiters`;
  }
  /** Who must still answer for an `awaiting` row (see `lua/expect-answers-2.lua`). */
  private answersKey(eventId: string, app: string, username: string): string {
    return `${this.prefix}:${userTag(username)}:answers:${eventId}:${app}`;
  }
  private rateKeys(app: string): [string, string] {
    const key = `${this.prefix}:{rate:${app}}`;
    return [key, `${key}:reserved`];
  }
  private tagIndexKey(id: string): string {
    return `${this.prefix}:evu:${id}`;
  }

  /**
   * The vault name of an event's sealed credential: in the user's slot, so that it is written
   * and dropped in the same step as the event.
   */
  credentialName(eventId: string, username: string): string {
    return `${userTag(username)}:${eventId}`;
  }

  private remember(id: string, tag: string): void {
    if (this.tags.size >= TAG_CACHE_SIZE) {
      // Oldest first (insertion order): a tenth goes, so this runs rarely.
      let n = TAG_CACHE_SIZE / 10;
      for (const key of this.tags.keys()) {
        this.tags.delete(key);
        if (--n <= 0) break;
      }
    }
    this.tags.set(id, { tag, at: Date.now() });
  }

  /** The user tag of an event id, or undefined when Redis has no such event. */
  private async tagOf(id: string): Promise<string | undefined> {
    const known = this.tags.get(id);
    if (known && Date.now() - known.at < TAG_CACHE_MS) return known.tag;
    const tag = await this.redis.get(this.tagIndexKey(id));
    if (tag) this.remember(id, tag);
    else this.tags.delete(id);
    return tag ?? undefined;
  }

  /** The event's hash key, or undefined when no event has this id. */
  async eventKey(id: string): Promise<string | undefined> {
    const tag = await this.tagOf(id);
    return tag ? this.eventKeyIn(tag, id) : undefined;
  }

  /** The event's key when the caller knows its user (a delivery job's data): no lookup. */
  private eventKeyOf(id: string, username: string): string {
    const tag = userTag(username);
    if (this.tags.get(id)?.tag !== tag) this.remember(id, tag);
    return this.eventKeyIn(tag, id);
  }

  /**
   * Records the event and, atomically with it, its sealed credential (see Vault.sealFor). With
   * `withinMs`, Redis writes nothing unless it runs this within that many ms from now (by its own
   * clock): a caller that was answered 503 is never recorded later by a Redis that was frozen.
   */
  async createEvent(
    meta: EventMeta,
    credential: { key: string; sealed: string; ttlMs: number } | undefined,
    withinMs?: number,
  ): Promise<'created' | 'same' | 'conflict' | 'expired'> {
    const tag = userTag(meta.user.username);
    // The id's user tag (kept as long as the event), and the id among the events not yet planned
    // (before the event exists, so that one recorded but never accepted is always found).
    const [previous] = await Promise.all([
      this.redis.set(this.tagIndexKey(meta.id), tag, 'PX', this.retentionMs, 'NX', 'GET'),
      this.redis.zadd(this.unplannedKey, this.redisDeadline(0), meta.id),
    ]);
    // The same id for another user: another body, whatever it says.
    if (previous !== null && previous !== tag) return 'conflict';
    this.remember(meta.id, tag);
    const out = (await this.run(
      'create-event',
      this.eventKeyIn(tag, meta.id),
      credential?.key ?? `${this.prefix}:vault:${this.credentialName(meta.id, meta.user.username)}`,
      `${this.prefix}:${tag}:seq`,
      this.userKey(meta.user.username),
      JSON.stringify(meta),
      meta.bodyHash,
      this.retentionMs,
      credential?.sealed ?? '',
      Math.round(credential?.ttlMs ?? 0),
      withinMs === undefined ? '' : this.redisDeadline(withinMs),
      Date.parse(meta.occurredAt),
      ...(meta.alreadyDone ?? []).map((d) => d.app),
    )) as 'created' | 'same' | 'conflict' | 'expired';
    // Nothing recorded: the id is free again (the janitor takes it off `unplanned`).
    if (out === 'expired' && previous === null) await this.redis.del(this.tagIndexKey(meta.id)).catch(() => 0);
    return out;
  }

  /**
   * Redis's clock, as last measured, carried forward on this process's monotonic clock (so a
   * step of the host's wall clock does not move it).
   */
  private redisClock = { at: Date.now(), perf: performance.now() };

  /** Measures Redis's clock (at start-up, then now and then). */
  async syncClock(): Promise<void> {
    const before = performance.now();
    const [seconds, micros] = await this.redis.time();
    const after = performance.now();
    this.redisClock = { at: Number(seconds) * 1000 + Math.floor(Number(micros) / 1000), perf: (before + after) / 2 };
  }

  /** `withinMs` from now, in epoch ms of Redis's clock. */
  private redisDeadline(withinMs: number): number {
    return Math.round(this.redisClock.at + (performance.now() - this.redisClock.perf) + withinMs);
  }

  private get unplannedKey(): string {
    return `${this.prefix}:unplanned`;
  }

  /**
   * The last step of ingest, once the plan job is queued: the event counts only if Redis runs this
   * within `withinMs` from now (by its own clock).
   */
  async acceptEvent(id: string, withinMs: number): Promise<'accepted' | 'expired' | 'gone'> {
    const key = await this.eventKey(id);
    if (!key) return 'gone';
    return (await this.run('accept-event', key, this.redisDeadline(withinMs))) as 'accepted' | 'expired' | 'gone';
  }

  /** Events recorded more than `olderThanMs` ago and still not planned (at most `limit`). */
  async unplannedSince(olderThanMs: number, limit = 100): Promise<string[]> {
    const [seconds, micros] = await this.redis.time();
    const before = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - olderThanMs;
    return this.redis.zrangebyscore(this.unplannedKey, '-inf', before, 'LIMIT', 0, limit);
  }

  /**
   * Drops an event, with its credential, that was recorded but never accepted (its caller was
   * answered 503) once it can no longer be: 'dropped', 'planned', 'accepted' (kept, not yet
   * planned), 'gone' (no such event) or 'pending' (it may still be accepted). Takes the id off
   * the events not yet planned unless it is accepted or pending.
   */
  async dropUnaccepted(id: string): Promise<'dropped' | 'planned' | 'accepted' | 'gone' | 'pending'> {
    const tag = await this.tagOf(id);
    const out = tag
      ? await this.run('drop-unaccepted', this.eventKeyIn(tag, id), `${this.prefix}:vault:${tag}:${id}`)
      : 3;
    const outcome =
      ({ 1: 'dropped', 2: 'planned', 0: 'accepted', 3: 'gone' } as const)[out as 0 | 1 | 2 | 3] ?? 'pending';
    if (outcome === 'dropped' || outcome === 'planned' || outcome === 'gone') {
      await this.redis.zrem(this.unplannedKey, id);
    }
    return outcome;
  }

  async getEvent(id: string): Promise<StoredEvent | undefined> {
    const key = await this.eventKey(id);
    if (!key) return undefined;
    const all = await this.redis.hgetall(key);
    if (!all._meta) return undefined;
    const meta = JSON.parse(all._meta) as EventMeta;
    const rows: Record<string, AppRow> = {};
    for (const [field, raw] of Object.entries(all)) {
      if (!field.startsWith('_')) rows[field] = JSON.parse(raw) as AppRow;
    }
    if (all._seq) meta.seq = Number(all._seq);
    if (all._planned) meta.planned = true;
    if (all._supersededBy) meta.supersededBy = all._supersededBy;
    if (all._supersedes) meta.supersedes = JSON.parse(all._supersedes) as Record<string, string>;
    if (all._acceptBy) meta.acceptBy = Number(all._acceptBy);
    return { meta, rows };
  }

  /** Replaces the event's user (filled from a directory before planning); nothing if the event is gone. */
  async replaceUser(eventId: string, user: EventMeta['user']): Promise<void> {
    const key = await this.eventKey(eventId);
    const raw = key ? await this.redis.hget(key, '_meta') : null;
    if (!key) return;
    if (!raw) return;
    await this.redis.hset(key, '_meta', JSON.stringify({ ...(JSON.parse(raw) as EventMeta), user }));
  }

  async getRow(eventId: string, app: string): Promise<AppRow | undefined> {
    const key = await this.eventKey(eventId);
    const raw = key ? await this.redis.hget(key, app) : null;
    return raw ? (JSON.parse(raw) as AppRow) : undefined;
  }

  /**
   * Claims "newest change" per app for the event's user and writes every app row, in one step
   * (an app for which a newer change exists is written `superseded`). Returns each app's claim.
   */
  async plan(
    event: { id: string; username: string; occurredAtMs: number },
    rows: Record<string, AppRow>,
    now: number,
  ): Promise<ClaimResult[]> {
    const args = Object.entries(rows).flatMap(([app, row]) => [app, JSON.stringify(row)]);
    const out = (await this.run(
      'plan-event',
      this.eventKeyOf(event.id, event.username),
      this.userKey(event.username),
      event.id,
      event.occurredAtMs,
      this.retentionMs,
      now,
      ...args,
    )) as string[];
    await this.redis.zrem(this.unplannedKey, event.id);
    const claims: ClaimResult[] = [];
    for (let i = 0; i + 2 < out.length; i += 3) {
      const [app, claim, other] = out.slice(i, i + 3) as [string, string, string];
      if (claim === 'old') claims.push({ app, supersededBy: other });
      else claims.push(other ? { app, supersedes: other } : { app });
    }
    return claims;
  }

  /**
   * Waits (Redis `WAIT`, at most `timeoutMs`) until `replicas` replicas have every write this
   * connection made so far — the event, its plan job, its place among the unplanned — and says
   * whether they do. On a cluster those writes are on several nodes: every primary is asked.
   */
  async replicated(replicas: number, timeoutMs: number): Promise<boolean> {
    const timeout = Math.max(1, Math.floor(timeoutMs));
    const nodes = isCluster(this.redis)
      ? (this.redis as unknown as { nodes(role: 'master'): Redis[] }).nodes('master')
      : [this.redis];
    const acks = await Promise.all(nodes.map((node) => node.wait(replicas, timeout)));
    return acks.every((n) => n >= replicas);
  }

  /** The newest change per app for a user: app → event id. */
  async latestForUser(username: string): Promise<{ latest?: string; apps: Record<string, string> }> {
    const all = await this.redis.hgetall(this.userKey(username));
    const id = (rank: string) => rank.replace(/^[^|]*\|(\d+\|)?/, '');
    const { _latest, ...apps } = all;
    return {
      ...(_latest ? { latest: id(_latest) } : {}),
      apps: Object.fromEntries(Object.entries(apps).map(([a, v]) => [a, id(v)])),
    };
  }

  /** Patches a row if it is in one of `fromStates` (any state when empty); returns the new row or undefined. */
  async patchIf(eventId: string, app: string, fromStates: AppState[], patch: RowPatch): Promise<AppRow | undefined> {
    const key = await this.eventKey(eventId);
    if (!key) return undefined;
    const out = (await this.run('patch-row', key, app, fromStates.join(','), JSON.stringify(patch))) as string | null;
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }

  /**
   * The gate of every delivery attempt: the app's rate limit (`lua/take-rate-slot-2.lua`, when it
   * has one), then the user's gate (`lua/begin-delivery-4.lua`), which gives the rate slot back
   * when it says anything but 'ok'.
   */
  async begin(args: {
    eventId: string;
    app: string;
    username: string;
    jobId: string;
    lockTtlMs: number;
    now: number;
    rateLimit?: { max: number; per: number } | undefined;
  }): Promise<BeginVerdict> {
    let slot: string | undefined;
    if (args.rateLimit && args.rateLimit.max > 0) {
      this.onGateStep('rate');
      const [verdict, wait, window] = (await this.run(
        'take-rate-slot',
        ...this.rateKeys(args.app),
        args.jobId,
        args.now,
        args.rateLimit.max,
        args.rateLimit.per,
      )) as [string, string, string?];
      if (verdict === 'limited') {
        // The row says when it runs (a row in another state, or gone, is the user's gate's to judge then).
        await this.patchRowOf(args.eventId, args.username, args.app, ['scheduled', 'retrying'], {
          dueAt: Number(window),
        });
        return { verdict, waitMs: Number(wait) };
      }
      slot = wait;
    }
    this.onGateStep('user');
    const [verdict, meta, third, fourth] = (await this.run(
      'begin-delivery',
      this.eventKeyOf(args.eventId, args.username),
      this.userKey(args.username),
      this.lockKey(args.app, args.username),
      this.waitersKey(args.app, args.username),
      args.app,
      args.eventId,
      args.jobId,
      Math.round(args.lockTtlMs),
      args.now,
    )) as [string, string?, string?, string?];
    if (verdict !== 'ok' && slot !== undefined) {
      await this.run('give-back-rate-slot', this.rateKeys(args.app)[0], slot);
    }
    if (verdict === 'gone' || !meta || !third) return { verdict: 'gone' };
    const parsed = JSON.parse(meta) as EventMeta;
    if (verdict === 'locked') return { verdict, meta: parsed, waitMs: Number(third), holder: String(fourth) };
    return { verdict: verdict as 'ok' | 'superseded' | 'finished', meta: parsed, row: JSON.parse(third) as AppRow };
  }

  /** `patchIf` for a caller that knows the event's user. */
  private async patchRowOf(
    eventId: string,
    username: string,
    app: string,
    fromStates: AppState[],
    patch: RowPatch,
  ): Promise<AppRow | undefined> {
    const out = (await this.run(
      'patch-row',
      this.eventKeyOf(eventId, username),
      app,
      fromStates.join(','),
      JSON.stringify(patch),
    )) as string | null;
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }

  /** The value of the user+app lock while attempt `attempt` of job `jobId` holds it. */
  static lockToken(jobId: string, attempt: number): string {
    return `${jobId}#${attempt}`;
  }

  /**
   * Ends an attempt: patches the row (only while it is `active` in this attempt; no patch leaves
   * it) and releases (or, for an attempt cut off mid-flight, holds) the user+app lock. Returns the
   * new row and the jobs that waited on the lock, to wake.
   */
  async finish(args: {
    eventId: string;
    app: string;
    username: string;
    /** The attempt's lock token (`lockToken`). */
    token: string;
    /** The attempt number (the row's `attempts` when it began). */
    attempt: number;
    patch?: RowPatch | undefined;
    lock: 'release' | 'hold';
  }): Promise<{ row?: AppRow; waiters: string[] }> {
    const [row, ...waiters] = (await this.run(
      'finish-delivery',
      this.eventKeyOf(args.eventId, args.username),
      this.lockKey(args.app, args.username),
      this.waitersKey(args.app, args.username),
      args.app,
      args.token,
      args.patch ? JSON.stringify(args.patch) : '',
      args.lock,
      args.attempt,
    )) as string[];
    return row ? { row: JSON.parse(row) as AppRow, waiters } : { waiters };
  }

  /** Who holds the user+app lock (a lock token), if anyone. */
  async lockHolder(app: string, username: string): Promise<string | null> {
    return this.redis.get(this.lockKey(app, username));
  }

  /** Schedules or skips a `waiting` row from the state of its dependencies (`lua/resolve-dependent-1.lua`). */
  async resolveDependent(eventId: string, app: string, deps: string[], now: number): Promise<AppRow | undefined> {
    const key = await this.eventKey(eventId);
    if (!key) return undefined;
    const out = (await this.run('resolve-dependent', key, app, now, ...deps)) as string | null;
    return out ? (JSON.parse(out) as AppRow) : undefined;
  }

  /**
   * Writes who must answer before an app row parked `awaiting` can end (an answer already `done`
   * is kept, so an operator retry does not ask again who had caught up). Returns the party ids
   * still `pending`.
   */
  async expectAnswers(eventId: string, app: string, username: string, parties: AwaitedParty[]): Promise<string[]> {
    const args = parties.flatMap((p) => [
      p.id,
      JSON.stringify({ label: p.label, state: p.state, ...(p.note ? { note: p.note } : {}) }),
    ]);
    return (await this.run(
      'expect-answers',
      this.answersKey(eventId, app, username),
      this.eventKeyIn(userTag(username), eventId),
      this.retentionMs,
      ...args,
    )) as string[];
  }

  /** Every party's answer so far for an `awaiting` row (empty when none was expected). */
  async answers(eventId: string, app: string, username: string): Promise<Record<string, AwaitedAnswer>> {
    const all = await this.redis.hgetall(this.answersKey(eventId, app, username));
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, JSON.parse(v) as AwaitedAnswer]));
  }

  /**
   * Records one party's answer (if given) and decides an `awaiting` row from all of them, in one
   * step (`lua/settle-awaiting-3.lua`): done when all are done, failed when one failed,
   * superseded when a newer change exists. Returns the answer's verdict and the row if it changed.
   */
  async settleAwaiting(args: {
    eventId: string;
    app: string;
    username: string;
    now: number;
    answer?: { party: string; state: 'done' | 'failed'; note: string } | undefined;
  }): Promise<{ answer: AnswerVerdict | undefined; row?: AppRow }> {
    const { answer } = args;
    const [verdict, row] = (await this.run(
      'settle-awaiting',
      this.eventKeyIn(userTag(args.username), args.eventId),
      this.answersKey(args.eventId, args.app, args.username),
      this.userKey(args.username),
      args.app,
      args.eventId,
      args.now,
      answer?.party ?? '',
      answer ? JSON.stringify({ state: answer.state, note: answer.note }) : '',
    )) as [string, string];
    return {
      answer: verdict ? (verdict as AnswerVerdict) : undefined,
      ...(row ? { row: JSON.parse(row) as AppRow } : {}),
    };
  }
}

/** One party an `awaiting` row waits on (a computer of the user), as the delivery parks it. */
export interface AwaitedParty {
  id: string;
  /** How people know it (a hostname). */
  label: string;
  /** `done` from the start (e.g. the computer the change was made on), or `pending`. */
  state: 'pending' | 'done';
  /** What the row's detail says of it once answered. */
  note?: string | undefined;
}

export interface AwaitedAnswer {
  label: string;
  state: 'pending' | 'done' | 'failed';
  note?: string;
  /** When it answered, epoch ms. */
  at?: number;
}

/** What became of an answer: counted, a repeat, too late (already answered otherwise), or from no expected party. */
export type AnswerVerdict = 'recorded' | 'same' | 'not_pending' | 'unknown';
