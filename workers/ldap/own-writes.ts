import type { Redis } from 'ioredis';
import type { Client } from 'ldapts';

/**
 * Ripple's own password writes to a directory (a credential app, the self-service portal),
 * remembered so that an `ldap-watch` source of the same directory never takes one for a new
 * change: no loops. Before writing, the writer marks the entry *pending* (for as long as the
 * write may take); after it, it reads back the entry's change-time attributes and records their
 * values. The watcher drops a change whose (entry, attribute, value) was recorded, and waits for
 * an entry still pending. The bind DN alone cannot tell: self-service writes as the user.
 */

/** The change-time attributes read back after a write: whichever the watcher polls is among them. */
export const CHANGE_TIME_ATTRIBUTES = [
  'pwdChangedTime',
  'pwdLastSet',
  'pwdUpdateTime',
  'shadowLastChange',
  'modifyTimestamp',
] as const;

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
    attributes: [...CHANGE_TIME_ATTRIBUTES],
  });
  const entry = searchEntries[0] ?? { dn };
  const fields: string[] = [];
  for (const attr of CHANGE_TIME_ATTRIBUTES) {
    const found = Object.keys(entry).find((k) => k.toLowerCase() === attr.toLowerCase());
    const value = found ? entry[found] : undefined;
    for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
      fields.push(`${attr.toLowerCase()}=${String(v)}`, '1');
    }
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
 * Whether the change of `dn` that set `attribute` to `value` was Ripple's own (`own`), may be
 * (a write of Ripple's to it is in flight: `pending`), or was made by someone else (`other`).
 */
export async function ownWriteOf(
  own: OwnWrites,
  dn: string,
  attribute: string,
  value: string,
  now = Date.now(),
): Promise<'own' | 'pending' | 'other'> {
  const [recorded, pending] = await own.redis.hmget(
    keyOf(own.prefix, dn),
    `${attribute.toLowerCase()}=${value}`,
    '_pending',
  );
  if (recorded) return 'own';
  if (pending && Number(pending) > now) return 'pending';
  return 'other';
}
