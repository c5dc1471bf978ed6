/**
 * Ripple's benchmarks. Every figure is a ratio to a baseline measured in the same run on the
 * same Redis, because these machines are shared and noisy. The last line is one JSON object.
 *
 *   npm run bench                       # full size (10,000 users × 10 apps)
 *   BENCH_USERS=1000 npm run bench      # smaller
 *   BENCH_ONLY=fanout,memory npm run bench   # some of: fanout, ingest, durability, lateness,
 *                                            # ratelimit, scaleout, cluster, memory
 *   npm run bench -- --soak             # only the soak: 1,000,000 pending delayed app jobs
 *                                       # (BENCH_SOAK_JOBS), Redis memory and time to plan them
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { ingestEvent, SignatureVerifier, submitEvent } from '../src/ingest/ingest.js';
import type { RedisTopology } from '../src/redis/connections.js';
import { startEmbeddedRedis } from '../src/redis/embedded.js';
import { Ripple } from '../src/ripple.js';
import { startServerProcess } from '../src/util/server-process.js';
import { RIPPLE_BIN } from '../test/support/cli.js';
import { startRedisCluster } from '../test/support/redis-topology.js';
import { WEBHOOK_SECRET, webhookApp, writeConfig } from '../test/support/ripple.js';

const USERS = Number(process.env.BENCH_USERS ?? 10_000);
const APPS = Number(process.env.BENCH_APPS ?? 10);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 100);
const LATENESS_JOBS = Number(process.env.BENCH_LATENESS_JOBS ?? 10_000);
const INGEST_SECONDS = Number(process.env.BENCH_INGEST_SECONDS ?? 10);
const LATENESS_DELAY_MS = Number(process.env.BENCH_LATENESS_DELAY_S ?? 8) * 1000;
const JITTER_S = Number(process.env.BENCH_JITTER_S ?? 15);
const MEMORY_EVENTS = Number(process.env.BENCH_MEMORY_EVENTS ?? 2_000);
const RATE_JOBS = Number(process.env.BENCH_RATE_JOBS ?? 2_000);
const RATE_MAX = Number(process.env.BENCH_RATE_MAX ?? 200);
const SCALE_JOBS = Number(process.env.BENCH_SCALE_JOBS ?? 10_000);
const SOAK_JOBS = Number(process.env.BENCH_SOAK_JOBS ?? 1_000_000);
const CLUSTER_USERS = Number(process.env.BENCH_CLUSTER_USERS ?? 1_000);
const SOAK = process.argv.includes('--soak');
const PHASES = 'fanout,ingest,durability,lateness,ratelimit,scaleout,cluster,memory';
const ONLY = new Set((SOAK ? 'soak' : (process.env.BENCH_ONLY ?? PHASES)).split(','));
const here = import.meta.dirname;

const log = (msg: string) => console.log(`[bench] ${msg}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function child(script: string, args: string[] = []): Promise<{ proc: ChildProcess; info: Record<string, unknown> }> {
  const proc = fork(join(here, script), args, {
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_CHILD_ARGS?.split(' ').filter(Boolean) ?? [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((res, rej) => {
    proc.once('message', (info) => res({ proc, info: info as Record<string, unknown> }));
    proc.once('exit', (code) => rej(new Error(`${script} exited with ${code}`)));
  });
}

/** Asks a child to exit (so a `--cpu-prof` in BENCH_CHILD_ARGS is written) and waits for it. */
function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.once('exit', () => {
      clearTimeout(timer);
      res();
    });
    proc.send('exit');
  });
}

/** Redis CPU seconds so far (user + sys), to see how much of a phase's cost is Redis's. */
async function redisCpu(redisUrl: string): Promise<number> {
  const r = new Redis(redisUrl);
  const info = await r.info('cpu');
  r.disconnect();
  const get = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return get('used_cpu_user') + get('used_cpu_sys');
}

