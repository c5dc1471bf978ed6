import { randomUUID } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { exited, runCli, spawnRipple } from '../support/cli.js';
import { ADMIN_TOKEN, passwordChanged, signedHeaders, tempDir, webhookApp, writeConfig } from '../support/ripple.js';

/** Every live redis-server process whose working directory (Redis chdirs to its `dir`) is `dir`. */
function redisServersServing(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'redis-server') continue;
      if (readlinkSync(`/proc/${entry}/cwd`) === dir) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const roots: string[] = [];
const processes: ServerProcess[] = [];
/** `ripple start` in `cwd`, killed after the tests if a failed assertion left it running. */
async function start(env: NodeJS.ProcessEnv, cwd: string) {
  const p = await spawnRipple(['start'], env, { cwd });
  processes.push(p);
  return p;
}
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => exited(p.child)));
  // A failed test may leave a redis-server behind: stop every one serving our temp dirs.
  for (const root of roots) {
    for (const dir of [
      join(root, 'var', 'cfg', 'redis'),
      join(root, 'var', 'cfg-a', 'redis'),
      join(root, 'var', 'cfg-b', 'redis'),
    ]) {
      for (const pid of redisServersServing(dir)) process.kill(pid, 'SIGKILL');
    }
    rmSync(root, { recursive: true, force: true });
  }
});

function home() {
  const root = tempDir('ripple-home');
  roots.push(root);
  return root;
}

async function api(url: string) {
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  return {
    async send(username: string) {
      const payload = JSON.stringify(passwordChanged(username));
      const res = await fetch(`${url}/v1/events`, {
        method: 'POST',
        body: payload,
        headers: signedHeaders(payload, { id: `evt_${randomUUID()}` }),
      });
      expect(res.status).toBe(202);
      return ((await res.json()) as { eventId: string }).eventId;
    },
    async status(id: string) {
      return (await (await fetch(`${url}/v1/events/${id}`, { headers: auth })).json()) as {
        state: string;
        apps: { app: string; state: string }[];
      };
    },
    /** The event once planned. */
    async planned(id: string) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const s = await this.status(id);
        if (s.apps.length > 0 || Date.now() > deadline) return s;
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async propagation(username: string) {
      return fetch(`${url}/v1/users/${username}/propagation`, { headers: auth });
    },
    async metrics() {
      return (await fetch(`${url}/metrics`, { headers: auth })).text();
    },
  };
}

