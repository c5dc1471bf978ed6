import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort } from '../../src/util/server-process.js';
import { runCli } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  startReceiver,
  startRipple,
  startTestRedis,
  tempDir,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';

const URL = 'http://127.0.0.1:9/hook';

/** One Redis for the commands that need one (emit, probe). */
let redis: EmbeddedRedis;
beforeAll(async () => {
  redis = await startTestRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe('ripple config check', () => {
  it('lists the apps it would run', async () => {
    const dir = writeConfig([
      webhookApp('corp-audit', URL, { delay: '15m', jitter: '30s', assign: { groups: ['eng'] } }),
      webhookApp('siem', URL, { after: ['corp-audit'], enabled: false }),
    ]);
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('OK, 2 app(s)');
    expect(res.stdout).toMatch(/corp-audit\s+webhook\s+revoke\s+15m\s+30s\s+-\s+groups: eng\s+yes/);
    expect(res.stdout).toMatch(/siem\s+webhook\s+revoke\s+0\s+0\s+corp-audit\s+all\s+no/);
  });

  it('exits 1 naming file, key and reason', async () => {
    const dir = writeConfig([]);
    mkdirSync(join(dir, 'apps'), { recursive: true });
    writeFileSync(
      join(dir, 'apps', 'hr.yaml'),
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
      'id: hr\nkind: webhook\ndelay: later\nwebhook: { url: "http://x", secret: "${HR_SECRET}" }\n',
    );
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/apps\/hr\.yaml: webhook\.secret: environment variable HR_SECRET is not set/);
  });

  it('ripple start refuses a bad config before starting anything', async () => {
    const dir = writeConfig([webhookApp('a', URL, { after: ['ghost'] })]);
    const res = await runCli(['start'], { RIPPLE_CONFIG: dir, REDIS_URL: 'redis://127.0.0.1:1' });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/apps\/a\.yaml: after\[0\]: no app has id "ghost"/);
  });
});

describe('ripple plan', () => {
  it('shows each app, when it is due and what it waits on, without Redis', async () => {
    const dir = writeConfig([
      webhookApp('ldap-ish', URL),
      webhookApp('wifi-ish', URL, { after: ['ldap-ish'], delay: '5m' }),
      webhookApp('ops-tool', URL, { assign: { groups: ['ops'] } }),
    ]);
    const res = await runCli(['plan', '--user', 'alice', '--groups', 'eng', '--at', '2026-11-27T07:00:00Z'], {
      RIPPLE_CONFIG: dir,
      REDIS_URL: 'redis://127.0.0.1:1',
    });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/1\s+ldap-ish\s+webhook\s+revoke\s+2026-11-27T07:00:00.000Z\s+\+0\s+-/);
    expect(res.stdout).toMatch(/2\s+wifi-ish\s+webhook\s+revoke\s+2026-11-27T07:05:00.000Z\s+\+5m\s+ldap-ish/);
    expect(res.stdout).not.toContain('ops-tool');
  });
});

describe('ripple start without Redis', () => {
  it('says in one line how to install redis-server or set REDIS_URL', async () => {
    const dir = writeConfig([webhookApp('a', URL)]);
    const res = await runCli(['start'], {
      RIPPLE_CONFIG: dir,
      REDIS_URL: '',
      RIPPLE_DATA_DIR: tempDir('data'),
      PATH: '/nonexistent',
    });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /redis-server not found\. Install it: apt-get install -y redis-server .* or set REDIS_URL/,
    );
  });
});

