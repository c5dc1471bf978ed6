import { createSocket } from 'node:dgram';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { Action, DeliveryContext, EngineServices, Target } from '../../src/targets/adapter.js';
import { freePort } from '../../src/util/server-process.js';
import { ldapAdapter } from '../../workers/ldap/index.js';
import { accessRequest, radiusAdapter } from '../../workers/radius/index.js';
import { type Freeradius, type FreeradiusOptions, startFreeradius } from '../support/freeradius.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { appConfig, deliveryContext, deliveryFailure, passwordChange, silentLog } from '../support/targets.js';

const services = { log: silentLog } as unknown as EngineServices;
const SECRET = 'nas-secret-for-tests';

function radiusTarget(raw: Record<string, unknown>, action: Action = 'revoke'): Target {
  return radiusAdapter.create(appConfig(radiusAdapter, 'test-radius', raw, action), services);
}

function ldapTarget(raw: Record<string, unknown>): Target {
  return ldapAdapter.create(appConfig(ldapAdapter, 'test-ldap', raw, 'refresh'), services);
}

function ctx(username: string, action: Action, password?: string): DeliveryContext {
  return deliveryContext({ timeout: 10_000, action } as AppConfig, passwordChange({ username }), services, {
    action,
    password,
  });
}

const failure = deliveryFailure;