/** Calls per Redis command so far (`INFO commandstats`), to count what each delivery costs. */
async function commandStats(redisUrl: string): Promise<Map<string, number>> {
  const r = new Redis(redisUrl);
  const info = await r.info('commandstats');
  r.disconnect();
  const out = new Map<string, number>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1] as string, Number(m[2]));
  return out;
}

/** Commands per job between two `commandStats`: the total, and the commands by count ("evalsha 7.0, hset 0.1"). */
function perJob(before: Map<string, number>, after: Map<string, number>, jobs: number) {
  const rows = [...after].map(([cmd, n]) => [cmd, (n - (before.get(cmd) ?? 0)) / jobs] as const);
  const total = rows.reduce((s, [, n]) => s + n, 0);
  const top = rows
    .filter(([, n]) => n >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([cmd, n]) => `${cmd} ${n.toFixed(1)}`);
  return { total, text: `${total.toFixed(1)} (${top.join(', ')})` };
}

async function received(url: string): Promise<number> {
  const res = await fetch(url);
  return ((await res.json()) as { count: number }).count;
}

async function waitForCount(url: string, target: number, timeoutMs = 900_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await received(url)) < target) {
    if (Date.now() > deadline) throw new Error(`receiver got ${await received(url)} of ${target}`);
    await sleep(50);
  }
}

const quiet = pino({ level: 'warn' });

function eventBody(user: string) {
  return JSON.stringify({
    type: 'password.changed',
    occurredAt: new Date().toISOString(),
    user: { id: `u-${user}`, username: user, email: `${user}@example.org`, groups: ['all-staff'] },
    source: 'admin',
  });
}

function signed(body: string, id: string, signer: Webhook) {
  const now = new Date();
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': signer.sign(id, now, body),
  };
}

/** Raw BullMQ: the same number of jobs, each one HTTP POST to the same receiver. */
async function baselineFanout(redisUrl: string, target: string, jobs: number): Promise<number> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const prefix = `base${randomUUID().slice(0, 6)}`;
  const queue = new Queue('fanout', { connection, prefix });
  const body = eventBody('someone');
  const before = await received(target.replace('/hook', '/count'));
  const worker = new Worker(
    'fanout',
    async () => {
      const res = await fetch(target, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
    },
    { connection, prefix, concurrency: CONCURRENCY, autorun: true },
  );
  const start = performance.now();
  for (let i = 0; i < jobs; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({
      name: 'post',
      data: { eventId: `e${i + k}`, app: `app-${k % APPS}`, username: `user${i + k}` },
      opts: { jobId: `e${i + k}.app`, attempts: 3, removeOnComplete: true },
    }));
    await queue.addBulk(batch);
  }
  await waitForCount(target.replace('/hook', '/count'), before + jobs);
  const seconds = (performance.now() - start) / 1000;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return jobs / seconds;
}

/** Ripple: USERS signed events through ingest → planner → APPS webhook apps each. */
async function rippleFanout(
  redis: RedisTopology,
  target: string,
  users = USERS,
): Promise<{ rate: number; ripple: Ripple }> {
  const apps = Array.from({ length: APPS }, (_, i) => webhookApp(`app-${i}`, target, { retry: { attempts: 3 } }));
  const configDir = writeConfig(apps, { workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redis, log: quiet, prefix: `rf${randomUUID().slice(0, 6)}` });
  ripple.startPlanner();
  ripple.startWorkers();
  const verifier = new SignatureVerifier([WEBHOOK_SECRET]);
  const signer = new Webhook(WEBHOOK_SECRET);
  const before = await received(target.replace('/hook', '/count'));
  const start = performance.now();
  for (let i = 0; i < users; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, users - i) }, async (_, k) => {
        const body = eventBody(`user${i + k}`);
        const id = `evt_${i + k}`;
        const answer = await ingestEvent(ripple.engine, verifier, Buffer.from(body), signed(body, id, signer));
        if (answer.status !== 202) throw new Error(JSON.stringify(answer));
      }),
    );
  }
  await waitForCount(target.replace('/hook', '/count'), before + users * APPS);
  const rate = (users * APPS) / ((performance.now() - start) / 1000);
  return { rate, ripple };
}

