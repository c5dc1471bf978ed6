import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import type { ServerProcess } from '../../src/util/server-process.js';
import { freePort } from '../../src/util/server-process.js';
import { spawnRipple } from '../support/cli.js';
import { type Pysaml2Sp, startPysaml2Sp } from '../support/pysaml2.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  tempDir,
  writeConfig,
} from '../support/ripple.js';
import { startXmlsecSp, type XmlsecSp } from '../support/xmlsec-sp.js';

// `kind: saml` the way users run it: `bin/ripple.js start` as a process (tsx, ESM module
// loading, not vitest's), against service providers whose XML security is xmlsec1, and a
// pysaml2 SP over HTTP-POST.

let redis: EmbeddedRedis;
let ripple: ServerProcess;
let base: string;
let configDir: string;
let signing: XmlsecSp;
let wrapping: XmlsecSp;
let pysaml2: Pysaml2Sp;

beforeAll(async () => {
  redis = await startTestRedis();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const idpMetadataUrl = `${base}/saml/metadata`;
  signing = await startXmlsecSp({ idpMetadataUrl });
  wrapping = await startXmlsecSp({ idpMetadataUrl });
  wrapping.mode = 'wrapped';
  pysaml2 = await startPysaml2Sp(idpMetadataUrl);

  const spSettings = (sp: XmlsecSp) => ({
    entityID: sp.entityID,
    sloUrl: sp.sloUrl,
    cert: sp.certificatePath,
    binding: 'soap',
  });
  configDir = tempDir('saml-process');
  mkdirSync(join(configDir, 'keys'));
  writeFileSync(join(configDir, 'pysaml2-metadata.xml'), pysaml2.metadata);
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(configDir, 'keys', 'ripple.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeConfig(
    [
      { id: 'xmlsec-signed', kind: 'saml', saml: { sp: spSettings(signing), requireSignedResponse: true } },
      { id: 'xmlsec-wrapped', kind: 'saml', saml: { sp: spSettings(wrapping) } },
      {
        id: 'pysaml2-post',
        kind: 'saml',
        saml: { sp: { metadata: './pysaml2-metadata.xml', binding: 'post' }, requireSignedResponse: true },
      },
    ],
    { issuer: base, signing: { keys: [{ kid: 'rsa-1', privateKey: './keys/ripple.key' }] } },
    configDir,
  );
  ripple = await spawnRipple(['start'], { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url, PORT: String(port) });
}, 60_000);

afterAll(async () => {
  await ripple?.stop();
  await signing?.stop();
  await wrapping?.stop();
  await pysaml2?.stop();
  await redis?.stop();
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };

async function recordSession(app: string, username: string, sessionIndex: string, createdAt: Date) {
  const res = await fetch(`${base}/v1/sessions`, {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({ app, username, sessionIndex, createdAt: createdAt.toISOString() }),
  });
  expect(res.status, await res.clone().text()).toBe(201);
}

async function emit(username: string): Promise<string> {
  const payload = JSON.stringify(passwordChanged(username));
  const id = `evt_${randomUUID()}`;
  const res = await fetch(`${base}/v1/events`, {
    method: 'POST',
    body: payload,
    headers: signedHeaders(payload, { id }),
  });
  expect(res.status, await res.clone().text()).toBe(202);
  return id;
}

async function settled(eventId: string): Promise<EventStatus> {
  const deadline = Date.now() + 30_000;
  let last: EventStatus | undefined;
  while (Date.now() < deadline) {
    const res = await fetch(`${base}/v1/events/${eventId}`, { headers: admin });
    if (res.ok) {
      last = (await res.json()) as EventStatus;
      if (last.apps.length > 0 && last.apps.every((a) => ['done', 'failed', 'skipped'].includes(a.state))) return last;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`event ${eventId} did not settle: ${JSON.stringify(last?.apps)}\n${ripple.output().slice(-3000)}`);
}

describe('kind: saml through bin/ripple.js start', () => {
  it('SPs that sign their LogoutResponses (xmlsec1 over SOAP, pysaml2 over POST): done, each verified the request and ended the session; a wrapped response fails the app', async () => {
    const changedAt = new Date();
    const before = new Date(changedAt.getTime() - 60_000);
    signing.sessions.set('idx-signed-1', 'alice@example.org');
    wrapping.sessions.set('idx-wrapped-1', 'alice@example.org');
    await recordSession('xmlsec-signed', 'alice', 'idx-signed-1', before);
    await recordSession('xmlsec-wrapped', 'alice', 'idx-wrapped-1', before);
    await pysaml2.addSession('idx-py-1', 'alice@example.org');
    await recordSession('pysaml2-post', 'alice', 'idx-py-1', before);

    const status = await settled(await emit('alice'));
    const row = (app: string) => status.apps.find((a) => a.app === app);

    expect(row('xmlsec-signed'), ripple.output().slice(-2000)).toMatchObject({ state: 'done', lastError: null });
    expect(signing.verified).toMatchObject([
      { issuer: base, nameId: 'alice@example.org', sessionIndexes: ['idx-signed-1'] },
    ]);
    expect(signing.sessions.has('idx-signed-1')).toBe(false);

    expect(row('pysaml2-post')).toMatchObject({ state: 'done', lastError: null });
    const py = await pysaml2.state();
    expect(py.log).toMatchObject([
      { verified: true, binding: 'post', issuer: base, nameId: 'alice@example.org', sessionIndexes: ['idx-py-1'] },
    ]);
    expect(py.sessions['idx-py-1']).toBeUndefined();

    // The SP answered Responder (signed) and ended nothing; the unsigned Success around it must not count.
    expect(wrapping.verified).toHaveLength(1);
    expect(wrapping.sessions.get('idx-wrapped-1')).toBe('alice@example.org');
    expect(row('xmlsec-wrapped')).toMatchObject({ state: 'failed' });
    expect(row('xmlsec-wrapped')?.lastError).toMatch(/^SAML_RESPONSE_SIGNATURE_PLACEMENT: /);
  });
});
