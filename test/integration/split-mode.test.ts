import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort } from '../../src/util/server-process.js';
import { exited, runCli, spawnRipple } from '../support/cli.js';
import { startTestRedis, webhookApp, writeConfig } from '../support/ripple.js';

let redis: EmbeddedRedis;
beforeAll(async () => {
  redis = await startTestRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const ldapApp = {
  id: 'corp-ldap',
  kind: 'ldap',
  retry: { attempts: 3 },
  ldap: {
    url: 'ldap://127.0.0.1:1',
    bindDN: 'cn=ripple,dc=example,dc=org',
    bindPassword: 'not-used-here',
    userDN: 'uid={username},dc=example,dc=org',
  },
};

describe('split mode (serve and worker processes)', () => {
  it.each([['serve'], ['worker']])(
    'ripple %s without REDIS_URL refuses to start, naming REDIS_URL',
    async (command) => {
      const dir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook')]);
      const res = await runCli([command], { RIPPLE_CONFIG: dir, REDIS_URL: '' });
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/needs a shared Redis: set REDIS_URL/);
      expect(res.stderr).toMatch(/ripple start/);
    },
  );

  it('worker --kind webhook runs and reports only the webhook kind', async () => {
    const dir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook'), ldapApp], { redis: { prefix: 'split' } });
    const worker = await spawnRipple(['worker', '--kind', 'webhook'], { RIPPLE_CONFIG: dir, REDIS_URL: redis.url });
    try {
      const up = worker
        .output()
        .split('\n')
        .find((l) => /ripple worker is up/.test(l));
      expect(JSON.parse(up ?? '{}')).toMatchObject({ kinds: ['webhook'] });
    } finally {
      worker.child.kill('SIGTERM');
      expect(await exited(worker.child)).toBe(0);
    }
  });

  it('ripple serve, which runs no delivery, says nothing of deliveries when it shuts down', async () => {
    const dir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook')], { redis: { prefix: 'split-serve' } });
    const serve = await spawnRipple(['serve'], {
      RIPPLE_CONFIG: dir,
      REDIS_URL: redis.url,
      PORT: String(await freePort()),
    });
    serve.child.kill('SIGTERM');
    expect(await exited(serve.child)).toBe(0);
    const lines = serve.output().split('\n');
    expect(lines.some((l) => /"msg":"shutting down"/.test(l))).toBe(true);
    expect(lines.filter((l) => /deliver/.test(l))).toEqual([]);
  });
});
