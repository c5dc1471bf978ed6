import type { Redis } from 'ioredis';
import type { Client } from 'ldapts';
import { attributeValues } from './entry.js';

/**
 * Ripple's own password writes to a directory (a credential app, the self-service portal),
 * remembered so that an `ldap-watch` source of the same directory never takes one for a new
 * change: no loops. Before writing, the writer marks the entry *pending* (for as long as the
 * write may take); after it, it reads back the entry's change-time attributes and records their
 * values. The watcher drops a change whose (entry, attribute, value) was recorded, and waits for
 * an entry still pending. The bind DN alone cannot tell: self-service writes as the user.
 *
 * A change time in whole seconds (pwdChangedTime) cannot tell Ripple's write from the user's own
 * change in the same second, so the entry's `entryCSN` (OpenLDAP: microseconds and a counter, new
 * on every modify) is read back too: when the directory has one, a change is Ripple's only while
 * the entry's entryCSN is still the one read back after Ripple's write. What remains: a change
 * made between Ripple's write and its read-back (milliseconds) is taken for Ripple's; any other
 * modify of the entry after Ripple's write, seen before the watcher got to it, makes Ripple's own
 * write an event (one without a password: credential apps skip it). Directories without entryCSN
 * compare the change time alone.
 */

/** The change-time attributes read back after a write: whichever the watcher polls is among them. */
export const CHANGE_TIME_ATTRIBUTES = [
  'pwdChangedTime',
  'pwdLastSet',
  'pwdUpdateTime',
  'shadowLastChange',
  'modifyTimestamp',
] as const;

/** Changes with every modify of an entry (OpenLDAP, with microseconds): read back with the change time. */
export const CHANGE_SEQUENCE_ATTRIBUTE = 'entryCSN';

/** Recorded for a change time when the directory gave no entryCSN. */
const NO_SEQUENCE = '1';

/** How long a recorded write is remembered: far longer than any poll interval. */
const REMEMBER_MS = 24 * 3_600_000;

/** DNs as directories compare them, near enough: case and spaces around separators ignored. */
export function normalizeDn(dn: string): string {
  return dn
    .split(',')
    .map((rdn) =>
      rdn
        .split('=')
        .map((p) => p.trim())
        .join('='),
    )
    .join(',')
    .toLowerCase();
}

const keyOf = (prefix: string, dn: string) => `${prefix}:ownwrite:${normalizeDn(dn)}`;

export interface OwnWrites {
  redis: Redis;
  prefix: string;
}

/** Marks `dn` as being written by Ripple for up to `forMs` (the write's timeout and settle). */
export async function beginOwnWrite(own: OwnWrites, dn: string, forMs: number): Promise<void> {
  const key = keyOf(own.prefix, dn);
  await own.redis
    .multi()
    .hset(key, '_pending', String(Date.now() + forMs))
    .pexpire(key, REMEMBER_MS)
    .exec();
}

/**
 * After a successful write: reads the entry's change-time attributes on `client` (bound as the
 * writer) and records their values as Ripple's, then clears the pending mark.
 */
export async function recordOwnWrite(own: OwnWrites, client: Client, dn: string): Promise<void> {
  const { searchEntries } = await client.search(dn, {
    scope: 'base',
    filter: '(objectClass=*)',
    attributes: [...CHANGE_TIME_ATTRIBUTES, CHANGE_SEQUENCE_ATTRIBUTE],
  });
  const entry = searchEntries[0] ?? { dn };
  const valuesOf = (attr: string) => attributeValues(entry, attr);
  const sequence = valuesOf(CHANGE_SEQUENCE_ATTRIBUTE)[0] ?? NO_SEQUENCE;
  const fields: string[] = [];
  for (const attr of CHANGE_TIME_ATTRIBUTES) {
    for (const v of valuesOf(attr)) fields.push(`${attr.toLowerCase()}=${v}`, sequence);
  }
  const key = keyOf(own.prefix, dn);
  const tx = own.redis.multi();
  if (fields.length > 0) tx.hset(key, ...fields);
  await tx.hdel(key, '_pending').pexpire(key, REMEMBER_MS).exec();
}

/** Ends a pending mark after a write that failed (nothing to recognise later). */
export async function abandonOwnWrite(own: OwnWrites, dn: string): Promise<void> {
  await own.redis.hdel(keyOf(own.prefix, dn), '_pending');
}

/**
 * Whether the change of `dn` that set `attribute` to `value` (the entry's entryCSN now being
 * `sequence`, when the directory has one) was Ripple's own (`own`), may be (a write of Ripple's
 * to it is in flight: `pending`), or was made by someone else (`other`).
 */
export async function ownWriteOf(
  own: OwnWrites,
  dn: string,
  attribute: string,
  value: string,
  sequence: string | undefined,
  now = Date.now(),
): Promise<'own' | 'pending' | 'other'> {
  const [recorded, pending] = await own.redis.hmget(
    keyOf(own.prefix, dn),
    `${attribute.toLowerCase()}=${value}`,
    '_pending',
  );
  // The same change time, but the entry was modified since Ripple read it back: the user's own change in that second.
  if (recorded && (recorded === NO_SEQUENCE || sequence === undefined || recorded === sequence)) return 'own';
  if (pending && Number(pending) > now) return 'pending';
  return 'other';
}
