import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { SigningKeys } from '../../src/signing/index.js';
import { selfSignedCertificate } from '../../src/signing/x509.js';
import type { EngineServices } from '../../src/targets/adapter.js';
import { samlAdapter } from '../../workers/saml/index.js';
import { checkLogoutResponse } from '../../workers/saml/response.js';
import { soapEnvelope, soapFault } from '../../workers/saml/xml.js';
import { type Pysaml2Sp, startPysaml2Sp } from '../support/pysaml2.js';
import { SP_LOGIN_TOKEN, startTestSp, type TestSp } from '../support/saml-sp.js';
import {
  appConfig,
  deliveryContext,
  passwordChange,
  type RegistryHarness,
  serviceConfig,
  silentLog,
  startRegistry,
  startSigningServer,
  testSigningKeys,
} from '../support/session-harness.js';
import { deliveryFailure } from '../support/targets.js';
import { startXmlsecSp, type XmlsecSp } from '../support/xmlsec-sp.js';

let registry: RegistryHarness;
let keys: SigningKeys;
let ripple: { issuer: string; app: FastifyInstance };
let sp: TestSp;
let xmlsecSp: XmlsecSp;
let pysaml2: Pysaml2Sp;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ripple-saml-'));
  registry = await startRegistry();
  keys = testSigningKeys();
  ripple = await startSigningServer(keys);
  sp = await startTestSp({ idpMetadataUrl: `${ripple.issuer}/saml/metadata`, signResponses: true });
  writeFileSync(join(dir, 'sp-metadata.xml'), sp.metadata);
  xmlsecSp = await startXmlsecSp({ idpMetadataUrl: `${ripple.issuer}/saml/metadata` });
  pysaml2 = await startPysaml2Sp(`${ripple.issuer}/saml/metadata`);
  writeFileSync(join(dir, 'pysaml2-metadata.xml'), pysaml2.metadata);
});