async function ingestRate(address: string): Promise<number> {
  return (await ingestLoad(address)).rate;
}

/** Signed events/s on `POST /v1/events` with 50 connections, and the p99 latency in ms. */
async function ingestLoad(address: string): Promise<{ rate: number; p99Ms: number }> {
  const signer = new Webhook(WEBHOOK_SECRET);
  let n = 0;
  const result = await autocannon({
    url: `${address}/v1/events`,
    connections: 50,
    duration: INGEST_SECONDS,
    requests: [
      {
        method: 'POST',
        setupRequest: (req) => {
          const id = `evt_${process.pid}_${n++}_${Math.random().toString(36).slice(2, 8)}`;
          const body = eventBody(`ingest${n % 5000}`);
          return { ...req, body, headers: signed(body, id, signer) };
        },
      },
    ],
  });
  if (result.non2xx > 0) log(`warning: ${result.non2xx} non-2xx answers from ${address}`);
  return { rate: result.requests.average, p99Ms: result.latency.p99 };
}

function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? Number.NaN;
}

/** Ingests `events` signed events (200 at a time), all received at `now` (default: each at its own now). */
async function ingestMany(ripple: Ripple, events: number, idPrefix: string, now?: Date): Promise<void> {
  const verifier = new SignatureVerifier([WEBHOOK_SECRET]);
  const signer = new Webhook(WEBHOOK_SECRET);
  for (let i = 0; i < events; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, events - i) }, async (_, k) => {
        const body = eventBody(`${idPrefix}${i + k}`);
        const id = `${idPrefix}_${i + k}`;
        const answer = await ingestEvent(ripple.engine, verifier, Buffer.from(body), signed(body, id, signer), now);
        if (answer.status !== 202) throw new Error(JSON.stringify(answer));
      }),
    );
  }
}

/** Every app row of events `<idPrefix>_0 … _<events-1>`, once they have all started. */
async function rowsOf(ripple: Ripple, events: number, idPrefix: string) {
  const rows = [];
  for (let i = 0; i < events; i++) {
    const ev = await ripple.engine.store.getEvent(`${idPrefix}_${i}`);
    rows.push(...Object.values(ev?.rows ?? {}));
  }
  return rows;
}

/**
 * LATENESS_JOBS app jobs due at one instant (or, with `jitterMs`, spread by each app's jitter
 * around it): p99 of start − due over every app row. Planned before the workers start.
 */
async function rippleBurst(redisUrl: string, target: string, jitterMs: number) {
  const events = Math.ceil(LATENESS_JOBS / APPS);
  const delay = `${LATENESS_DELAY_MS + jitterMs}ms`;
  const apps = Array.from({ length: APPS }, (_, i) =>
    webhookApp(`app-${i}`, target, { delay, jitter: `${jitterMs}ms` }),
  );
  const configDir = writeConfig(apps, { workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: `rl${randomUUID().slice(0, 6)}` });
  ripple.startPlanner();
  const base = new Date();
  // One receipt instant for all, so every app job is due at base + the delay (± jitter, delayed by it).
  await ingestMany(ripple, events, 'late', base);
  const countUrl = target.replace('/hook', '/count');
  const before = await received(countUrl);
  const firstDue = base.getTime() + LATENESS_DELAY_MS;
  const pending = ripple.engine.queues.delivery.get('webhook');
  while (((await pending?.getDelayedCount()) ?? 0) < events * APPS) await sleep(50);
  if (Date.now() > firstDue - 1_000) log('warning: planning took longer than the delay; lateness includes planning');
  ripple.startWorkers();
  await waitForCount(countUrl, before + events * APPS);
  const late = (await rowsOf(ripple, events, 'late')).flatMap((row) =>
    row.startedAt ? [row.startedAt - row.dueAt] : [],
  );
  await ripple.close();
  return { p99: p99(late), jobs: late.length };
}

