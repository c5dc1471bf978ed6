/**
 * Ripple's benchmarks. Every figure is a ratio to a baseline measured in the same run on the
 * same Redis, because these machines are shared and noisy. The last line is one JSON object.
 *
 *   npm run bench                       # full size (10,000 users × 10 apps)
 *   BENCH_USERS=1000 npm run bench      # smaller
 *   BENCH_ONLY=fanout,memory npm run bench   # some of fanout, ingest, durability, lateness, memory
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Webhook } from 'standardwebhooks';
import { ingestEvent, SignatureVerifier } from '../src/ingest/ingest.js';
import { startEmbeddedRedis } from '../src/redis/embedded.js';
import { Ripple } from '../src/ripple.js';
import { WEBHOOK_SECRET, webhookApp, writeConfig } from '../test/support/ripple.js';

const USERS = Number(process.env.BENCH_USERS ?? 10_000);
const APPS = Number(process.env.BENCH_APPS ?? 10);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 100);
const LATENESS_JOBS = Number(process.env.BENCH_LATENESS_JOBS ?? 10_000);
const INGEST_SECONDS = Number(process.env.BENCH_INGEST_SECONDS ?? 10);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'fanout,ingest,durability,lateness,memory').split(','));
const here = import.meta.dirname;

const log = (msg: string) => console.log(`[bench] ${msg}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function child(script: string, args: string[] = []): Promise<{ proc: ChildProcess; info: Record<string, unknown> }> {
  const proc = fork(join(here, script), args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((res, rej) => {
    proc.once('message', (info) => res({ proc, info: info as Record<string, unknown> }));
    proc.once('exit', (code) => rej(new Error(`${script} exited with ${code}`)));
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
async function rippleFanout(redisUrl: string, target: string): Promise<{ rate: number; ripple: Ripple }> {
  const apps = Array.from({ length: APPS }, (_, i) => webhookApp(`app-${i}`, target, { retry: { attempts: 3 } }));
  const configDir = writeConfig(apps, { workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: `rf${randomUUID().slice(0, 6)}` });
  ripple.startPlanner();
  ripple.startWorkers();
  const verifier = new SignatureVerifier([WEBHOOK_SECRET]);
  const signer = new Webhook(WEBHOOK_SECRET);
  const before = await received(target.replace('/hook', '/count'));
  const start = performance.now();
  for (let i = 0; i < USERS; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, USERS - i) }, async (_, k) => {
        const body = eventBody(`user${i + k}`);
        const id = `evt_${i + k}`;
        const answer = await ingestEvent(ripple.engine, verifier, Buffer.from(body), signed(body, id, signer));
        if (answer.status !== 202) throw new Error(JSON.stringify(answer));
      }),
    );
  }
  await waitForCount(target.replace('/hook', '/count'), before + USERS * APPS);
  const rate = (USERS * APPS) / ((performance.now() - start) / 1000);
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

/** LATENESS_JOBS app jobs due at one instant: p99 of start − due, Ripple and raw BullMQ delayed jobs. */
async function lateness(redisUrl: string, target: string) {
  const perEvent = APPS;
  const events = Math.ceil(LATENESS_JOBS / perEvent);
  const apps = Array.from({ length: perEvent }, (_, i) => webhookApp(`app-${i}`, target, { delay: '8s' }));
  const configDir = writeConfig(apps, { workers: { concurrency: { webhook: CONCURRENCY } } });
  const ripple = await Ripple.open({ configDir, redisUrl, log: quiet, prefix: `rl${randomUUID().slice(0, 6)}` });
  ripple.startPlanner();
  const verifier = new SignatureVerifier([WEBHOOK_SECRET]);
  const signer = new Webhook(WEBHOOK_SECRET);
  const base = new Date();
  for (let i = 0; i < events; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, events - i) }, async (_, k) => {
        const body = eventBody(`late${i + k}`);
        const id = `late_${i + k}`;
        // One receipt instant for all, so every app job is due at base + 8 s.
        await ingestEvent(ripple.engine, verifier, Buffer.from(body), signed(body, id, signer), base);
      }),
    );
  }
  const dueAt = base.getTime() + 8_000;
  if (Date.now() > dueAt - 1_000) log('warning: planning took longer than the delay; lateness includes planning');
  ripple.startWorkers();
  const countUrl = target.replace('/hook', '/count');
  const before = await received(countUrl);
  await waitForCount(countUrl, before + events * perEvent);
  const late: number[] = [];
  for (let i = 0; i < events; i++) {
    const ev = await ripple.engine.store.getEvent(`late_${i}`);
    for (const row of Object.values(ev?.rows ?? {})) if (row.startedAt) late.push(row.startedAt - row.dueAt);
  }
  await ripple.close();

  // Baseline: the same number of raw BullMQ delayed jobs due at one instant, same POST.
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const prefix = `bl${randomUUID().slice(0, 6)}`;
  const queue = new Queue('late', { connection, prefix });
  const due = Date.now() + 8_000;
  const jobs = events * perEvent;
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
  const before2 = await received(countUrl);
  await waitForCount(countUrl, before2 + jobs);
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  connection.disconnect();
  return { ripple: p99(late), baseline: p99(baseLate), jobs: late.length };
}

