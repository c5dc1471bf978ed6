import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

/** Runs `npm run bench [-- args]` at a tiny size; its last stdout line, parsed. */
function bench(args: string[], env: Record<string, string>): Promise<Record<string, unknown>> {
  const child = spawn('npm', ['run', '--silent', 'bench', ...(args.length ? ['--', ...args] : [])], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) =>
    child.once('close', (code) => {
      if (code !== 0)
        return reject(new Error(`npm run bench exited ${code}:\n${out.slice(-2000)}\n${err.slice(-2000)}`));
      const last = out.trim().split('\n').pop() ?? '';
      resolve(JSON.parse(last) as Record<string, unknown>);
    }),
  );
}

const TINY = {
  BENCH_USERS: '20',
  BENCH_APPS: '2',
  BENCH_CONCURRENCY: '10',
  BENCH_INGEST_SECONDS: '1',
  BENCH_LATENESS_JOBS: '40',
  BENCH_LATENESS_DELAY_S: '3',
  BENCH_JITTER_S: '1',
  BENCH_RATE_JOBS: '30',
  BENCH_RATE_MAX: '10',
  BENCH_SCALE_JOBS: '40',
  BENCH_MEMORY_EVENTS: '50',
  BENCH_SOAK_JOBS: '200',
  BENCH_CLUSTER_USERS: '20',
};

// So the benchmark cannot rot: every phase runs and reports its figures (the values are the
// machine's; only their presence and sanity are checked here).
describe('npm run bench', () => {
  it('ends with one JSON line holding every figure, and --soak with the soak figures', async () => {
    const figures = await bench([], TINY);
    for (const key of [
      'fanoutRatio',
      'redisCommandsPerDelivery',
      'baselineRedisCommandsPerJob',
      'ingestRatio',
      'ingestAlwaysPerSec',
      'ingestEverysecPerSec',
      'durabilityRatio',
      'latenessP99Ms',
      'baselineLatenessP99Ms',
      'latenessRatio',
      'jitterLatenessP99Ms',
      'rateLimitedSeconds',
      'rateLimitedPeakPerWindow',
      'gateCallsPerJob',
      'scaleOutRatio',
      'clusterRatio',
      'redisBytesPerPendingJob',
      'baselineBytesPerPendingJob',
    ]) {
      expect(typeof figures[key], key).toBe('number');
      expect(Number.isFinite(figures[key]), key).toBe(true);
    }
    // The rate limit held: never more than max starts in one window.
    expect(figures.rateLimitedPeakPerWindow).toBeLessThanOrEqual(10);
    const soak = await bench(['--soak'], TINY);
    expect(soak).toMatchObject({ soakPendingJobs: 200 });
    expect(soak.soakRedisMB).toBeGreaterThan(0);
    expect(soak.soakPlanSeconds).toBeGreaterThan(0);
  }, 480_000);
});