describe('kind: radius against a real FreeRADIUS (users in the same slapd)', () => {
  let slapd: Slapd;
  const radiusServers: Freeradius[] = [];
  const startRadius = async (extra: Partial<FreeradiusOptions> = {}) => {
    const r = await startFreeradius({
      ldap: { url: slapd.url, bindDN: slapd.rootDN, password: slapd.rootPassword, baseDN: slapd.baseDN },
      nasSecret: SECRET,
      coa: 'ack',
      ...extra,
    });
    radiusServers.push(r);
    return r;
  };

  beforeAll(async () => {
    slapd = await startSlapd();
    for (const uid of ['alice', 'bob']) await slapd.addUser(uid, `${uid}-old`);
  });
  afterEach(async () => {
    await Promise.all(radiusServers.splice(0).map((r) => r.stop()));
  });
  afterAll(async () => {
    await slapd?.stop();
  });

  it('after the LDAP change, PAP gets Access-Accept with the new password and Access-Reject with the old', async () => {
    const radius = await startRadius();
    const peer = { host: '127.0.0.1', port: radius.authPort, secret: SECRET };
    expect((await accessRequest(peer, 'alice', 'alice-old')).result).toBe('accept');

    const ldap = ldapTarget({
      url: slapd.url,
      bindDN: slapd.rootDN,
      bindPassword: slapd.rootPassword,
      userDN: `uid={username},${slapd.peopleDN}`,
    });
    expect((await ldap.deliver(ctx('alice', 'refresh', 'alice-new'))).outcome).toBe('done');

    const fresh = await accessRequest(peer, 'alice', 'alice-new');
    expect(fresh.result).toBe('accept');
    // FreeRADIUS's reply was verified, Message-Authenticator included.
    expect(fresh.exchange.messageAuthenticator).toBe('valid');
    expect((await accessRequest(peer, 'alice', 'alice-old')).result).toBe('reject');
    expect(radius.output()).not.toContain('invalid Message-Authenticator');
  });

  it('revoke: Disconnect-Request is ACKed, and FreeRADIUS accepted its Message-Authenticator', async () => {
    const radius = await startRadius();
    const target = radiusTarget({ nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }] });
    const result = await target.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(result.detail).toContain(`127.0.0.1:${radius.coaPort}: Disconnect-ACK`);
    const out = radius.output();
    // The client requires Message-Authenticator: a request without a valid one is dropped, not answered.
    expect(out).toMatch(
      /Received Disconnect-Request Id \d+[^\n]*\n\s*(\(\d+\)\s*)?Message-Authenticator = 0x[0-9a-f]{32}/,
    );
    expect(out).toContain('User-Name = "alice"');
    expect(out).toMatch(/Sent Disconnect-ACK/);
    expect(out).not.toMatch(/invalid Message-Authenticator|does not contain required Message-Authenticator/);
  });

  it('refresh: CoA-Request carries coaAttributes and is ACKed', async () => {
    const radius = await startRadius();
    const target = radiusTarget(
      {
        nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET, attributes: { 'NAS-Identifier': 'ap-7' } }],
        coaAttributes: { 'Session-Timeout': 1 },
      },
      'refresh',
    );
    const result = await target.deliver(ctx('bob', 'refresh'));
    expect(result.detail).toContain('CoA-ACK');
    const out = radius.output();
    expect(out).toMatch(/Received CoA-Request/);
    expect(out).toContain('Session-Timeout = 1');
    expect(out).toContain('NAS-Identifier = "ap-7"');
  });

  it('every NAS gets the packet; all ACK → done', async () => {
    const a = await startRadius();
    const b = await startRadius();
    const target = radiusTarget({
      nas: [
        { host: '127.0.0.1', port: a.coaPort, secret: SECRET },
        { host: '127.0.0.1', port: b.coaPort, secret: SECRET },
      ],
    });
    const result = await target.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(a.output()).toMatch(/Sent Disconnect-ACK/);
    expect(b.output()).toMatch(/Sent Disconnect-ACK/);
  });

  it('concurrent deliveries through one target each get their own verified reply', async () => {
    const radius = await startRadius();
    const target = radiusTarget({ nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }] });
    const users = Array.from({ length: 25 }, (_, i) => `user${i}`);
    const results = await Promise.all(users.map((u) => target.deliver(ctx(u, 'revoke'))));
    expect(results.every((r) => r.outcome === 'done' && r.detail?.includes('Disconnect-ACK'))).toBe(true);
    expect(radius.output().match(/Sent Disconnect-ACK/g)?.length).toBe(users.length);
  });

  it('a NAK with an Error-Cause fails the app, naming the cause', async () => {
    const radius = await startRadius({ coa: 'nak', nakErrorCause: 'Administratively-Prohibited' });
    const target = radiusTarget({ nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }] });
    const err = await failure(target.deliver(ctx('alice', 'revoke')));
    expect(err).toBeInstanceOf(PermanentDeliveryError);
    expect(err.code).toBe('RADIUS_NAK');
    expect(err.message).toContain('Disconnect-NAK, Error-Cause 501 Administratively-Prohibited');
  });

  it('a NAK saying Session-Context-Not-Found (503) means nothing to disconnect: done', async () => {
    const radius = await startRadius({ coa: 'nak', nakErrorCause: 'Session-Context-Not-Found' });
    const target = radiusTarget({ nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }] });
    const result = await target.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(result.detail).toContain('no session');
  });

  it('a wrong NAS secret: FreeRADIUS drops the request, the app is retried with a clear error', async () => {
    const radius = await startRadius();
    const target = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: 'not-the-secret' }],
      timeout: '200ms',
      retransmits: 2,
    });
    const err = await failure(target.deliver(ctx('alice', 'revoke')));
    expect(err).toBeInstanceOf(TransientDeliveryError);
    expect(err.code).toBe('RADIUS_NO_REPLY');
    expect(err.message).toContain('no reply after 3 tries');
    expect(err.message).toContain('shared secret');
    expect(radius.output()).toContain('invalid Message-Authenticator');
    expect(radius.output()).not.toMatch(/Sent Disconnect-(ACK|NAK)/);
  });

  it('a reply tampered with on the way (man in the middle) is not accepted', async () => {
    const radius = await startRadius({ coa: 'nak', nakErrorCause: 'Session-Context-Not-Found' });
    // A UDP relay that turns the NAS's "no session" NAK into an ACK, as an attacker would.
    const relay = createSocket('udp4');
    const upstream = createSocket('udp4');
    const relayPort = await freePort();
    await new Promise<void>((res) => relay.bind(relayPort, '127.0.0.1', () => res()));
    let client: { address: string; port: number } | undefined;
    relay.on('message', (msg, rinfo) => {
      client = rinfo;
      upstream.send(msg, radius.coaPort, '127.0.0.1');
    });
    upstream.on('message', (msg) => {
      const forged = Buffer.from(msg);
      forged[0] = 41; // Disconnect-ACK
      if (client) relay.send(forged, client.port, client.address);
    });
    try {
      const target = radiusTarget({
        nas: [{ host: '127.0.0.1', port: relayPort, secret: SECRET }],
        timeout: '300ms',
        retransmits: 1,
      });
      const err = await failure(target.deliver(ctx('alice', 'revoke')));
      expect(err).toBeInstanceOf(PermanentDeliveryError);
      expect(err.code).toBe('RADIUS_REPLY_UNVERIFIED');
      expect(err.message).toContain('Response Authenticator does not match');
    } finally {
      relay.close();
      upstream.close();
    }
  });

  it('a NAS that does not sign its replies is refused unless explicitly allowed (Blast-RADIUS)', async () => {
    const radius = await startRadius({ replyMessageAuthenticator: false });
    const strict = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }],
      timeout: '300ms',
      retransmits: 0,
    });
    const err = await failure(strict.deliver(ctx('alice', 'revoke')));
    expect(err.code).toBe('RADIUS_REPLY_UNVERIFIED');
    expect(err.message).toContain('without Message-Authenticator refused');
    const lax = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET, requireMessageAuthenticator: false }],
    });
    const result = await lax.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(result.warning).toContain('Blast-RADIUS');
  });

  it('no NAS listening: retried (TransientDeliveryError) after the retransmits', async () => {
    const port = await freePort();
    const target = radiusTarget({
      nas: [{ host: '127.0.0.1', port, secret: SECRET }],
      timeout: '100ms',
      retransmits: 2,
    });
    const started = Date.now();
    const err = await failure(target.deliver(ctx('alice', 'revoke')));
    expect(err).toBeInstanceOf(TransientDeliveryError);
    expect(err.message).toContain('after 3 tries');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('probe: Status-Server where the NAS answers it, otherwise the address', async () => {
    const radius = await startRadius();
    const withStatus = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.authPort, secret: SECRET, statusServer: true }],
    });
    const ok = await withStatus.probe(AbortSignal.timeout(5000));
    expect(ok).toMatchObject({ ok: true });
    expect(ok.detail).toContain('Status-Server answered with Access-Accept');
    const addressOnly = await radiusTarget({
      nas: [{ host: 'localhost', port: radius.coaPort, secret: SECRET }],
    }).probe(AbortSignal.timeout(5000));
    expect(addressOnly.ok).toBe(true);
    expect(addressOnly.detail).toMatch(/localhost:\d+ \((127\.0\.0\.1|::1)\): Status-Server not enabled/);
    const wrongSecret = await radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.authPort, secret: 'nope', statusServer: true }],
      timeout: '200ms',
    }).probe(AbortSignal.timeout(5000));
    expect(wrongSecret.ok).toBe(false);
  });
});
