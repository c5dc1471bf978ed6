import { createHash, timingSafeEqual } from 'node:crypto';
import { type Refusal, refusal } from '../api/refusal.js';

/**
 * Whether `given` equals one of `expected`, in constant time for any lengths: both sides are
 * hashed first, so neither the content nor the length of a secret leaks through timing.
 */
export function secretMatches(given: string | undefined, expected: readonly string[]): boolean {
  if (given === undefined) return false;
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  const mine = digest(given);
  let ok = false;
  for (const secret of expected) ok = timingSafeEqual(mine, digest(secret)) || ok;
  return ok;
}

/** A header's single value (the first, if sent more than once). */
export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** The body as JSON, or the refusal of a body that is not. */
export function parseJsonBody(body: Buffer): { json: unknown } | { refused: { status: 400; body: Refusal } } {
  try {
    return { json: JSON.parse(body.toString('utf8')) };
  } catch (err) {
    return { refused: { status: 400, body: refusal('invalid_json', `body is not JSON: ${(err as Error).message}`) } };
  }
}
