import { createHash } from 'node:crypto';
import { sameUserKey } from '../events/event.js';

/**
 * The Redis Cluster hash tag of everything about one user — events, user hash, locks, arrival
 * sequence, sealed credentials, sessions — so that every step about a user touches one slot,
 * and users spread over the cluster's slots. A hash (not the name itself) so that any username,
 * braces included, makes a valid tag of fixed length: `{u:<12 hex>}`.
 */
export function userTag(username: string): string {
  return `{u:${createHash('sha256').update(sameUserKey(username)).digest('hex').slice(0, 12)}}`;
}
