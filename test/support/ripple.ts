import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { stringify } from 'yaml';
import { createLogger } from '../../src/log.js';
import type { RedisTopology } from '../../src/redis/connections.js';
import { type EmbeddedRedis, startEmbeddedRedis } from '../../src/redis/embedded.js';
import { Ripple } from '../../src/ripple.js';

export const WEBHOOK_SECRET = 'whsec_dGVzdC1pbmdlc3Qtc2VjcmV0LW51bWJlci1vbmU=';
export const OLD_WEBHOOK_SECRET = 'whsec_dGVzdC1pbmdlc3Qtc2VjcmV0LW51bWJlci10d28=';
export const ADMIN_TOKEN = 'test-admin-token-0123456789';
export const VAULT_KEY = Buffer.alloc(32, 7).toString('base64');
export const RECEIVER_SECRET = 'whsec_dGVzdC1yZWNlaXZlci1zZWNyZXQtMDEyMzQ1Njc=';

/** A temp directory removed by `cleanup()`. */
export function tempDir(label = 'ripple'): string {
  return mkdtempSync(join(tmpdir(), `${label}-`));
}

/** A private Redis for one test file (no AOF: tests don't restart it unless they ask). */
export function startTestRedis(opts: { appendOnly?: boolean; dir?: string } = {}): Promise<EmbeddedRedis> {
  return startEmbeddedRedis({ dir: opts.dir ?? tempDir('redis'), appendOnly: opts.appendOnly ?? false });
}

export interface ServiceOverrides {
  [key: string]: unknown;
}

/** Writes a config directory: ripple.yaml (test secrets, merged with `service`) and one file per app. */
export function writeConfig(apps: Record<string, unknown>[], service: ServiceOverrides = {}, dir = tempDir('config')) {
  mkdirSync(join(dir, 'apps'), { recursive: true });
  const base = {
    ingest: { secrets: [WEBHOOK_SECRET, OLD_WEBHOOK_SECRET] },
    admin: { tokens: [ADMIN_TOKEN] },
    vault: { keyId: 'test', key: VAULT_KEY, ttl: '1h' },
    workers: { drainTimeout: '5s' },
  };
  writeFileSync(join(dir, 'ripple.yaml'), stringify({ ...base, ...service }));
  for (const app of apps) writeFileSync(join(dir, 'apps', `${String(app.id)}.yaml`), stringify(app));
  return dir;
}

/** A webhook app delivering to `url`. */
export function webhookApp(id: string, url: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    kind: 'webhook',
    retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
    ...extra,
    webhook: { url, secret: RECEIVER_SECRET },
  };
}

export interface TestRipple {
  ripple: Ripple;
  http: FastifyInstance;
  prefix: string;
  /** Every log line, parsed. */
  logs: Record<string, unknown>[];
  rawLogs: string[];
  send(body: object, opts?: SendOptions): Promise<{ status: number; json: Record<string, unknown> }>;
  status(eventId: string): Promise<EventStatus>;
  waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs?: number): Promise<T>;
  waitForEvent(eventId: string, states: string[], timeoutMs?: number): Promise<EventStatus>;
  close(): Promise<void>;
}

export interface AppStatus {
  app: string;
  kind: string;
  state: string;
  dueAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  attempts: number;
  lastError: string | null;
  supersededBy?: string;
  [key: string]: unknown;
}
export interface EventStatus {
  eventId: string;
  state: string;
  apps: AppStatus[];
  [key: string]: unknown;
}

export interface SendOptions {
  id?: string;
  secret?: string;
  timestamp?: Date;
  raw?: string;
  headers?: Record<string, string>;
}

export function signedHeaders(payload: string, opts: { id: string; secret?: string; timestamp?: Date }) {
  const at = opts.timestamp ?? new Date();
  return {
    'content-type': 'application/json',
    'webhook-id': opts.id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(opts.secret ?? WEBHOOK_SECRET).sign(opts.id, at, payload),
  };
}

export function passwordChanged(username: string, extra: Record<string, unknown> = {}) {
  return {
    type: 'password.changed',
    occurredAt: new Date().toISOString(),
    user: { id: `u-${username}`, username, email: `${username}@example.org`, groups: ['eng'] },
    source: 'user-portal',
    ...extra,
  };
}

/**
 * Starts Ripple in this process (API, planner and workers unless told otherwise) against
 * `redisUrl`, with its own key prefix, capturing every log line.
 */