describe('ripple emit', () => {
  it('signs and sends an event a running Ripple accepts, password from stdin', async () => {
    const rx = await startReceiver();
    const apps = [webhookApp('audit', rx.url)];
    const configDir = writeConfig(apps);
    const t = await startRipple({ redisUrl: redis.url, apps, configDir });
    try {
      const address = await t.http.listen({ port: 0, host: '127.0.0.1' });
      const res = await runCli(
        ['emit', '--user', 'alice', '--groups', 'eng', '--password-stdin', '--url', address],
        {
          RIPPLE_CONFIG: configDir,
        },
        'n3w-Passw0rd\n',
      );
      expect(res.stdout).toMatch(/^HTTP 202 /);
      expect(res.code).toBe(0);
      const eventId = JSON.parse(res.stdout.replace(/^HTTP 202 /, '')).eventId as string;
      await t.waitForEvent(eventId, ['done']);
      const view = await t.http.inject({
        url: '/v1/users/alice/propagation',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(view.json()).toMatchObject({ latestEventId: eventId, apps: [{ app: 'audit', state: 'done' }] });
    } finally {
      await t.close();
      await rx.close();
    }
  });
});

describe('ripple probe', () => {
  it('reports each enabled app as reachable or not, and exits 1 when one is not', async () => {
    const rx = await startReceiver();
    try {
      const closed = await freePort();
      const dir = writeConfig([webhookApp('alive', rx.url), webhookApp('dead', `http://127.0.0.1:${closed}/hook`)]);
      const res = await runCli(['probe'], { RIPPLE_CONFIG: dir, REDIS_URL: redis.url });
      expect(res.stdout).toMatch(/alive\s+yes\s+HEAD http:\/\/127\.0\.0\.1:\d+\/hook → HTTP/);
      expect(res.stdout).toContain(`http://127.0.0.1:${closed}/hook: ECONNREFUSED`);
      expect(res.stdout).toMatch(/dead\s+NO\s+/);
      expect(res.code).toBe(1);
      const one = await runCli(['probe', '--app', 'alive'], { RIPPLE_CONFIG: dir, REDIS_URL: redis.url });
      expect(one.code).toBe(0);
      expect(one.stdout).not.toContain('dead');
    } finally {
      await rx.close();
    }
  });
});

describe('ripple emit against a server that is not running', () => {
  it('names the URL and the reason', async () => {
    const dir = writeConfig([webhookApp('audit', URL)]);
    const closed = await freePort();
    const res = await runCli(['emit', '--user', 'alice'], {
      RIPPLE_CONFIG: dir,
      HOST: '127.0.0.1',
      PORT: String(closed),
    });
    expect(res.code).toBe(1);
    expect(res.stderr.trim()).toBe(`ripple: cannot reach http://127.0.0.1:${closed}/v1/events: ECONNREFUSED`);
  });

  it('documents its flags and their defaults in the usage text', async () => {
    const res = await runCli(['help']);
    expect(res.stdout).toMatch(/--id ID\s+user\.id .*default: the --user name/);
    expect(res.stdout).toMatch(/--source S\s+.*default: admin/);
    expect(res.stdout).toMatch(/--url URL\s+.*default: http:\/\/\$HOST:\$PORT/);
  });
});

describe('development secrets', () => {
  it('ripple start on a non-loopback address refuses the example config’s fallback secrets, naming each key and variable', async () => {
    const example = join(import.meta.dirname, '..', '..', 'config');
    const unset = { RIPPLE_WEBHOOK_SECRET: '', RIPPLE_ADMIN_TOKEN: '', RIPPLE_VAULT_KEY: '', AUDIT_WEBHOOK_SECRET: '' };
    const res = await runCli(['start'], {
      ...unset,
      RIPPLE_CONFIG: example,
      HOST: '0.0.0.0',
      REDIS_URL: 'redis://127.0.0.1:1',
    });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 with development secrets/);
    expect(res.stderr).toMatch(/ripple\.yaml: ingest\.secrets\[0\] .*set RIPPLE_WEBHOOK_SECRET/);
    expect(res.stderr).toMatch(/ripple\.yaml: admin\.tokens\[0\] .*set RIPPLE_ADMIN_TOKEN/);
    expect(res.stderr).toMatch(/ripple\.yaml: vault\.key .*set RIPPLE_VAULT_KEY/);
    expect(res.stderr).toMatch(/audit-webhook\.yaml: webhook\.secret .*set AUDIT_WEBHOOK_SECRET/);
    expect(res.stderr).not.toMatch(/cannot reach Redis/);
  });
});

describe('the command line, refused before anything starts', () => {
  it.each([
    [['config', 'check', 'extra'], /Unexpected argument 'extra'/],
    [['plan', '--user', 'alice', '--at', '1'], /--at "1" is not an ISO 8601 date-time/],
    [['worker', '--metrics-port', 'abc'], /--metrics-port "abc" is not a port number/],
    [['emit', '--user', 'alice', '--url', 'not a url'], /--url "not a url" is not a URL/],
  ])('ripple %j', async (args, message) => {
    const dir = writeConfig([webhookApp('audit', URL)]);
    const res = await runCli(args, { RIPPLE_CONFIG: dir, REDIS_URL: 'redis://127.0.0.1:1' });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(res.stderr).not.toMatch(/cannot reach Redis/);
  });
});

describe('ripple emit: where it sends', () => {
  it('keeps the path of --url (a Ripple behind a reverse proxy at /ripple)', async () => {
    const paths: string[] = [];
    const proxy = createServer((req, res) => {
      paths.push(req.url ?? '');
      req.resume().on('end', () => res.writeHead(202, { 'content-type': 'application/json' }).end('{"eventId":"x"}'));
    });
    const port = await freePort();
    await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', r));
    try {
      const res = await runCli(['emit', '--user', 'alice', '--url', `http://127.0.0.1:${port}/ripple`], {
        RIPPLE_CONFIG: writeConfig([]),
      });
      expect(res.code).toBe(0);
      expect(paths).toEqual(['/ripple/v1/events']);
    } finally {
      proxy.close();
    }
  });

  it('reaches a Ripple listening on HOST=::1 (an IPv6 address in the default URL)', async () => {
    const apps = [webhookApp('audit', URL, { delay: '1h' })];
    const configDir = writeConfig(apps);
    const t = await startRipple({ redisUrl: redis.url, apps, configDir, workers: false });
    try {
      const port = await freePort();
      await t.http.listen({ port, host: '::1' });
      const res = await runCli(['emit', '--user', 'alice'], {
        RIPPLE_CONFIG: configDir,
        HOST: '::1',
        PORT: String(port),
      });
      expect(res.stderr).toBe('');
      expect(res.stdout).toMatch(/^HTTP 202 /);
    } finally {
      await t.close();
    }
  });
});