afterAll(async () => {
  await sp?.stop();
  await xmlsecSp?.stop();
  await pysaml2?.stop();
  await ripple?.app.close();
  await registry?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function setup(settings: Record<string, unknown> = {}) {
  const { store, prefix } = registry.newStore();
  const services: EngineServices = {
    config: serviceConfig(ripple.issuer),
    redis: registry.redis,
    prefix,
    log: silentLog,
    sessions: store,
    signing: keys,
  };
  const app = appConfig(
    samlAdapter,
    'salesforce',
    {
      sp: { metadata: './sp-metadata.xml', binding: 'soap' },
      nameId: { format: 'emailAddress', value: '{email}' },
      ...settings,
    },
    'revoke',
    { configDir: dir },
  );
  return { store, services, app, target: samlAdapter.create(app, services) };
}

const user = (name: string) => ({ username: name, email: `${name}@example.org` });

/** The user signs in at the SP (a SAML session with this SessionIndex) and the IdP records it in Ripple. */
async function session(store: ReturnType<typeof setup>['store'], name: string, index: string, at: Date) {
  sp.sessions.set(index, `${name}@example.org`);
  await store.record({ app: 'salesforce', username: name, createdAt: at, sessionIndex: index });
}

/** Ripple's signing certificate as the SP sees it in /saml/metadata. */
async function metadataCertPem(): Promise<string> {
  const xml = await (await fetch(`${ripple.issuer}/saml/metadata`)).text();
  const b64 = /<(?:ds:)?X509Certificate>([^<]+)</.exec(xml)?.[1]?.replace(/\s+/g, '');
  if (!b64) throw new Error('no certificate in metadata');
  return `-----BEGIN CERTIFICATE-----\n${b64.replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;
}

function xmlsecVerifies(xml: string, certPem: string): boolean {
  writeFileSync(join(dir, 'req.xml'), xml);
  writeFileSync(join(dir, 'idp.crt'), certPem);
  try {
    execFileSync(
      'xmlsec1',
      [
        '--verify',
        '--pubkey-cert-pem',
        join(dir, 'idp.crt'),
        '--id-attr:ID',
        'urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest',
        join(dir, 'req.xml'),
      ],
      { stdio: 'pipe' },
    );
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error('xmlsec1 is not installed (apt-get install xmlsec1)');
    return false;
  }
}

describe('kind: saml against a samlify service provider over SOAP', () => {
  it('serves IdP metadata a samlify SP accepts: entityID = issuer, signing certificate, SLO and SSO services', async () => {
    const res = await fetch(`${ripple.issuer}/saml/metadata`);
    expect(res.headers.get('content-type')).toContain('application/samlmetadata+xml');
    const xml = await res.text();
    expect(xml).toContain(`entityID="${ripple.issuer}"`);
    expect(xml).toContain('SingleLogoutService');
    expect(xml).toContain('urn:oasis:names:tc:SAML:2.0:bindings:SOAP');
    expect(xml).toContain('SingleSignOnService');
    expect(xml).toMatch(/<(ds:)?X509Certificate>/);
    expect(xml).not.toMatch(/PRIVATE KEY/);
  });

  it('revoke: one signed LogoutRequest with the SessionIndex of each session opened before the change; a later session survives', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date(Date.now() - 60_000);
    await session(store, 'alice', 'idx-a1', new Date(changedAt.getTime() - 7_200_000));
    await session(store, 'alice', 'idx-a2', new Date(changedAt.getTime() - 1000));
    await session(store, 'alice', 'idx-a3', new Date(changedAt.getTime() + 30_000)); // new password, before the job ran
    const before = sp.received.length;

    const result = await target.deliver(deliveryContext(app, passwordChange(user('alice'), changedAt), services));

    expect(result.outcome).toBe('done');
    expect(result.warning).toBeUndefined();
    expect(result.detail).toContain('2 session(s) ended');
    expect(result.detail).toContain('1 later session(s) left alone');
    const got = sp.received.slice(before);
    expect(got).toHaveLength(1);
    const [req] = got;
    expect(req).toMatchObject({
      issuer: ripple.issuer,
      nameId: 'alice@example.org',
      nameIdFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
      sessionIndexes: ['idx-a1', 'idx-a2'],
      reason: 'urn:oasis:names:tc:SAML:2.0:logout:admin',
    });
    const notOnOrAfter = Date.parse(req?.notOnOrAfter ?? '');
    expect(notOnOrAfter).toBeGreaterThan(Date.now());
    expect(notOnOrAfter).toBeLessThanOrEqual(Date.now() + 5 * 60_000);
    // The SP ended exactly the old sessions.
    expect([...sp.sessions.entries()].filter(([, n]) => n === 'alice@example.org').map(([i]) => i)).toEqual(['idx-a3']);
    expect((await store.list('salesforce', 'alice')).map((s) => s.sessionIndex)).toEqual(['idx-a3']);
  });

  it('the LogoutRequest signature verifies independently (xmlsec1) against /saml/metadata; a tampered one is refused by the SP', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date();
    await session(store, 'bob', 'idx-b1', new Date(changedAt.getTime() - 1000));
    await target.deliver(deliveryContext(app, passwordChange(user('bob'), changedAt), services));
    const signed = sp.received.at(-1)?.xml ?? '';
    expect(signed).toContain('<ds:SignatureValue>');
    const cert = await metadataCertPem();
    expect(xmlsecVerifies(signed, cert)).toBe(true);

    const tampered = signed.replace('bob@example.org', 'mallory@example.org');
    expect(tampered).not.toBe(signed);
    expect(xmlsecVerifies(tampered, cert)).toBe(false);
    const refusedBefore = sp.refused.length;
    sp.sessions.set('idx-m1', 'mallory@example.org');
    const res = await fetch(sp.sloUrl, {
      method: 'POST',
      body: soapEnvelope(tampered),
      headers: { 'content-type': 'text/xml' },
    });
    expect(res.status).toBe(500);
    expect(await res.text()).toContain('Fault');
    expect(sp.refused.length).toBe(refusedBefore + 1);
    expect(sp.sessions.get('idx-m1')).toBe('mallory@example.org');

    // A request signed by a key that is not in the metadata is refused too.
    const rogue = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rogueKeys: SigningKeys = {
      ...keys,
      saml: {
        ...(keys.saml as NonNullable<SigningKeys['saml']>),
        privateKeyPem: rogue.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        certificatePem: selfSignedCertificate(rogue.privateKey, 'rogue'),
      },
    };
    const forger = samlAdapter.create(app, { ...services, signing: rogueKeys });
    await session(
      services.sessions as NonNullable<typeof services.sessions>,
      'mallory',
      'idx-m1',
      new Date(changedAt.getTime() - 1000),
    );
    await expect(
      forger.deliver(deliveryContext(app, passwordChange(user('mallory'), changedAt), services)),
    ).rejects.toBeInstanceOf(PermanentDeliveryError);
    expect(sp.refused.length).toBe(refusedBefore + 2);
    expect(sp.sessions.get('idx-m1')).toBe('mallory@example.org');
  });

  it('an SP answering Requester or Responder fails the app with that status; PartialLogout is done with a warning', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date();
    await session(store, 'carol', 'idx-c1', new Date(changedAt.getTime() - 1000));
    const ctx = () => deliveryContext(app, passwordChange(user('carol'), changedAt), services);
    try {
      sp.mode = 'requester';
      const err = await target.deliver(ctx()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermanentDeliveryError);
      expect((err as Error).message).toBe('the SP answered Requester/UnknownPrincipal: no such user here');
      // Nothing was ended, so the registry still has the session for an operator's retry.
      expect(await store.list('salesforce', 'carol')).toHaveLength(1);

      sp.mode = 'responder';
      await expect(target.deliver(ctx())).rejects.toThrow(/the SP answered Responder/);

      sp.mode = 'http500';
      await expect(target.deliver(ctx())).rejects.toBeInstanceOf(TransientDeliveryError);

      sp.mode = 'wrongInResponseTo';
      await expect(target.deliver(ctx())).rejects.toThrow(/InResponseTo "_someone-else" does not match/);

      await session(store, 'carol', 'idx-c2', new Date(changedAt.getTime() - 500));
      sp.mode = 'partial';
      const partial = await target.deliver(ctx());
      expect(partial.outcome).toBe('done');
      expect(partial.warning).toMatch(/PartialLogout/);
    } finally {
      sp.mode = 'ok';
    }
  });

  it('checks the signature of a signed LogoutResponse: a certificate that does not match fails the app', async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const manual = {
      sp: { entityID: sp.entityID, sloUrl: sp.sloUrl, binding: 'soap', cert: sp.certificatePem },
    };
    const good = setup(manual);
    const changedAt = new Date();
    await session(good.store, 'dave', 'idx-d1', new Date(changedAt.getTime() - 1000));
    const ok = await good.target.deliver(
      deliveryContext(good.app, passwordChange(user('dave'), changedAt), good.services),
    );
    expect(ok.outcome).toBe('done');

    const bad = setup({ sp: { ...manual.sp, cert: selfSignedCertificate(other.privateKey, 'not the sp') } });
    await session(bad.store, 'dave', 'idx-d2', new Date(changedAt.getTime() - 1000));
    const err = await bad.target
      .deliver(deliveryContext(bad.app, passwordChange(user('dave'), changedAt), bad.services))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermanentDeliveryError);
    expect((err as PermanentDeliveryError).code).toBe('SAML_RESPONSE_SIGNATURE');
  });

  it("binding post: the signed LogoutRequest goes as a form, the LogoutResponse comes back in the SP's form", async () => {
    const { store, services, app, target } = setup({ sp: { metadata: './sp-metadata.xml', binding: 'post' } });
    const changedAt = new Date();
    await session(store, 'hal', 'idx-h1', new Date(changedAt.getTime() - 1000));
    const before = sp.received.length;
    const result = await target.deliver(deliveryContext(app, passwordChange(user('hal'), changedAt), services));
    expect(result).toMatchObject({ outcome: 'done' });
    expect(result.warning).toBeUndefined();
    expect(sp.received.slice(before).map((r) => r.sessionIndexes)).toEqual([['idx-h1']]);
    expect(sp.sessions.has('idx-h1')).toBe(false);
  });

  it('binding post: an answer without a LogoutResponse (a login page, a redirect to one) fails the app; the sessions stay recorded', async () => {
    for (const mode of ['loginPage', 'loginRedirect'] as const) {
      for (const requireSignedResponse of [false, true]) {
        const { store, services, app, target } = setup({
          sp: { metadata: './sp-metadata.xml', binding: 'post' },
          requireSignedResponse,
        });
        const changedAt = new Date();
        await session(store, 'kim', `idx-k-${mode}`, new Date(changedAt.getTime() - 1000));
        sp.mode = mode;
        try {
          const err = await deliveryFailure(
            target.deliver(deliveryContext(app, passwordChange(user('kim'), changedAt), services)),
          );
          expect(err, `${mode}, requireSignedResponse: ${requireSignedResponse}`).toBeInstanceOf(
            PermanentDeliveryError,
          );
          expect(err.code).toBe('SAML_NO_LOGOUT_RESPONSE');
          expect(err.message).toMatch(/logout not confirmed/);
          expect(err.message).not.toContain(SP_LOGIN_TOKEN);
          // Nothing confirmed the logout: the session stays for an operator's retry.
          expect(await store.list('salesforce', 'kim')).toHaveLength(1);
          expect(sp.sessions.get(`idx-k-${mode}`)).toBe('kim@example.org');
        } finally {
          sp.mode = 'ok';
        }
      }
    }
  });

  it('an SP that does not sign its LogoutResponse: accepted by default, refused with requireSignedResponse', async () => {
    const unsigned = await startTestSp({ idpMetadataUrl: `${ripple.issuer}/saml/metadata`, signResponses: false });
    try {
      const spSettings = {
        entityID: unsigned.entityID,
        sloUrl: unsigned.sloUrl,
        binding: 'soap',
        cert: unsigned.certificatePem,
      };
      const lax = setup({ sp: spSettings, allowSubjectWide: true });
      const ok = await lax.target.deliver(
        deliveryContext(lax.app, passwordChange(user('ivy'), new Date()), lax.services),
      );
      expect(ok.outcome).toBe('done');
      const strict = setup({ sp: spSettings, allowSubjectWide: true, requireSignedResponse: true });
      await expect(
        strict.target.deliver(deliveryContext(strict.app, passwordChange(user('ivy'), new Date()), strict.services)),
      ).rejects.toThrow(/not signed/);
    } finally {
      await unsigned.stop();
    }
  });

  it('with no session recorded: a NameID-only request when allowed, else skipped; never when only a later session exists', async () => {
    const allowed = setup({ allowSubjectWide: true });
    const before = sp.received.length;
    sp.sessions.set('idx-e1', 'erin@example.org');
    const result = await allowed.target.deliver(
      deliveryContext(allowed.app, passwordChange(user('erin'), new Date()), allowed.services),
    );
    expect(result.outcome).toBe('done');
    expect(sp.received.slice(before).map((r) => r.sessionIndexes)).toEqual([[]]);
    expect(sp.sessions.has('idx-e1')).toBe(false);

    const strict = setup();
    const skipped = await strict.target.deliver(
      deliveryContext(strict.app, passwordChange(user('erin'), new Date()), strict.services),
    );
    expect(skipped).toMatchObject({ outcome: 'skipped' });
    expect(skipped.detail).toMatch(/no session recorded for erin/);

    const later = setup({ allowSubjectWide: true });
    const changedAt = new Date(Date.now() - 120_000);
    await session(later.store, 'fay', 'idx-f1', new Date(changedAt.getTime() + 60_000));
    const count = sp.received.length;
    const left = await later.target.deliver(
      deliveryContext(later.app, passwordChange(user('fay'), changedAt), later.services),
    );
    expect(left.outcome).toBe('skipped');
    expect(left.detail).toMatch(/opened after the change/);
    expect(sp.received.length).toBe(count);
    expect(sp.sessions.get('idx-f1')).toBe('fay@example.org');
  });

  it('an unreachable SP is retried; probe reports a live and a dead SLO endpoint', async () => {
    const dead = setup({
      sp: { entityID: 'https://dead.example', sloUrl: 'http://127.0.0.1:9/slo', binding: 'soap' },
      allowSubjectWide: true,
    });
    await expect(
      dead.target.deliver(deliveryContext(dead.app, passwordChange(user('gus'), new Date()), dead.services)),
    ).rejects.toBeInstanceOf(TransientDeliveryError);
    const probeDead = await dead.target.probe(AbortSignal.timeout(5000));
    expect(probeDead.ok).toBe(false);
    const live = await setup().target.probe(AbortSignal.timeout(5000));
    expect(live).toMatchObject({ ok: true });
    expect(live.detail).toContain(sp.sloUrl);
    expect(live.detail).toContain('sp-metadata.xml OK');

    // The SP's metadata file changed under a running Ripple (new certificate): probe says so.
    writeFileSync(join(dir, 'sp-probe.xml'), sp.metadata);
    const watched = setup({ sp: { metadata: './sp-probe.xml', binding: 'soap' } });
    expect((await watched.target.probe(AbortSignal.timeout(5000))).ok).toBe(true);
    const rotated = sp.metadata.replace(/<(ds:)?X509Certificate>[^<]+</, (_m, ds = '') => {
      const other = selfSignedCertificate(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 'rotated');
      const b64 = other.replace(/-----[^-]+-----|\s/g, '');
      return `<${ds}X509Certificate>${b64}<`;
    });
    writeFileSync(join(dir, 'sp-probe.xml'), rotated);
    const changed = await watched.target.probe(AbortSignal.timeout(5000));
    expect(changed).toMatchObject({ ok: false });
    expect(changed.detail).toMatch(/changed \(certificate\) since start-up/);
  });

  it('probe: an SLO URL with credentials and a token is probed with HTTP Basic auth, and shows neither', async () => {
    const basic = `Basic ${Buffer.from('slo-user:S3cret-Pass-9931').toString('base64')}`;
    const seen: (string | undefined)[] = [];
    // An SLO endpoint behind Basic auth: an empty SOAP envelope gets a Client Fault, as from a live SP.
    const server = createServer((req, res) => {
      seen.push(req.headers.authorization);
      req.resume();
      req.on('end', () => {
        if (req.headers.authorization !== basic) return res.writeHead(401, { 'www-authenticate': 'Basic' }).end();
        res.writeHead(500, { 'content-type': 'text/xml' }).end(soapFault('Client', 'no LogoutRequest in the Body'));
      });
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    const { port } = server.address() as AddressInfo;
    const probe = (password: string) =>
      setup({
        sp: {
          entityID: 'https://sp.example.org',
          sloUrl: `http://slo-user:${password}@127.0.0.1:${port}/slo?api_token=tok-4e1f0a2b7c9d`,
          binding: 'soap',
        },
        allowSubjectWide: true,
      }).target.probe(AbortSignal.timeout(5000));
    try {
      const ok = await probe('S3cret-Pass-9931');
      expect(ok).toMatchObject({ ok: true });
      expect(ok.detail).toContain('SOAP Fault: endpoint alive');
      expect(seen).toEqual([basic]);
      const wrong = await probe('wrong-Pass-0000');
      expect(wrong.ok).toBe(false);
      expect(wrong.detail).toMatch(/HTTP 401/);
      for (const detail of [ok.detail, wrong.detail]) {
        expect(detail).toContain(`http://***@127.0.0.1:${port}/slo`);
        expect(detail).not.toMatch(/S3cret-Pass-9931|wrong-Pass-0000|tok-4e1f0a2b7c9d/);
      }
    } finally {
      server.close();
    }
  });

  it('refuses bad settings at config load and start-up', () => {
    expect(() =>
      appConfig(samlAdapter, 'x', { sp: { metadata: './missing.xml' } }, 'revoke', { configDir: dir }),
    ).toThrow(/cannot read/);
    expect(() => appConfig(samlAdapter, 'x', { sp: { entityID: 'e' } }, 'revoke', { configDir: dir })).toThrow(
      /entityID and sloUrl/,
    );
    expect(() =>
      appConfig(
        samlAdapter,
        'x',
        { sp: { metadata: './sp-metadata.xml', binding: 'post' }, nameId: { value: '{mail}' } },
        'revoke',
        { configDir: dir },
      ),
    ).toThrow(/unknown placeholder \{mail\}/);
    expect(() =>
      appConfig(
        samlAdapter,
        'x',
        {
          sp: {
            entityID: 'e',
            sloUrl: 'https://sp.example/slo',
            cert: '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n',
          },
        },
        'revoke',
        { configDir: dir },
      ),
    ).toThrow(/"cert"[\s\S]*not a usable X\.509 certificate/);
    const { services, app } = setup();
    const ecOnly: SigningKeys = { ...keys, saml: undefined };
    expect(() => samlAdapter.create(app, { ...services, signing: ecOnly })).toThrow(/needs an RSA key/);
  });
});

