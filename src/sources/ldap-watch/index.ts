import { randomUUID } from 'node:crypto';
import type { Entry } from 'ldapts';
import { z } from 'zod';
import { attributeValues, groupName } from '../../../workers/ldap/entry.js';
import { escapeFilterValue, type LdapSettings, step, withClient } from '../../../workers/ldap/index.js';
import {
  CHANGE_SEQUENCE_ATTRIBUTE,
  CHANGE_TIME_ATTRIBUTES,
  normalizeDn,
  ownWriteOf,
} from '../../../workers/ldap/own-writes.js';
import { duration } from '../../config/schema-context.js';
import type { AppConfig } from '../../config/types.js';
import { MAX_CLOCK_SKEW_MS } from '../../events/event.js';
import type { PollRuntime, SourceChange, SourceConfig, SourceKind, SourceServices } from '../types.js';
import { type ChangeTimeFormat, changeTimeMs, laterOf } from './change-time.js';

/** The change-time attributes a watcher can search by order (`>=`), in time of at least seconds. */
const WATCHABLE = CHANGE_TIME_ATTRIBUTES.filter((a) => a !== 'shadowLastChange') as [
  Exclude<(typeof CHANGE_TIME_ATTRIBUTES)[number], 'shadowLastChange'>,
  ...Exclude<(typeof CHANGE_TIME_ATTRIBUTES)[number], 'shadowLastChange'>[],
];

const DEFAULT_FORMAT: Record<(typeof WATCHABLE)[number], ChangeTimeFormat> = {
  pwdChangedTime: 'generalizedTime',
  pwdLastSet: 'filetime',
  pwdUpdateTime: 'generalizedTime',
  modifyTimestamp: 'generalizedTime',
};

const settingsSchema = z
  .strictObject({
    /** An ldap app (it may be `enabled: false`): the watcher connects and binds as it does. */
    directory: z.string().min(1),
    /** Where the users are. */
    base: z.string().min(1),
    filter: z
      .string()
      .regex(/^\(.*\)$/, 'an LDAP filter in parentheses, e.g. (objectClass=inetOrgPerson)')
      .default('(objectClass=*)'),
    /** The attribute the directory sets when a password changes. */
    attribute: z
      .enum(WATCHABLE, {
        error: (issue) =>
          issue.input === 'shadowLastChange'
            ? 'shadowLastChange is not supported: it counts days (two changes a day look alike) and has no ORDERING rule in nis.schema, so the directory cannot search it by order; use pwdChangedTime (OpenLDAP ppolicy) or modifyTimestamp'
            : `one of ${WATCHABLE.join(', ')}`,
      })
      .default('pwdChangedTime'),
    /** How it is written: by default the attribute's own (pwdLastSet: filetime). */
    format: z.enum(['generalizedTime', 'filetime', 'unix']).optional(),
    usernameAttribute: z.string().min(1).default('uid'),
    /** The user id in events; the entry's DN when the entry has none. */
    idAttribute: z.string().min(1).default('entryUUID'),
    emailAttribute: z.string().min(1).default('mail'),
    groupsAttribute: z.string().min(1).default('memberOf'),
    interval: duration({ positive: true, timer: true }).default(30_000),
    pageSize: z.number().int().min(1).max(10_000).default(500),
  })
  .transform((s) => ({ ...s, format: s.format ?? DEFAULT_FORMAT[s.attribute] }));

export type LdapWatchSettings = z.output<typeof settingsSchema>;

/** The Lua step that moves the cursor only while this process holds the poll lock. */
const ADVANCE = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end return 0`;
/** Takes the poll lock, or renews it when held by this token. */
const LOCK = `local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`;

/**
 * Where the watcher is: the latest change time it has handled, and the entries it handled with
 * exactly that time (the next search starts at that time, inclusive, since another change in
 * the same second may still come).
 */
interface Cursor {
  at: string;
  done: string[];
}

function parseCursor(raw: string | null): Cursor | undefined {
  if (!raw) return undefined;
  const parsed = JSON.parse(raw) as Partial<Cursor>;
  return { at: String(parsed.at), done: Array.isArray(parsed.done) ? parsed.done.map(String) : [] };
}

/**
 * How the cursor names an entry handled at its time: its DN, and its entryCSN when the directory
 * has one, so that a second change of the entry within the same second is not taken as handled.
 */
function doneKey(entry: Entry): string {
  const sequence = attributeValues(entry, CHANGE_SEQUENCE_ATTRIBUTE)[0];
  return sequence ? `${normalizeDn(entry.dn)}#${sequence}` : normalizeDn(entry.dn);
}