/** Raw BullMQ: the same number of delayed jobs due at one instant, the same POST; p99 of start − due. */
async function bullmqBurst(redisUrl: string, target: string, jobs: number) {
  const countUrl = target.replace('/hook', '/count');
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const prefix = `bl${randomUUID().slice(0, 6)}`;
  const queue = new Queue('late', { connection, prefix });
  const due = Date.now() + LATENESS_DELAY_MS;
  for (let i = 0; i < jobs; i += 1000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1000, jobs - i) }, () => ({
        name: 'post',
        data: { due },
        opts: { delay: due - Date.now(), removeOnComplete: true },
      })),
    );
  }
  const baseLate: number[] = [];
  const body = eventBody('x');
  const worker = new Worker(
    'late',
    async (job) => {
      baseLate.push(Date.now() - (job.data as { due: number }).due);
      const res = await fetch(target, { method: 'POST', body });
      await res.body?.cancel();
    },
    { connection, prefix, concurrency: CONCURRENCY },
  );
  const before = await received(countUrl);
  await waitForCount(countUrl, before + jobs);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return p99(baseLate);
}

/**
 * RATE_JOBS jobs for one app limited to RATE_MAX per second, all runnable when the workers start
 * at the start of a rate window. `seconds` is how long the limit made them take: whole windows
 * up to the one the last job started in, plus that window's share (its starts ÷ RATE_MAX), so a
 * limiter that fills every window scores RATE_JOBS ÷ RATE_MAX exactly and a wasted slot costs
 * 1/RATE_MAX s. `gateCallsPerJob`: steps of the delivery gate per job (`ripple_gate_calls_total`).
 */
async function rateLimited(redisUrl: string, target: string) {
  const per = 1_000;
  const app = webhookApp('limited', target, { rateLimit: { max: RATE_MAX, per: '1s' } });
  const configDir = writeConfig([app], { workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: `rr${randomUUID().slice(0, 6)}` });
  ripple.startPlanner();
  await ingestMany(ripple, RATE_JOBS, 'rate');
  const queue = ripple.engine.queues.delivery.get('webhook');
  while (((await queue?.getWaitingCount()) ?? 0) < RATE_JOBS) await sleep(50);
  const countUrl = target.replace('/hook', '/count');
  const before = await received(countUrl);
  // Windows are named by their start in epoch ms: start on one (Redis's clock is this host's).
  const start = Math.ceil((Date.now() + 50) / per) * per;
  await sleep(start - Date.now());
  ripple.startWorkers();
  await waitForCount(countUrl, before + RATE_JOBS);
  const rows = await rowsOf(ripple, RATE_JOBS, 'rate');
  // Every step of the delivery gate (the rate limit's and the user's) counts here.
  const gateCalls = (await ripple.engine.metrics.gateCalls.get()).values.reduce((sum, v) => sum + v.value, 0);
  await ripple.close();
  const starts = rows.map((r) => r.startedAt ?? Number.NaN).sort((a, b) => a - b);
  const perWindow = new Map<number, number>();
  for (const t of starts) perWindow.set(t - (t % per), (perWindow.get(t - (t % per)) ?? 0) + 1);
  const last = starts[starts.length - 1] ?? Number.NaN;
  const lastWindow = last - (last % per);
  const seconds = (lastWindow - start + (per * (perWindow.get(lastWindow) ?? 0)) / RATE_MAX) / 1000;
  const lastFinish = Math.max(...rows.map((r) => r.finishedAt ?? Number.NaN));
  return {
    seconds,
    lastFinishSeconds: (lastFinish - start) / 1000,
    peakPerWindow: Math.max(...perWindow.values()),
    gateCallsPerJob: gateCalls / RATE_JOBS,
  };
}

/**
 * Delivery throughput with `workers` forked `bin/ripple.js worker` processes on one Redis: SCALE_JOBS
 * app jobs are planned (delayed) first, the workers started, then every job promoted at once;
 * app deliveries per second until the receiver has them all.
 */