describe('ripple start without REDIS_URL', () => {
  it('after kill -9 the next start adopts the redis-server left behind (never a second one) and pending work survives; the last Ripple to stop stops it', async () => {
    const root = home();
    const configDir = writeConfig(
      [webhookApp('much-later', 'http://127.0.0.1:9/hook', { delay: '1h' })],
      {},
      join(root, 'cfg'),
    );
    const dataDir = join(root, 'var', 'cfg', 'redis');
    const port = await freePort();
    const env = { RIPPLE_CONFIG: configDir, REDIS_URL: '', RIPPLE_DATA_DIR: '', PORT: String(port) };
    const http = await api(`http://127.0.0.1:${port}`);

    const first = await start(env, root);
    const eventId = await http.send('alice');
    expect((await http.planned(eventId)).apps).toEqual([
      expect.objectContaining({ app: 'much-later', state: 'scheduled' }),
    ]);
    const [orphan] = redisServersServing(dataDir);
    expect(orphan).toBeGreaterThan(0);
    first.child.kill('SIGKILL');
    await exited(first.child);
    // Nothing stops a child when its parent is killed: the redis-server is still there, alone.
    expect(redisServersServing(dataDir)).toEqual([orphan]);

    const second = await start(env, root);
    try {
      expect(redisServersServing(dataDir)).toEqual([orphan]);
      expect(second.output()).toMatch(/adopted the embedded redis-server/);
      const s = await http.status(eventId);
      expect(s.state).toBe('scheduled');
      expect(await http.metrics()).toContain('ripple_queue_jobs{queue="deliver-webhook",state="delayed"} 1');
      // The appendonly file is the one AOF, fsynced on every write by default.
      const redis = new Redis(join(dataDir, 'redis.sock'));
      expect(await redis.config('GET', 'appendfsync')).toEqual(['appendfsync', 'always']);
      redis.disconnect();

      // probe takes the same path: it shares the running server and leaves it to the Ripple using it.
      const probe = await runCli(['probe'], env);
      expect(probe.stdout).toMatch(/much-later\s+NO/);
      expect(redisServersServing(dataDir)).toEqual([orphan]);
      expect((await http.status(eventId)).state).toBe('scheduled');
    } finally {
      second.child.kill('SIGTERM');
      expect(await exited(second.child)).toBe(0);
    }
    expect(redisServersServing(dataDir)).toEqual([]);
    expect(existsSync(join(dataDir, 'appendonlydir'))).toBe(true);
  });

  it('keeps each config’s data beside it: two configs run from one directory never see each other’s events, and work left for a removed app is reported at start', async () => {
    const root = home();
    const a = writeConfig([webhookApp('app-a', 'http://127.0.0.1:9/hook', { delay: '1h' })], {}, join(root, 'cfg-a'));
    const b = writeConfig(
      [webhookApp('app-b', 'http://127.0.0.1:9/hook', { delay: '1h' })],
      { redis: { durability: 'everysec' } },
      join(root, 'cfg-b'),
    );
    const [portA, portB] = [await freePort(), await freePort()];
    const envA = { RIPPLE_CONFIG: a, REDIS_URL: '', RIPPLE_DATA_DIR: '', PORT: String(portA) };
    const envB = { RIPPLE_CONFIG: b, REDIS_URL: '', RIPPLE_DATA_DIR: '', PORT: String(portB) };
    const httpA = await api(`http://127.0.0.1:${portA}`);
    const httpB = await api(`http://127.0.0.1:${portB}`);
    const ripA = await start(envA, root);
    let ripB = await start(envB, root);
    try {
      await httpA.send('alice');
      expect((await httpB.propagation('alice')).status).toBe(404);
      const dirA = join(root, 'var', 'cfg-a', 'redis');
      const dirB = join(root, 'var', 'cfg-b', 'redis');
      expect(redisServersServing(dirA)).toHaveLength(1);
      expect(redisServersServing(dirB)).toHaveLength(1);
      const redisB = new Redis(join(dirB, 'redis.sock'));
      expect(await redisB.config('GET', 'appendfsync')).toEqual(['appendfsync', 'everysec']);
      redisB.disconnect();

      // Pointing another config at A's data is refused, naming the owner.
      const borrowed = await runCli(['start'], { ...envB, RIPPLE_DATA_DIR: dirA, PORT: String(await freePort()) });
      expect(borrowed.code).toBe(1);
      expect(borrowed.stderr).toContain(`${dirA} holds the embedded Redis of config ${a}`);

      // B's app is removed while an event still waits for it: the next start says so.
      await httpB.planned(await httpB.send('bob'));
      ripB.child.kill('SIGTERM');
      expect(await exited(ripB.child)).toBe(0);
      unlinkSync(join(b, 'apps', 'app-b.yaml'));
      writeConfig([webhookApp('app-c', 'http://127.0.0.1:9/hook')], { redis: { durability: 'everysec' } }, b);
      ripB = await start(envB, root);
      expect(ripB.output()).toMatch(/"app":"app-b","kind":"webhook","jobs":1.*no longer in the config/);
    } finally {
      ripA.child.kill('SIGTERM');
      ripB.child.kill('SIGTERM');
      await Promise.all([exited(ripA.child), exited(ripB.child)]);
    }
  });
});