describe('kind: saml: which signed LogoutResponses count (an xmlsec1 SP, independent of samlify)', () => {
  const xmlsecSettings = (extra: Record<string, unknown> = {}) => ({
    sp: { entityID: xmlsecSp.entityID, sloUrl: xmlsecSp.sloUrl, binding: 'soap', cert: xmlsecSp.certificatePem },
    ...extra,
  });
  async function deliverTo(name: string, extra: Record<string, unknown> = {}) {
    const { store, services, app, target } = setup(xmlsecSettings(extra));
    const changedAt = new Date();
    xmlsecSp.sessions.set(`idx-${name}`, `${name}@example.org`);
    await store.record({
      app: 'salesforce',
      username: name,
      createdAt: new Date(changedAt.getTime() - 1000),
      sessionIndex: `idx-${name}`,
    });
    return target.deliver(deliveryContext(app, passwordChange(user(name), changedAt), services));
  }
  const failure = (p: Promise<unknown>) =>
    p.then(
      (r) => ({ outcome: 'resolved', result: r }),
      (e: PermanentDeliveryError) => ({ outcome: 'rejected', code: e.code, message: e.message }),
    );

  it('a response xmlsec1 signed over its root, RSA-SHA256: done; the SP verified the request and ended the session', async () => {
    xmlsecSp.mode = 'success';
    const before = xmlsecSp.verified.length;
    const result = await deliverTo('kim', { requireSignedResponse: true });
    expect(result).toMatchObject({ outcome: 'done' });
    expect(xmlsecSp.verified.slice(before)).toMatchObject([{ nameId: 'kim@example.org', sessionIndexes: ['idx-kim'] }]);
    expect(xmlsecSp.sessions.has('idx-kim')).toBe(false);
  });

  it("the certificate in the response's KeyInfo is never trusted: only the configured SP certificate verifies", async () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const got = await failure(
      deliverTo('kai', {
        sp: { ...xmlsecSettings().sp, cert: selfSignedCertificate(other.privateKey, 'not the sp') },
      }),
    );
    expect(xmlsecSp.lastResponse).toMatch(/<ds:KeyInfo><ds:X509Data>\s*<ds:X509Certificate>/);
    expect(got).toMatchObject({ outcome: 'rejected', code: 'SAML_RESPONSE_SIGNATURE' });
    expect((got as { message: string }).message).toMatch(/does not verify with the SP certificate/);
  });

  it('a genuine signed Responder answer is failed with its status, signed or not required', async () => {
    xmlsecSp.mode = 'responder';
    try {
      expect(await failure(deliverTo('lou'))).toMatchObject({
        outcome: 'rejected',
        code: 'SAML_LOGOUT_FAILED',
        message: 'the SP answered Responder',
      });
    } finally {
      xmlsecSp.mode = 'success';
    }
  });

  it.each([
    ['tampered', 'SAML_RESPONSE_SIGNATURE', /altered after signing/],
    ['wrapped', 'SAML_RESPONSE_SIGNATURE_PLACEMENT', /sits in samlp:Extensions\/samlp:LogoutResponse, not directly/],
    ['signatureMoved', 'SAML_RESPONSE_SIGNATURE_REFERENCE', /not the LogoutResponse/],
    ['duplicateId', 'SAML_RESPONSE_DUPLICATE_ID', /2 elements carry the ID/],
  ] as const)(
    'a signed Responder answer made to say Success (%s) fails with %s, never done',
    async (mode, code, message) => {
      xmlsecSp.mode = mode;
      try {
        for (const extra of [{}, { requireSignedResponse: true }]) {
          const got = await failure(deliverTo(`mo-${mode}`, extra));
          expect(got).toMatchObject({ outcome: 'rejected', code });
          expect((got as { message: string }).message).toMatch(message);
        }
        expect(xmlsecSp.sessions.get(`idx-mo-${mode}`)).toBe(`mo-${mode}@example.org`);
      } finally {
        xmlsecSp.mode = 'success';
      }
    },
  );

  it('a genuine signed response is refused once anything is put before its SignedInfo or a second Signature is added', async () => {
    xmlsecSp.mode = 'success';
    await deliverTo('ora');
    const genuine = xmlsecSp.lastResponse;
    const check = (xml: string) =>
      failure(
        Promise.resolve().then(() =>
          checkLogoutResponse(xml, {
            requestId: /InResponseTo="([^"]+)"/.exec(genuine)?.[1] ?? '',
            spEntityID: xmlsecSp.entityID,
            spKeys: [new X509Certificate(xmlsecSp.certificatePem).publicKey],
            requireSigned: true,
            signatureCheckable: true,
          }),
        ),
      );
    expect(await check(genuine)).toMatchObject({ outcome: 'resolved', result: { detail: 'Success' } });
    const object = genuine.replace('<ds:SignedInfo>', '<ds:Object/><ds:SignedInfo>');
    expect(await check(object)).toMatchObject({ outcome: 'rejected', code: 'SAML_RESPONSE_INVALID' });
    const signature = /<ds:Signature[\s\S]*<\/ds:Signature>/.exec(genuine)?.[0] ?? '';
    const twice = genuine.replace(signature, signature + signature);
    expect(await check(twice)).toMatchObject({ outcome: 'rejected', code: 'SAML_RESPONSE_SIGNATURE_PLACEMENT' });
  });

  it('a response signed with RSA-SHA1 is refused with the algorithm named', async () => {
    xmlsecSp.algorithm = 'rsa-sha1';
    try {
      const got = await failure(deliverTo('ned'));
      expect(got).toMatchObject({ outcome: 'rejected', code: 'SAML_RESPONSE_SIGNATURE_ALGORITHM' });
      expect((got as { message: string }).message).toMatch(/rsa-sha1/);
    } finally {
      xmlsecSp.algorithm = 'rsa-sha256';
    }
  });
});

