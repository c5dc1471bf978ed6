import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { type DeliveryError, PermanentDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, EngineServices, Target } from '../../src/targets/adapter.js';
import { ldapAdapter } from '../../workers/ldap/index.js';
import { createCa } from '../support/pki.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { appConfig, deliveryContext, passwordChange, silentLog } from '../support/targets.js';

const services = { log: silentLog } as unknown as EngineServices;

function ldapTarget(raw: Record<string, unknown>): Target {
  return ldapAdapter.create(appConfig(ldapAdapter, 'corp-ldap', raw, 'refresh', { timeout: 5_000 }), services);
}

function ctx(username: string, password: string): DeliveryContext {
  return deliveryContext({ timeout: 5_000, action: 'refresh' } as AppConfig, passwordChange({ username }), services, {
    password,
  });
}

describe('kind: ldap over TLS, with certificate verification', () => {
  let slapd: Slapd;
  let wrongCa: { dir: string; caPem: string };

  beforeAll(async () => {
    slapd = await startSlapd({ tls: true });
    wrongCa = await createCa('Some Other CA');
    for (const uid of ['tina', 'uma', 'vic']) await slapd.addUser(uid, `${uid}-old`);
  });
  afterAll(async () => {
    await slapd?.stop();
    if (wrongCa) await rm(wrongCa.dir, { recursive: true, force: true });
  });

  const settings = (extra: Record<string, unknown>) => ({
    bindDN: slapd.rootDN,
    bindPassword: slapd.rootPassword,
    userDN: `uid={username},${slapd.peopleDN}`,
    ...extra,
  });

  it('StartTLS with the right CA: password changed, verified', async () => {
    const target = ldapTarget(settings({ url: slapd.url, startTLS: true, tls: { ca: slapd.caPem } }));
    const result = await target.deliver(ctx('tina', 'tina-new'));
    expect(result.outcome).toBe('done');
    expect(await slapd.canBind(slapd.userDN('tina'), 'tina-new')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('tina'), 'tina-old')).toBe(false);
    // slapd logged the StartTLS extended operation and a TLS connection.
    expect(slapd.output()).toContain('EXT oid=1.3.6.1.4.1.1466.20037');
  });

  it('LDAPS with the CA given as a file: password changed, probe ok', async () => {
    const target = ldapTarget(settings({ url: slapd.ldapsUrl, tls: { ca: slapd.caFile } }));
    expect((await target.deliver(ctx('uma', 'uma-new'))).outcome).toBe('done');
    expect(await slapd.canBind(slapd.userDN('uma'), 'uma-new')).toBe(true);
    expect((await target.probe(AbortSignal.timeout(5000))).ok).toBe(true);
  });

  it('a server certificate from another CA is refused (StartTLS and LDAPS); nothing is written', async () => {
    for (const extra of [
      { url: slapd.url, startTLS: true, tls: { ca: wrongCa.caPem } },
      { url: slapd.ldapsUrl, tls: { ca: wrongCa.caPem } },
      { url: slapd.ldapsUrl }, // system CAs only
    ]) {
      const err = await ldapTarget(settings(extra))
        .deliver(ctx('vic', 'vic-new'))
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(PermanentDeliveryError);
      expect((err as DeliveryError).code).toBe('LDAP_TLS_VERIFY_FAILED');
      expect((err as DeliveryError).message).toMatch(/certificate refused/);
    }
    const probe = await ldapTarget(settings({ url: slapd.ldapsUrl, tls: { ca: wrongCa.caPem } })).probe(
      AbortSignal.timeout(5000),
    );
    expect(probe.ok).toBe(false);
    expect(await slapd.canBind(slapd.userDN('vic'), 'vic-old')).toBe(true);
  });

  it('StartTLS checks the server name too: a certificate for 127.0.0.1 does not pass as another host', async () => {
    const err = await ldapTarget(
      settings({ url: slapd.url, startTLS: true, tls: { ca: slapd.caPem, servername: 'ldap.example.org' } }),
    )
      .deliver(ctx('vic', 'vic-new'))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect((err as DeliveryError).code).toBe('LDAP_TLS_VERIFY_FAILED');
    expect((err as DeliveryError).message).toContain('ERR_TLS_CERT_ALTNAME_INVALID');
  });
});