async function workerProcesses(redisUrl: string, target: string, workers: number): Promise<number> {
  const prefix = `rs${randomUUID().slice(0, 6)}`;
  const apps = Array.from({ length: APPS }, (_, i) => webhookApp(`app-${i}`, target, { delay: '1h' }));
  const configDir = writeConfig(apps, { redis: { prefix }, workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix });
  ripple.startPlanner();
  const events = Math.ceil(SCALE_JOBS / APPS);
  const procs = await Promise.all(
    Array.from({ length: workers }, () =>
      // Started as the tests start Ripple processes, but given a minute: these machines are shared.
      startServerProcess({
        name: 'ripple worker',
        command: process.execPath,
        args: [RIPPLE_BIN, 'worker'],
        env: { ...process.env, REDIS_URL: redisUrl, RIPPLE_CONFIG: configDir, LOG_LEVEL: 'info' },
        ready: /is up/,
        installHint: 'npm ci',
        timeoutMs: 60_000,
      }),
    ),
  );
  try {
    await ingestMany(ripple, events, 'scale');
    const queue = ripple.engine.queues.delivery.get('webhook') as Queue;
    while ((await queue.getDelayedCount()) < events * APPS) await sleep(50);
    const countUrl = target.replace('/hook', '/count');
    const before = await received(countUrl);
    const start = performance.now();
    await queue.promoteJobs({ count: 10_000 });
    await waitForCount(countUrl, before + events * APPS);
    return (events * APPS) / ((performance.now() - start) / 1000);
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await ripple.close();
  }
}

/**
 * The soak: SOAK_JOBS pending delayed app jobs (events × APPS apps, delay 1 h), submitted 500 at
 * a time through `submitEvent` with the planner running. Redis used_memory with all of them
 * pending, and the time from the first submit until every job is planned.
 */
async function soak(redisUrl: string, target: string) {
  const redis = new Redis(redisUrl);
  const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
  const apps = Array.from({ length: APPS }, (_, i) => webhookApp(`app-${i}`, target, { delay: '1h' }));
  const configDir = writeConfig(apps);
  await redis.flushall();
  const m0 = await used();
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: 'soak' });
  ripple.startPlanner();
  const events = Math.ceil(SOAK_JOBS / APPS);
  const queue = ripple.engine.queues.delivery.get('webhook') as Queue;
  const start = performance.now();
  for (let i = 0; i < events; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, events - i) }, async (_, k) => {
        const user = `soak${i + k}`;
        const answer = await submitEvent(ripple.engine, {
          id: `soak_${i + k}`,
          occurredAt: new Date().toISOString(),
          source: 'admin',
          user: { id: `u-${user}`, username: user, email: `${user}@example.org`, groups: ['all-staff'] },
          bodyHash: randomUUID(),
        });
        if (answer.status !== 202) throw new Error(JSON.stringify(answer));
      }),
    );
    if (i % 20_000 === 0 && i > 0) log(`  ${i} events submitted, ${await queue.getDelayedCount()} jobs planned`);
  }
  while ((await queue.getDelayedCount()) < events * APPS) await sleep(200);
  const seconds = (performance.now() - start) / 1000;
  const m1 = await used();
  await ripple.close();
  await redis.flushall();
  redis.disconnect();
  return { jobs: events * APPS, seconds, bytes: m1 - m0 };
}