/** Redis memory per pending (delayed) app job: Ripple vs a raw BullMQ delayed job with the same references. */
async function memory(redisUrl: string, target: string) {
  const redis = new Redis(redisUrl);
  const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
  const events = 2_000;
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
  return { ripple: (m1 - m0) / (pending ?? jobs), baseline: (b1 - b0) / jobs, pending };
}

async function main() {
  const redis = await startEmbeddedRedis({ dir: mkdtempSync(join(tmpdir(), 'bench-redis-')), appendOnly: false });
  const receiver = await child('receiver.ts');
  const target = `http://127.0.0.1:${receiver.info.port}/hook`;
  const out: Record<string, number> = {};
  try {
    if (ONLY.has('fanout')) {
      log(`fan-out: ${USERS} users × ${APPS} apps, concurrency ${CONCURRENCY}`);
      const jobs = USERS * APPS;
      const c0 = await redisCpu(redis.url);
      const base = await baselineFanout(redis.url, target, jobs);
      const c1 = await redisCpu(redis.url);
      log(`  raw BullMQ: ${base.toFixed(0)} POSTs/s, Redis CPU ${(((c1 - c0) / jobs) * 1e6).toFixed(0)} µs per job`);
      const { rate, ripple } = await rippleFanout(redis.url, target);
      const c2 = await redisCpu(redis.url);
      await ripple.close();
      log(
        `  Ripple:     ${rate.toFixed(0)} app deliveries/s, Redis CPU ${(((c2 - c1) / jobs) * 1e6).toFixed(0)} µs per job`,
      );
      out.fanoutRatio = rate / base;
    }
    if (ONLY.has('ingest')) {
      log(`ingest: autocannon, 50 connections, ${INGEST_SECONDS}s each`);
      const bare = await child('http-servers.ts', ['bare']);
      const bareRate = await ingestRate(String(bare.info.address));
      bare.proc.kill();
      const configDir = writeConfig([webhookApp('app-0', target)]);
      const api = await child('http-servers.ts', ['ripple', redis.url, configDir, `ri${randomUUID().slice(0, 6)}`]);
      const rippleRate = await ingestRate(String(api.info.address));
      api.proc.kill();
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
        api.proc.kill();
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
      const late = await lateness(redis.url, target);
      log(
        `  p99 start − due: Ripple ${late.ripple} ms over ${late.jobs} jobs; raw BullMQ delayed jobs ${late.baseline} ms`,
      );
      out.latenessP99Ms = late.ripple;
      out.baselineLatenessP99Ms = late.baseline;
    }
    if (ONLY.has('memory')) {
      log('memory: 2,000 events × apps pending with delay 1h');
      const mem = await memory(redis.url, target);
      log(
        `  Ripple ${mem.ripple.toFixed(0)} B per pending app job (${mem.pending} jobs, status included); raw BullMQ ${mem.baseline.toFixed(0)} B`,
      );
      out.redisBytesPerPendingJob = Math.round(mem.ripple);
      out.baselineBytesPerPendingJob = Math.round(mem.baseline);
    }
  } finally {
    receiver.proc.kill();
    await redis.stop();
  }
  for (const k of ['fanoutRatio', 'ingestRatio', 'durabilityRatio'] as const)
    if (k in out) out[k] = Math.round((out[k] ?? 0) * 1000) / 1000;
  console.log(JSON.stringify(out));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
