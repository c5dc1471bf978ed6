import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BYTES_PER_PENDING_JOB, type Forecast } from '../../src/simulate/simulate.js';
import { runCli } from '../support/cli.js';
import { tempDir, webhookApp, writeConfig } from '../support/ripple.js';

// Something listening where the config's target and REDIS_URL point: simulate must reach neither.
let targetHits = 0;
let redisConnections = 0;
const target = createHttpServer((_req, res) => {
  targetHits++;
  res.writeHead(204).end();
});
const redis = createTcpServer((socket) => {
  redisConnections++;
  socket.destroy();
});
let targetUrl = '';
let redisUrl = '';
beforeAll(async () => {
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => redis.listen(0, '127.0.0.1', r));
  targetUrl = `http://127.0.0.1:${(target.address() as { port: number }).port}/hook`;
  redisUrl = `redis://127.0.0.1:${(redis.address() as { port: number }).port}`;
});
afterAll(() => {
  target.close();
  redis.close();
});

/** audit: 10/s for everyone; siem waits on audit (due at 5 s); eng-only: group eng, 1 min ± 10 s; old: disabled. */
function config() {
  return writeConfig([
    webhookApp('audit', targetUrl, { rateLimit: { max: 10, per: '1s' } }),
    webhookApp('siem', targetUrl, { delay: '5s', after: ['audit'] }),
    webhookApp('eng-only', targetUrl, { delay: '1m', jitter: '10s', assign: { groups: ['eng'] } }),
    webhookApp('old', targetUrl, { enabled: false }),
  ]);
}

function groupsFile(text: string): string {
  const file = join(tempDir('groups'), 'users.csv');
  writeFileSync(file, text);
  return file;
}

const FOUR_USERS = '# exported from the directory\nusername,groups\nalice,eng;ops\nbob,sales\n\ncarol, eng\ndave\n';

describe('ripple simulate', () => {
  it('forecasts per app when the last job starts, who runs late and by how much, and Redis at the peak', async () => {
    const file = groupsFile(FOUR_USERS);
    const env = { RIPPLE_CONFIG: config(), REDIS_URL: redisUrl };
    const res = await runCli(['simulate', '--users', '100', '--groups-file', file, '--json'], env);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const forecast = JSON.parse(res.stdout) as Forecast;
    const app = (id: string) => forecast.apps.find((a) => a.id === id);
    expect(forecast.users).toBe(100);
    expect(forecast.apps.map((a) => a.id).sort()).toEqual(['audit', 'eng-only', 'siem']); // the disabled app is not run
    // 100 jobs at 10 per 1 s window: the last ten start 9 s after the reset, due at once.
    expect(app('audit')).toMatchObject({
      jobs: 100,
      peakPerSecond: 10,
      lastDueMs: 0,
      lastStartMs: 9_000,
      lateByMs: 9_000,
    });
    // Due at 5 s, but it waits on audit: the users whose audit job starts at 6-9 s make it 4 s late.
    expect(app('siem')).toMatchObject({
      jobs: 100,
      peakPerSecond: null,
      lastDueMs: 5_000,
      lastStartMs: 9_000,
      lateByMs: 4_000,
    });
    // The file is a sample of 4 repeated to 100: alice and carol (eng) are half of them.
    const eng = app('eng-only');
    expect(eng).toMatchObject({ jobs: 50, lateByMs: 0 });
    expect(eng?.lastDueMs).toBeGreaterThanOrEqual(50_000);
    expect(eng?.lastDueMs).toBeLessThanOrEqual(70_000);
    expect(eng?.lastStartMs).toBe(eng?.lastDueMs);
    // Every job is pending at the instant of the reset.
    expect(forecast.redis).toEqual({
      peakPendingJobs: 250,
      bytesPerPendingJob: BYTES_PER_PENDING_JOB,
      peakBytes: 250 * BYTES_PER_PENDING_JOB,
    });
    expect(targetHits).toBe(0);
    expect(redisConnections).toBe(0);
  }, 120_000);

  it('prints a table, names the late apps, and spreads changes with --over', async () => {
    const env = { RIPPLE_CONFIG: config(), REDIS_URL: redisUrl };
    const res = await runCli(['simulate', '--users', '100'], env);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/audit\s+webhook\s+100\s+10\/1s\s+10\/s\s+0\s+\+0\s+\+9s\s+9s/);
    expect(res.stdout).toMatch(/eng-only\s+webhook\s+0\s+-\s+unlimited\s+1m ±10s\s+-\s+-\s+-/);
    expect(res.stdout).toContain('late: audit by up to 9s');
    expect(res.stdout).toContain('siem by up to 4s');
    expect(res.stdout).toContain('in no group');
    expect(res.stdout).toMatch(/Redis at the peak: 200 pending app jobs/);
    // 100 changes over 100 s: one a second, well under audit's 10/s, so nothing is late.
    const spread = await runCli(['simulate', '--users', '100', '--over', '100s', '--json'], env);
    const forecast = JSON.parse(spread.stdout) as Forecast;
    expect(forecast.apps.every((a) => a.lateByMs === 0)).toBe(true);
    expect(forecast.apps.find((a) => a.id === 'siem')?.lastStartMs).toBe(99_000 + 5_000);
    expect(forecast.redis.peakPendingJobs).toBeLessThan(20);
    expect(targetHits).toBe(0);
    expect(redisConnections).toBe(0);
  }, 120_000);

  it('refuses a bad groups file naming the file, the line and why, and a bad command line with exit 2', async () => {
    const env = { RIPPLE_CONFIG: config() };
    const comma = groupsFile('alice,eng\neve,eng,ops\n');
    let res = await runCli(['simulate', '--groups-file', comma], env);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`${comma}:2: more than one comma (separate groups with ;)`);
    const twice = groupsFile('alice,eng\nbob\nALICE,ops\n');
    res = await runCli(['simulate', '--groups-file', twice], env);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`${twice}:3: user "ALICE" is already on line 1`);
    for (const args of [
      ['--users', 'many'],
      ['--users', '5', '--over', '5'],
    ]) {
      res = await runCli(['simulate', ...args], env);
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/ripple: (--users|--over)/);
    }
  }, 180_000);
});