export async function startRipple(opts: {
  redisUrl?: string;
  /** Redis as Sentinel or Cluster (test/support/redis-topology.ts); instead of `redisUrl`. */
  redis?: RedisTopology;
  apps: Record<string, unknown>[];
  service?: ServiceOverrides;
  configDir?: string;
  prefix?: string;
  workers?: boolean;
  planner?: boolean;
}): Promise<TestRipple> {
  const configDir = opts.configDir ?? writeConfig(opts.apps, opts.service);
  const rawLogs: string[] = [];
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({
    level: 'debug',
    destination: {
      write(line: string) {
        rawLogs.push(line);
        logs.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  });
  const prefix = opts.prefix ?? `t${randomUUID().slice(0, 8)}`;
  const ripple = await Ripple.open({ configDir, redisUrl: opts.redisUrl, redis: opts.redis, log, prefix });
  if (opts.planner !== false) ripple.startPlanner();
  if (opts.workers !== false && ripple.kinds.length > 0) ripple.startWorkers();
  const http = await ripple.buildHttp();
  await http.ready();
  const self: TestRipple = {
    ripple,
    http,
    prefix,
    logs,
    rawLogs,
    async send(body, sendOpts = {}) {
      const payload = sendOpts.raw ?? JSON.stringify(body);
      const id = sendOpts.id ?? `evt_${randomUUID()}`;
      const res = await http.inject({
        method: 'POST',
        url: '/v1/events',
        payload,
        headers: {
          ...signedHeaders(payload, { id, secret: sendOpts.secret, timestamp: sendOpts.timestamp }),
          ...sendOpts.headers,
        },
      });
      return { status: res.statusCode, json: res.json() };
    },
    async status(eventId) {
      const res = await http.inject({
        url: `/v1/events/${eventId}`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      if (res.statusCode !== 200) throw new Error(`status ${eventId}: HTTP ${res.statusCode} ${res.body}`);
      return res.json() as EventStatus;
    },
    async waitFor(what, check, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      while (Date.now() < deadline) {
        try {
          const value = await check();
          if (value !== undefined && value !== false) return value as NonNullable<typeof value>;
        } catch (err) {
          last = err;
        }
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    },
    async waitForEvent(eventId, states, timeoutMs) {
      let seen = '';
      return self
        .waitFor(
          `event ${eventId} to be ${states.join('|')}`,
          async () => {
            const s = await self.status(eventId);
            seen = JSON.stringify(s.apps.map((a) => [a.app, a.state, a.lastError]));
            return states.includes(s.state) ? s : undefined;
          },
          timeoutMs,
        )
        .catch((err: Error) => {
          throw new Error(`${err.message}; apps: ${seen}`);
        });
    },
    async close() {
      await ripple.close();
      if (!opts.configDir) rmSync(configDir, { recursive: true, force: true });
    },
  };
  return self;
}

export interface ReceivedRequest {
  at: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A local HTTP receiver that records requests; `respond` scripts each answer (default 204). */
export async function startReceiver(
  respond: (req: ReceivedRequest, n: number, res: ServerResponse) => unknown = (_r, _n, res) => {
    res.writeHead(204).end();
  },
): Promise<{ url: string; requests: ReceivedRequest[]; server: Server; close(): Promise<void> }> {
  const requests: ReceivedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { at: Date.now(), headers: req.headers, body: Buffer.concat(chunks).toString() };
      requests.push(r);
      void respond(r, requests.length, res);
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    server,
    close: () =>
      new Promise<void>((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}

/**
 * For a test file: one private Redis for the file, and receivers and Ripples (each with its own
 * key prefix) that are closed after each test. Call at the top level of the file.
 */
export function ripplesPerTest() {
  let redis: EmbeddedRedis | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    redis = await startTestRedis();
  });
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()?.();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const url = () => {
    if (!redis) throw new Error('ripplesPerTest: Redis is not started yet (use it inside a test)');
    return redis.url;
  };
  return {
    async receiver(...args: Parameters<typeof startReceiver>) {
      const r = await startReceiver(...args);
      cleanups.push(r.close);
      return r;
    },
    async ripple(opts: Omit<Parameters<typeof startRipple>[0], 'redisUrl'>): Promise<TestRipple> {
      const t = await startRipple({ redisUrl: url(), ...opts });
      cleanups.unshift(t.close);
      return t;
    },
  };
}