describe('kind: saml against a pysaml2 service provider (a second, independent SAML stack)', () => {
  async function logout(name: string, binding: 'soap' | 'post', signing = keys) {
    const { store, services, app } = setup({
      sp: { metadata: './pysaml2-metadata.xml', binding },
      requireSignedResponse: true,
    });
    const target = samlAdapter.create(app, { ...services, signing });
    const changedAt = new Date();
    await pysaml2.addSession(`idx-${name}`, `${name}@example.org`);
    await store.record({
      app: 'salesforce',
      username: name,
      createdAt: new Date(changedAt.getTime() - 1000),
      sessionIndex: `idx-${name}`,
    });
    const before = (await pysaml2.state()).log.length;
    const result = await target
      .deliver(deliveryContext(app, passwordChange(user(name), changedAt), services))
      .catch((err: unknown) => err);
    const after = await pysaml2.state();
    return { result, records: after.log.slice(before), sessions: after.sessions };
  }

  it.each(['soap', 'post'] as const)(
    '%s: pysaml2 verifies the signed LogoutRequest from /saml/metadata and ends the session; its signed LogoutResponse is done',
    async (binding) => {
      const name = `pia-${binding}`;
      const { result, records, sessions } = await logout(name, binding);
      expect(result).toMatchObject({ outcome: 'done' });
      expect((result as { warning?: string }).warning).toBeUndefined();
      expect(records).toMatchObject([
        {
          verified: true,
          binding,
          issuer: ripple.issuer,
          destination: pysaml2.sloUrl,
          nameId: `${name}@example.org`,
          nameIdFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
          sessionIndexes: [`idx-${name}`],
          reason: 'urn:oasis:names:tc:SAML:2.0:logout:admin',
        },
      ]);
      expect(sessions[`idx-${name}`]).toBeUndefined();
    },
  );

  it('a stock pysaml2 7.0 signs its LogoutResponse with RSA-SHA1: refused, the message says what to configure', async () => {
    await pysaml2.stockAlgorithms(true);
    try {
      const { result, records } = await logout('rex', 'post');
      expect(records).toMatchObject([{ verified: true, binding: 'post' }]);
      expect(result).toBeInstanceOf(PermanentDeliveryError);
      expect(result).toMatchObject({ code: 'SAML_RESPONSE_SIGNATURE_ALGORITHM' });
      expect((result as Error).message).toMatch(/xmldsig#rsa-sha1.*sign with RSA-SHA256/);
    } finally {
      await pysaml2.stockAlgorithms(false);
    }
  });

  it("pysaml2's own SOAP unwrapping breaks the signature (why the README says binding: post for pysaml2 SPs)", async () => {
    await pysaml2.nativeSoapUnwrapping(true);
    try {
      const soap = await logout('sam-soap', 'soap');
      expect(soap.result).toMatchObject({ code: 'SAML_SOAP_FAULT' });
      expect(soap.records).toMatchObject([{ verified: false, binding: 'soap' }]);
      expect((soap.records[0] as { error: string }).error).toMatch(/IncorrectlySigned|Signature/);
      expect(soap.sessions['idx-sam-soap']).toBe('sam-soap@example.org');
      // The same SP over HTTP-POST verifies the same kind of request.
      const post = await logout('sam-post', 'post');
      expect(post.result).toMatchObject({ outcome: 'done' });
      expect(post.records).toMatchObject([{ verified: true, binding: 'post' }]);
    } finally {
      await pysaml2.nativeSoapUnwrapping(false);
    }
  });

  it('pysaml2 refuses a LogoutRequest signed with a key not in /saml/metadata; the app fails and the session stays', async () => {
    const rogue = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rogueKeys: SigningKeys = {
      ...keys,
      saml: {
        ...(keys.saml as NonNullable<SigningKeys['saml']>),
        privateKeyPem: rogue.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        certificatePem: selfSignedCertificate(rogue.privateKey, 'rogue'),
      },
    };
    const { result, records, sessions } = await logout('quinn', 'soap', rogueKeys);
    expect(result).toBeInstanceOf(PermanentDeliveryError);
    expect((result as PermanentDeliveryError).code).toBe('SAML_SOAP_FAULT');
    expect(records).toMatchObject([{ verified: false, binding: 'soap' }]);
    expect((records[0] as { error: string }).error).toMatch(/IncorrectlySigned/);
    expect(sessions['idx-quinn']).toBe('quinn@example.org');
  });
});
