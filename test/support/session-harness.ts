import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { serviceSchema } from '../../src/config/schema.js';
import { type EmbeddedRedis, startEmbeddedRedis } from '../../src/redis/embedded.js';
import { SessionStore } from '../../src/sessions/store.js';
import { loadSigningKeys, type SigningKeys, signingRoutes, signingSchema } from '../../src/signing/index.js';
import { freePort } from '../../src/util/server-process.js';

export { appConfig, deliveryContext, passwordChange, silentLog } from './targets.js';

import { Vault } from '../../src/vault/vault.js';

/** A fresh RSA + EC key pair set, as ripple.yaml would name them (inline PEM). */
export function testSigningKeys(): SigningKeys {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signing = signingSchema.parse({
    keys: [
      { kid: 'rsa-1', privateKey: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
      { kid: 'ec-1', privateKey: ec.privateKey.export({ type: 'sec1', format: 'pem' }).toString() },
    ],
  });
  const keys = loadSigningKeys({ signing });
  if (!keys) throw new Error('no keys');
  return keys;
}

/** Ripple's public signing routes on a small fastify instance; `issuer` is its base URL. */
export async function startSigningServer(keys: SigningKeys): Promise<{ issuer: string; app: FastifyInstance }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const app = Fastify();
  await app.register(signingRoutes, { keys, issuer });
  await app.listen({ port, host: '127.0.0.1' });
  return { issuer, app };
}

export interface RegistryHarness {
  redis: Redis;
  embedded: EmbeddedRedis;
  vault: Vault;
  /** A fresh store under a unique prefix. */
  newStore(): { store: SessionStore; prefix: string };
  stop(): Promise<void>;
}

export async function startRegistry(): Promise<RegistryHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'ripple-sessions-'));
  const embedded = await startEmbeddedRedis({ dir, appendOnly: false });
  const redis = new Redis(embedded.url);
  const vaultKey = randomBytes(32);
  let n = 0;
  const vaultFor = (prefix: string) => new Vault(redis, prefix, { key: vaultKey, keyId: 'k1', ttl: 3_600_000 });
  const first = `t${process.pid}-${Date.now()}`;
  return {
    redis,
    embedded,
    vault: vaultFor(first),
    newStore() {
      const prefix = `t${process.pid}-${Date.now()}-${n++}`;
      return { store: new SessionStore(redis, prefix, vaultFor(prefix)), prefix };
    },
    async stop() {
      redis.disconnect();
      await embedded.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** ServiceConfig as the loader would produce it for a minimal ripple.yaml with `issuer`. */
export function serviceConfig(issuer: string) {
  return serviceSchema.parse({
    ingest: { secrets: [`whsec_${randomBytes(24).toString('base64')}`] },
    admin: { tokens: ['admin-token-0123456789'] },
    vault: { key: randomBytes(32).toString('base64') },
    issuer,
  });
}