class Watcher {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private readonly token = randomUUID();
  private runtime?: PollRuntime;

  constructor(
    private readonly source: SourceConfig<LdapWatchSettings>,
    private readonly ldap: LdapSettings,
    private readonly timeouts: { connect: number; operation: number },
    private readonly services: SourceServices,
  ) {}

  private get keys() {
    // One hash slot per source (Redis Cluster): the lock and the cursor move together.
    const base = `${this.runtime?.prefix}:source:{${this.source.id}}`;
    return { lock: `${base}:lock`, cursor: `${base}:cursor` };
  }

  start(runtime: PollRuntime): void {
    this.runtime = runtime;
    this.schedule(0);
  }

  private schedule(ms: number) {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.poll()
        .catch((err: unknown) => {
          this.runtime?.count('poll', 'failed');
          this.services.log.warn(
            { err, source: this.source.id },
            `ldap-watch ${this.source.id}: poll failed; trying again next interval`,
          );
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.source.settings.interval);
        });
    }, ms);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    // Let another process take over at once.
    const rt = this.runtime;
    if (rt) {
      await rt.redis
        .eval(
          `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`,
          1,
          this.keys.lock,
          this.token,
        )
        .catch(() => undefined);
    }
  }

  /** One poll: entries whose change time reached the cursor, oldest first; the cursor moves past what was recorded. */
  async poll(): Promise<void> {
    const rt = this.runtime as PollRuntime;
    const s = this.source.settings;
    const { lock, cursor: cursorKey } = this.keys;
    // The lock outlives a poll comfortably; a process that dies lets it lapse.
    const lockMs = Math.max(3 * s.interval, 60_000);
    if ((await rt.redis.eval(LOCK, 1, lock, this.token, lockMs)) !== 1) {
      rt.count('poll', 'locked');
      return;
    }
    const cursor = parseCursor(await rt.redis.get(cursorKey));
    const attr = s.attribute;
    const filter = cursor ? `(&${s.filter}(${attr}>=${escapeFilterValue(cursor.at)}))` : `(&${s.filter}(${attr}=*))`;
    const attributes = [
      attr,
      s.usernameAttribute,
      s.idAttribute,
      s.emailAttribute,
      s.groupsAttribute,
      'modifiersName',
      CHANGE_SEQUENCE_ATTRIBUTE,
    ];
    const entries = await withClient(
      this.ldap,
      this.timeouts,
      AbortSignal.timeout(this.timeouts.operation * 4),
      async (client) => {
        await step(`bind as ${this.ldap.bindDN}`, () => client.bind(this.ldap.bindDN, this.ldap.bindPassword));
        const result = await step(`search ${s.base} for ${filter}`, () =>
          client.search(s.base, { scope: 'sub', filter, attributes, paged: { pageSize: s.pageSize } }),
        );
        return result.searchEntries;
      },
    );
    // An entry dated beyond now (a replica with a fast clock, an import) is left for when its
    // time comes: the cursor never moves past now + the allowed skew, or it would pass over
    // everyone else's changes until that date.
    const latest = Date.now() + MAX_CLOCK_SKEW_MS;
    const changed = entries
      .map((entry) => ({ entry, value: attributeValues(entry, attr)[0] }))
      .filter(
        (e): e is { entry: Entry; value: string } =>
          e.value !== undefined && changeTimeMs(e.value, s.format) !== undefined,
      )
      .filter((e) => {
        if ((changeTimeMs(e.value, s.format) as number) <= latest) return true;
        this.warnFuture(e.entry.dn, e.value);
        return false;
      })
      .sort((a, b) => (changeTimeMs(a.value, s.format) ?? 0) - (changeTimeMs(b.value, s.format) ?? 0));
    if (!cursor) {
      // First poll: start from the newest change the directory has now; history is not replayed.
      const at = changed.at(-1)?.value ?? (s.format === 'generalizedTime' ? '19700101000000Z' : '0');
      const start: Cursor = { at, done: changed.filter((c) => c.value === at).map((c) => doneKey(c.entry)) };
      await rt.redis.eval(ADVANCE, 2, lock, cursorKey, this.token, JSON.stringify(start));
      rt.count('poll', 'ok');
      this.services.log.info(
        { source: this.source.id, cursor: at },
        `ldap-watch ${this.source.id}: watching changes from ${at}`,
      );
      return;
    }
    let next = cursor;
    for (const { entry, value } of changed) {
      const dn = doneKey(entry);
      // The search includes the cursor's own time (another change in that second may come after a poll): skip those done.
      if (value === cursor.at && cursor.done.includes(dn)) continue;
      const outcome = await this.consider(rt, entry, value);
      // Held back (Ripple's own write in flight, or Redis refused): the cursor stays before it, so the next poll sees it again.
      if (outcome === 'hold') break;
      const at = laterOf(next.at, value, s.format);
      next = at === next.at ? { at, done: [...next.done, dn] } : { at, done: [dn] };
    }
    if (next !== cursor) await rt.redis.eval(ADVANCE, 2, lock, cursorKey, this.token, JSON.stringify(next));
    rt.count('poll', 'ok');
  }

  /** Entries dated in the future already logged (once each, not every poll). */
  private readonly future = new Set<string>();

  private warnFuture(dn: string, value: string): void {
    const key = `${normalizeDn(dn)}|${value}`;
    if (this.future.has(key)) return;
    if (this.future.size > 10_000) this.future.clear();
    this.future.add(key);
    this.services.log.warn(
      { source: this.source.id, dn, [this.source.settings.attribute]: value },
      `ldap-watch ${this.source.id}: ${dn} has a change time in the future (${value}); it is taken when that time comes, and the cursor does not move past now`,
    );
  }

  private async consider(rt: PollRuntime, entry: Entry, value: string): Promise<'done' | 'hold'> {
    const s = this.source.settings;
    const own = await ownWriteOf(
      rt,
      entry.dn,
      s.attribute,
      value,
      attributeValues(entry, CHANGE_SEQUENCE_ATTRIBUTE)[0],
    );
    if (own === 'own') {
      rt.count('change', 'loop');
      return 'done';
    }
    if (own === 'pending') return 'hold';
    const username = attributeValues(entry, s.usernameAttribute)[0];
    if (!username) {
      rt.count('change', 'ignored');
      this.services.log.warn(
        { source: this.source.id, dn: entry.dn },
        `ldap-watch: ${entry.dn} has no ${s.usernameAttribute}; its password change is not propagated`,
      );
      return 'done';
    }
    const modifier = attributeValues(entry, 'modifiersName')[0];
    const email = attributeValues(entry, s.emailAttribute)[0];
    const change: SourceChange = {
      // The entry and its change time: a re-poll of the same change is the same event.
      sourceEventId: `${normalizeDn(entry.dn)}|${value}`,
      occurredAt: new Date(changeTimeMs(value, s.format) as number).toISOString(),
      user: {
        id: attributeValues(entry, s.idAttribute)[0] ?? entry.dn,
        username,
        ...(email ? { email } : {}),
        groups: attributeValues(entry, s.groupsAttribute).map(groupName),
      },
      // modifiersName is the last modifier of the whole entry: only "the user themselves" is sure enough.
      ...(modifier && normalizeDn(modifier) === normalizeDn(entry.dn) ? { initiator: 'user' as const } : {}),
    };
    const answer = await rt.submit(change);
    if (answer.status === 202) return 'done';
    if (answer.status >= 500) return 'hold';
    // Refused for good (e.g. dated beyond status.retention): nothing a re-poll could change.
    this.services.log.warn(
      { source: this.source.id, dn: entry.dn, status: answer.status, message: answer.message },
      'ldap-watch: change refused',
    );
    return 'done';
  }
}

/**
 * `kind: ldap-watch` — password changes made anywhere in a directory, found by polling the
 * entries' change-time attribute past a durable cursor in Redis. One process polls at a time (a
 * lock in Redis); Ripple's own writes are recognised and dropped (see workers/ldap/own-writes.ts).
 */
export const ldapWatchSource: SourceKind<'ldap-watch', LdapWatchSettings> = {
  kind: 'ldap-watch',
  mode: 'poll',
  settings: () => settingsSchema,
  check(s, apps) {
    const app = apps.find((a) => a.id === s.directory);
    if (!app) return [['directory', `no app has id "${s.directory}" (an ldap app, which may be enabled: false)`]];
    if (app.kind !== 'ldap') return [['directory', `"${s.directory}" is a ${app.kind} app, not ldap`]];
    return [];
  },
  create(source, services) {
    const app = services.apps.find((a) => a.id === source.settings.directory) as AppConfig<LdapSettings>;
    const watcher = new Watcher(
      source,
      app.settings,
      { connect: app.timeout, operation: app.timeout + app.settle },
      services,
    );
    return {
      start: (runtime) => watcher.start(runtime),
      stop: () => watcher.stop(),
    };
  },
};
