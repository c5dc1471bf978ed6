import { createServer } from 'node:http';
import { SET_MEDIA_TYPE, SetError, type VerifiedSet, verifySet } from '../../src/ssf/set.js';
import { freePort } from '../../src/util/server-process.js';

/**
 * A Shared Signals push receiver (RFC 8935) written for the tests: it checks the bearer token,
 * the media type, and verifies every SET against the transmitter's published JWKS with the SSF
 * rules (`verifySet`: typ, kid, iss, aud, one event, no sub, no exp), dedupes by `jti` as a
 * receiver must, and answers 202 or 400 `{ err, description }`. `answer` makes it reply with
 * a status instead (to test retries).
 */
export interface TestReceiver {
  url: string;
  /** Every SET it accepted, first sight of each jti only. */
  accepted: VerifiedSet[];
  /** How many times each jti arrived (retries resend the same jti). */
  seen: Map<string, number>;
  /** RFC 8935 refusals it answered. */
  refused: { err: string; description: string }[];
  /** Replies to give instead of checking, one per request, in order (e.g. [503]). */
  answer: { status: number; body?: object; headers?: Record<string, string> }[];
  /** After verifying a SET of this event type, answer these statuses instead of taking it, once each. */
  failType: Map<string, number[]>;
  /** The Authorization header it requires. */
  authorization: string;
  events(type?: string): VerifiedSet[];
  stop(): Promise<void>;
}

export async function startTestReceiver(opts: {
  jwksUrl: string;
  issuer: string;
  audience: string;
  authorization?: string;
  algorithms?: string[];
}): Promise<TestReceiver> {
  const receiver: TestReceiver = {
    url: '',
    accepted: [],
    seen: new Map(),
    refused: [],
    answer: [],
    failType: new Map(),
    authorization: opts.authorization ?? 'Bearer receiver-token-0123456789',
    events: (type) => (type ? receiver.accepted.filter((s) => s.events[0]?.type === type) : receiver.accepted),
    stop: async () => {},
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const reply = (status: number, body?: object, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(body ? JSON.stringify(body) : undefined);
      };
      const refuse = (err: string, description: string) => {
        receiver.refused.push({ err, description });
        reply(400, { err, description });
      };
      const scripted = receiver.answer.shift();
      if (scripted) return reply(scripted.status, scripted.body, scripted.headers);
      if (req.method !== 'POST') return reply(405);
      if (req.headers.authorization !== receiver.authorization) {
        return refuse('authentication_failed', 'wrong or missing Authorization');
      }
      if (req.headers['content-type'] !== SET_MEDIA_TYPE) {
        return refuse('invalid_request', `content-type ${req.headers['content-type']}`);
      }
      try {
        const set = await verifySet(Buffer.concat(chunks).toString(), {
          keys: opts.jwksUrl,
          issuer: opts.issuer,
          audience: opts.audience,
          ...(opts.algorithms ? { algorithms: opts.algorithms } : {}),
        });
        const failing = receiver.failType.get(set.events[0]?.type ?? '')?.shift();
        if (failing) return reply(failing);
        const count = receiver.seen.get(set.jti) ?? 0;
        receiver.seen.set(set.jti, count + 1);
        if (count === 0) receiver.accepted.push(set);
        return reply(202);
      } catch (err) {
        if (err instanceof SetError) {
          if (err.retryable) return reply(503, err.toJSON());
          return refuse(err.err, err.message);
        }
        return reply(500, { error: String(err) });
      }
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  receiver.url = `http://127.0.0.1:${port}/ssf/events`;
  receiver.stop = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return receiver;
}

/** Polls `check` every 50 ms until it gives a value, or fails naming `what` after `ms`. */
export async function until<T>(what: string, check: () => T | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = check();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