describe('moving a config with its data, as the README says', () => {
  const app = webhookApp('audit', 'http://127.0.0.1:9/hook', { delay: '1h' });
  /** Starts Ripple, sends one change, stops it: the data directory now holds that event. */
  async function startSendStop(env: NodeJS.ProcessEnv, cwd: string, send = true) {
    const port = await freePort();
    const ripple = await start({ ...env, PORT: String(port) }, cwd);
    const http = await api(`http://127.0.0.1:${port}`);
    const eventId = send ? await http.send('alice') : undefined;
    if (eventId) await http.planned(eventId);
    const status = eventId ? undefined : await (await http.propagation('alice')).json();
    ripple.child.kill('SIGTERM');
    expect(await exited(ripple.child)).toBe(0);
    return { eventId, status, output: ripple.output() };
  }

  it('config and var/ moved together, or the config alone with RIPPLE_DATA_DIR: starts on its data; a second live config is still refused', async () => {
    const before = home();
    writeConfig([app], {}, join(before, 'cfg'));
    const env = { REDIS_URL: '', RIPPLE_DATA_DIR: '' };
    const { eventId } = await startSendStop({ ...env, RIPPLE_CONFIG: join(before, 'cfg') }, before);

    const after = `${before}-moved`;
    roots.push(after);
    renameSync(before, after); // cfg/ and var/cfg/redis/ move together
    const moved = await startSendStop({ ...env, RIPPLE_CONFIG: join(after, 'cfg') }, after, false);
    expect(moved.status).toMatchObject({ latestEventId: eventId });
    expect(moved.output).toMatch(/belonged to config .*-moved|no longer there/);

    mkdirSync(join(after, 'elsewhere'));
    renameSync(join(after, 'cfg'), join(after, 'elsewhere', 'cfg'));
    const dataDir = join(after, 'var', 'cfg', 'redis');
    const alone = await startSendStop(
      { ...env, RIPPLE_CONFIG: join(after, 'elsewhere', 'cfg'), RIPPLE_DATA_DIR: dataDir },
      after,
      false,
    );
    expect(alone.status).toMatchObject({ latestEventId: eventId });

    // The config it now belongs to exists: another one is refused.
    const other = writeConfig([app], {}, join(after, 'other'));
    const refused = await runCli(['start'], { ...env, RIPPLE_CONFIG: other, RIPPLE_DATA_DIR: dataDir });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`holds the embedded Redis of config ${join(after, 'elsewhere', 'cfg')}`);
  });
});

describe('the embedded redis-server dies under ripple start', () => {
  it('is started again on the same data; when it keeps dying Ripple exits 1 saying why, never that it left a dead server running', async () => {
    const root = home();
    const configDir = writeConfig(
      [webhookApp('audit', 'http://127.0.0.1:9/hook', { delay: '1h' })],
      { workers: { drainTimeout: '1s' } },
      join(root, 'cfg'),
    );
    const dataDir = join(root, 'var', 'cfg', 'redis');
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const ripple = await start(
      { RIPPLE_CONFIG: configDir, REDIS_URL: '', RIPPLE_DATA_DIR: '', PORT: String(port) },
      root,
    );
    const http = await api(url);
    const eventId = await http.send('alice');
    await http.planned(eventId);
    /** Kills the server serving the data dir, then waits until Ripple started the next one (or exited). */
    const killServer = async () => {
      const [pid] = redisServersServing(dataDir);
      expect(pid).toBeGreaterThan(0);
      process.kill(pid as number, 'SIGKILL'); // an OOM kill, a crash
      const deadline = Date.now() + 15_000;
      for (;;) {
        const next = new RegExp(`\\(pid ${pid}\\) exited .*started it again \\(pid (\\d+)\\)`).exec(ripple.output());
        if (next || ripple.child.exitCode !== null || Date.now() > deadline) return Number(next?.[1]);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    const restarted = await killServer();
    expect(restarted).toBeGreaterThan(0);
    const deadline = Date.now() + 10_000;
    while ((await fetch(`${url}/readyz`)).status !== 200) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(ripple.output()).toMatch(/the embedded redis-server \(pid \d+\) exited .*started it again/);
    expect((await http.status(eventId)).state).toBe('scheduled'); // the data survived (AOF, fsync always)

    // A crash loop: after 3 restarts within 10 minutes, Ripple stops for its supervisor to act.
    for (let i = 0; i < 3; i++) await killServer();
    expect(await exited(ripple.child)).toBe(1);
    expect(ripple.output()).toMatch(/exited again .*4 times within 10 minutes.*Ripple stops \(exit 1\)/);
    expect(ripple.output()).not.toMatch(/left the embedded redis-server \(pid \d+\) running/);
    expect(ripple.output()).toMatch(/had already exited/);
    expect(redisServersServing(dataDir)).toEqual([]);
  });
});