/** Redis memory per pending (delayed) app job: Ripple vs a raw BullMQ delayed job with the same references. */
async function memory(redisUrl: string, target: string) {
  const redis = new Redis(redisUrl);
  const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
  const events = MEMORY_EVENTS;
  const apps = Array.from({ length: APPS }, (_, i) => webhookApp(`app-${i}`, target, { delay: '1h' }));
  const configDir = writeConfig(apps);
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: `rm${randomUUID().slice(0, 6)}` });
  const verifier = new SignatureVerifier([WEBHOOK_SECRET]);
  const signer = new Webhook(WEBHOOK_SECRET);
  const { planEvent } = await import('../src/planner/planner.js');
  await redis.flushall();
  const m0 = await used();
  for (let i = 0; i < events; i++) {
    const body = eventBody(`mem${i}`);
    const id = `evt_mem_${randomUUID()}`;
    await ingestEvent(ripple.engine, verifier, Buffer.from(body), signed(body, id, signer));
    await planEvent(ripple.engine, id);
  }
  await ripple.engine.queues.events.drain();
  const pending = await ripple.engine.queues.delivery.get('webhook')?.getDelayedCount();
  const m1 = await used();
  const parts = await memoryParts(redis, ripple.engine.prefix, (pending ?? 0) / events);
  await ripple.close();
  await redis.flushall();
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue('deliver-webhook', { connection, prefix: 'bm' });
  const b0 = await used();
  const jobs = events * APPS;
  for (let i = 0; i < jobs; i += 1000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => ({
        name: `app-${k % APPS}`,
        data: { eventId: `evt_mem_${randomUUID()}`, app: `app-${k % APPS}`, username: `mem${i + k}` },
        opts: { delay: 3_600_000, removeOnComplete: true },
      })),
    );
  }
  const b1 = await used();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  redis.disconnect();
  return { ripple: (m1 - m0) / (pending ?? jobs), baseline: (b1 - b0) / jobs, pending, parts };
}

/** Mean `MEMORY USAGE` of up to 200 keys matching `pattern` (values and key, not the keyspace's own overhead). */
async function meanUsage(redis: Redis, pattern: string, skip?: RegExp): Promise<number> {
  const sizes: number[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    for (const key of keys)
      if (!skip?.test(key) && sizes.length < 200) sizes.push((await redis.memory('USAGE', key)) ?? 0);
  } while (cursor !== '0' && sizes.length < 200);
  return sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length);
}

/** What one pending app job is made of, in bytes: its job hash, its share of the event and user hashes. */
async function memoryParts(redis: Redis, prefix: string, jobsPerEvent: number) {
  const queue = `${prefix}:deliver-webhook`;
  const delayed = (await redis.memory('USAGE', `${queue}:delayed`)) ?? 0;
  const count = await redis.zcard(`${queue}:delayed`);
  return {
    jobHash: await meanUsage(redis, `${queue}:d*`, /:delayed$/),
    delayedEntry: delayed / Math.max(1, count),
    eventShare: (await meanUsage(redis, `${prefix}:ev:*`)) / jobsPerEvent,
    userShare: (await meanUsage(redis, `${prefix}:user:*`)) / jobsPerEvent,
  };
}

async function main() {
  const redis = await startEmbeddedRedis({ dir: mkdtempSync(join(tmpdir(), 'bench-redis-')), appendOnly: false });
  const receiver = await child('receiver.ts');
  // Interrupted (Ctrl-C, kill): leave no receiver or redis-server behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      receiver.proc.kill();
      void redis.stop().finally(() => process.exit(130));
    });
  }
  const target = `http://127.0.0.1:${receiver.info.port}/hook`;
  const out: Record<string, number | string> = {};
  try {
    if (ONLY.has('fanout')) {
      log(`fan-out: ${USERS} users × ${APPS} apps, concurrency ${CONCURRENCY}`);
      const jobs = USERS * APPS;
      const c0 = await redisCpu(redis.url);
      const s0 = await commandStats(redis.url);
      const base = await baselineFanout(redis.url, target, jobs);
      const c1 = await redisCpu(redis.url);
      const s1 = await commandStats(redis.url);
      log(`  raw BullMQ: ${base.toFixed(0)} POSTs/s, Redis CPU ${(((c1 - c0) / jobs) * 1e6).toFixed(0)} µs per job`);
      const baseCommands = perJob(s0, s1, jobs);
      log(`    Redis commands per job (scripts' own commands counted too): ${baseCommands.text}`);
      const { rate, ripple } = await rippleFanout({ kind: 'single', url: redis.url }, target);
      const c2 = await redisCpu(redis.url);
      const s2 = await commandStats(redis.url);
      await ripple.close();
      log(
        `  Ripple:     ${rate.toFixed(0)} app deliveries/s, Redis CPU ${(((c2 - c1) / jobs) * 1e6).toFixed(0)} µs per job`,
      );
      const commands = perJob(s1, s2, jobs);
      log(`    Redis commands per app delivery (ingest and planning included): ${commands.text}`);
      out.fanoutRatio = rate / base;
      out.redisCommandsPerDelivery = Math.round(commands.total * 10) / 10;
      out.baselineRedisCommandsPerJob = Math.round(baseCommands.total * 10) / 10;
    }
    if (ONLY.has('ingest')) {
      log(`ingest: autocannon, 50 connections, ${INGEST_SECONDS}s each`);
      const bare = await child('http-servers.ts', ['bare']);
      const bareRate = await ingestRate(String(bare.info.address));
      await stop(bare.proc);
      const configDir = writeConfig([webhookApp('app-0', target)]);
      const api = await child('http-servers.ts', ['ripple', redis.url, configDir, `ri${randomUUID().slice(0, 6)}`]);
      const rippleRate = await ingestRate(String(api.info.address));
      await stop(api.proc);
      log(`  bare fastify: ${bareRate.toFixed(0)} req/s; Ripple POST /v1/events: ${rippleRate.toFixed(0)} events/s`);
      out.ingestRatio = rippleRate / bareRate;
    }
    if (ONLY.has('durability')) {
      log(`durability: POST /v1/events on a Redis with AOF fsync always, then everysec, ${INGEST_SECONDS}s each`);
      const rates: Record<string, number> = {};
      const p99: Record<string, number> = {};
      for (const durability of ['always', 'everysec'] as const) {
        const aof = await startEmbeddedRedis({
          dir: mkdtempSync(join(tmpdir(), `bench-aof-${durability}-`)),
          appendOnly: true,
          durability,
        });
        const configDir = writeConfig([webhookApp('app-0', target)], { redis: { durability } });
        const api = await child('http-servers.ts', ['ripple', aof.url, configDir, `rd${randomUUID().slice(0, 6)}`]);
        const load = await ingestLoad(String(api.info.address));
        rates[durability] = load.rate;
        p99[durability] = load.p99Ms;
        await stop(api.proc);
        await aof.stop();
      }
      log(
        `  appendfsync always: ${rates.always?.toFixed(0)} events/s (p99 ${p99.always} ms); ` +
          `everysec: ${rates.everysec?.toFixed(0)} events/s (p99 ${p99.everysec} ms)`,
      );
      out.ingestAlwaysPerSec = Math.round(rates.always ?? 0);
      out.ingestEverysecPerSec = Math.round(rates.everysec ?? 0);
      out.durabilityRatio = (rates.always ?? 0) / (rates.everysec ?? 1);
    }
    if (ONLY.has('lateness')) {
      log(`lateness: ${LATENESS_JOBS} app jobs due at one instant`);
      const late = await rippleBurst(redis.url, target, 0);
      const baseline = await bullmqBurst(redis.url, target, late.jobs);
      log(`  p99 start − due: Ripple ${late.p99} ms over ${late.jobs} jobs; raw BullMQ delayed jobs ${baseline} ms`);
      out.latenessP99Ms = late.p99;
      out.baselineLatenessP99Ms = baseline;
      out.latenessRatio = late.p99 / Math.max(1, baseline);
      log(`lateness, spread: the same ${LATENESS_JOBS} jobs, each app with jitter ${JITTER_S}s`);
      const spread = await rippleBurst(redis.url, target, JITTER_S * 1_000);
      log(`  p99 start − due: Ripple ${spread.p99} ms over ${spread.jobs} jobs`);
      out.jitterLatenessP99Ms = spread.p99;
    }
    if (ONLY.has('ratelimit')) {
      log(`rate limit: ${RATE_JOBS} jobs for one app limited to ${RATE_MAX}/s`);
      const rl = await rateLimited(redis.url, target);
      log(
        `  ${rl.seconds.toFixed(2)} s at the limit (ideal ${(RATE_JOBS / RATE_MAX).toFixed(2)}), last finished after ${rl.lastFinishSeconds.toFixed(2)} s; ` +
          `peak ${rl.peakPerWindow} per window; ${rl.gateCallsPerJob.toFixed(2)} gate calls per job`,
      );
      out.rateLimitedSeconds = Math.round(rl.seconds * 1000) / 1000;
      out.rateLimitedPeakPerWindow = rl.peakPerWindow;
      out.gateCallsPerJob = Math.round(rl.gateCallsPerJob * 100) / 100;
    }
    if (ONLY.has('scaleout')) {
      log(
        `scale-out: ${SCALE_JOBS} app jobs on 1, then 2 'ripple worker' processes (this machine: ${cpus().length} cores)`,
      );
      const one = await workerProcesses(redis.url, target, 1);
      const two = await workerProcesses(redis.url, target, 2);
      log(`  1 worker process: ${one.toFixed(0)} app deliveries/s; 2: ${two.toFixed(0)}`);
      out.scaleOutRatio = two / one;
    }
    if (ONLY.has('cluster')) {
      log(
        `cluster: fan-out of ${CLUSTER_USERS} users × ${APPS} apps on a single Redis, then on a 3-primary Redis Cluster`,
      );
      const single = await rippleFanout({ kind: 'single', url: redis.url }, target, CLUSTER_USERS);
      await single.ripple.close();
      const cluster = await startRedisCluster(3);
      try {
        const sharded = await rippleFanout(cluster.topology, target, CLUSTER_USERS);
        await sharded.ripple.close();
        const keys = await cluster.keysPerNode('*');
        log(
          `  single Redis: ${single.rate.toFixed(0)} app deliveries/s; cluster: ${sharded.rate.toFixed(0)} (keys left per node: ${keys.join(', ')})`,
        );
        out.clusterRatio = sharded.rate / single.rate;
      } finally {
        await cluster.stop();
      }
    }
    if (ONLY.has('soak')) {
      log(`soak: ${SOAK_JOBS} pending delayed app jobs (${APPS} apps per event, delay 1h)`);
      const s = await soak(redis.url, target);
      log(
        `  ${s.jobs} jobs planned in ${s.seconds.toFixed(1)} s; Redis used_memory +${(s.bytes / 1e6).toFixed(0)} MB (${(s.bytes / s.jobs).toFixed(0)} B per job)`,
      );
      out.soakPendingJobs = s.jobs;
      out.soakRedisMB = Math.round(s.bytes / 1e5) / 10;
      out.soakPlanSeconds = Math.round(s.seconds * 10) / 10;
    }
    if (ONLY.has('memory')) {
      log(`memory: ${MEMORY_EVENTS} events × ${APPS} apps pending with delay 1h`);
      const mem = await memory(redis.url, target);
      log(
        `  Ripple ${mem.ripple.toFixed(0)} B per pending app job (${mem.pending} jobs, status included); raw BullMQ ${mem.baseline.toFixed(0)} B`,
      );
      const p = mem.parts;
      log(
        `  of which (MEMORY USAGE, keyspace overhead not included): job hash ${p.jobHash.toFixed(0)}, delayed-set entry ${p.delayedEntry.toFixed(0)}, ` +
          `event status hash ÷ apps ${p.eventShare.toFixed(0)}, user hash ÷ apps ${p.userShare.toFixed(0)}`,
      );
      out.redisBytesPerPendingJob = Math.round(mem.ripple);
      out.baselineBytesPerPendingJob = Math.round(mem.baseline);
    }
  } finally {
    receiver.proc.kill();
    await redis.stop();
  }
  for (const k of [
    'fanoutRatio',
    'ingestRatio',
    'durabilityRatio',
    'latenessRatio',
    'scaleOutRatio',
    'clusterRatio',
  ] as const)
    if (typeof out[k] === 'number') out[k] = Math.round(out[k] * 1000) / 1000;
  console.log(JSON.stringify(out));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
