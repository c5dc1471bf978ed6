import { createHash, randomUUID } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { type DeliveryError, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import type { Action, DeliveryContext, EngineServices, PasswordChange, Target } from '../../src/targets/adapter.js';
import { freePort } from '../../src/util/server-process.js';
import { ldapAdapter } from '../../workers/ldap/index.js';
import { Attr, Code } from '../../workers/radius/codec.js';
import { accessRequest, radiusAdapter } from '../../workers/radius/index.js';
import { type Freeradius, type FreeradiusOptions, startFreeradius } from '../support/freeradius.js';
import { ADMIN_TOKEN, passwordChanged, startRipple, startTestRedis } from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { appConfig, deliveryContext, deliveryFailure, passwordChange, silentLog } from '../support/targets.js';

const SECRET = 'nas-secret-for-tests';

let redis: EmbeddedRedis;
let client: Redis;
/** Each test its own key prefix, as each Ripple instance has. */
let services: EngineServices;

beforeAll(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});
beforeEach(() => {
  services = {
    log: silentLog,
    redis: client,
    prefix: `t${randomUUID().slice(0, 8)}`,
    config: { status: { retention: 86_400_000 } },
  } as unknown as EngineServices;
});

/** A new target each call, as another worker process (or a restarted one) would create it. */
function radiusTarget(raw: Record<string, unknown>, action: Action = 'revoke', id = 'test-radius'): Target {
  return radiusAdapter.create(appConfig(radiusAdapter, id, raw, action), services);
}

function ldapTarget(raw: Record<string, unknown>): Target {
  return ldapAdapter.create(appConfig(ldapAdapter, 'test-ldap', raw, 'refresh'), services);
}

function ctx(
  username: string,
  action: Action,
  password?: string,
  opts: { event?: PasswordChange; attempt?: number } = {},
): DeliveryContext {
  const event = opts.event ?? passwordChange({ username });
  return {
    ...deliveryContext({ timeout: 10_000, action } as AppConfig, event, services, { action, password }),
    attempt: opts.attempt ?? 1,
  };
}

const failure = deliveryFailure;

const received = (radius: Freeradius, request = 'Disconnect-Request') =>
  radius.output().match(new RegExp(`Received ${request} Id`, 'g'))?.length ?? 0;

/**
 * The requests the NAS has logged once it has logged at least `n` (or after 5 s): its `-X` log
 * reaches us through a pipe, possibly after its reply reached Ripple.
 */
async function logged(radius: Freeradius, n: number, request = 'Disconnect-Request'): Promise<number> {
  const until = Date.now() + 5_000;
  while (received(radius, request) < n && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return received(radius, request);
}

/**
 * A hostile or downgraded "NAS" on a UDP port: it knows the secret (as a Blast-RADIUS forger
 * effectively does for the Response Authenticator, through an MD5 collision) and answers every
 * request with a Disconnect-ACK whose Response Authenticator verifies, but with no
 * Message-Authenticator (`unsigned`) or a wrong one (`bad-signature`).
 */
async function forgingResponder(port: number, mode: 'unsigned' | 'bad-signature') {
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((res) => socket.bind(port, '127.0.0.1', () => res()));
  let requests = 0;
  socket.on('message', (msg, from) => {
    requests++;
    const attrs =
      mode === 'bad-signature'
        ? Buffer.concat([Buffer.from([Attr.MessageAuthenticator, 18]), Buffer.alloc(16, 1)])
        : Buffer.alloc(0);
    const reply = Buffer.alloc(20 + attrs.length);
    reply[0] = Code.DisconnectAck;
    reply[1] = msg[1] as number;
    reply.writeUInt16BE(reply.length, 2);
    attrs.copy(reply, 20);
    createHash('md5')
      .update(reply.subarray(0, 4))
      .update(msg.subarray(4, 20))
      .update(attrs)
      .update(SECRET)
      .digest()
      .copy(reply, 4);
    socket.send(reply, from.port, from.address);
  });
  return {
    requests: () => requests,
    close: () => new Promise<void>((res) => socket.close(() => res())),
  };
}

/**
 * An on-path attacker between Ripple and a NAS, without the shared secret: it relays and records
 * each (request bytes → reply bytes); after `replay()` it drops every request, and answers one whose
 * bytes it has seen before with the reply recorded for it.
 */
async function onPath(nasPort: number) {
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((res) => socket.bind(0, '127.0.0.1', () => res()));
  const recorded = new Map<string, Buffer>();
  const stats = { replayed: 0 };
  let replaying = false;
  socket.on('message', (msg, from) => {
    const key = msg.toString('hex');
    if (replaying) {
      const reply = recorded.get(key);
      if (reply) {
        stats.replayed++;
        socket.send(reply, from.port, from.address);
      }
      return;
    }
    const upstream = createSocket('udp4');
    upstream.on('message', (reply) => {
      recorded.set(key, reply);
      upstream.close();
      socket.send(reply, from.port, from.address);
    });
    upstream.send(msg, nasPort, '127.0.0.1');
  });
  return {
    port: (socket.address() as { port: number }).port,
    stats,
    replay() {
      replaying = true;
    },
    close: () => socket.close(),
  };
}

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
    // Stock FreeRADIUS 3.2.1 does not sign Access replies: the Response Authenticator is what verifies.
    const peer = { host: '127.0.0.1', port: radius.authPort, secret: SECRET, requireMessageAuthenticator: false };
    expect((await accessRequest(peer, 'alice', 'alice-old')).result).toBe('accept');

    const ldap = ldapTarget({
      url: slapd.url,
      bindDN: slapd.rootDN,
      bindPassword: slapd.rootPassword,
      userDN: `uid={username},${slapd.peopleDN}`,
    });
    expect((await ldap.deliver(ctx('alice', 'refresh', 'alice-new'))).outcome).toBe('done');

    expect((await accessRequest(peer, 'alice', 'alice-new')).result).toBe('accept');
    expect((await accessRequest(peer, 'alice', 'alice-old')).result).toBe('reject');
    // FreeRADIUS required and accepted our requests' Message-Authenticator.
    expect(radius.output()).not.toMatch(
      /invalid Message-Authenticator|does not contain required Message-Authenticator/,
    );
  });

  it("revoke against FreeRADIUS's stock coa server (Disconnect-ACK without Message-Authenticator): done, with a warning", async () => {
    const radius = await startRadius();
    const target = radiusTarget({ nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET }] });
    const result = await target.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(result.detail).toContain(`127.0.0.1:${radius.coaPort}: Disconnect-ACK`);
    expect(result.warning).toMatch(/no Message-Authenticator.*Blast-RADIUS/);
    const out = radius.output();
    // The client requires Message-Authenticator: a request without a valid one is dropped, not answered.
    expect(out).toMatch(
      /Received Disconnect-Request Id \d+[^\n]*\n\s*(\(\d+\)\s*)?Message-Authenticator = 0x[0-9a-f]{32}/,
    );
    expect(out).toContain('User-Name = "alice"');
    expect(out).toMatch(/Sent Disconnect-ACK Id \d+ [^\n]* length 20/);
    expect(out).not.toMatch(/invalid Message-Authenticator|does not contain required Message-Authenticator/);
  });

  it('auto: once a NAS has signed a reply, an unsigned one from it is refused (downgrade), by every worker', async () => {
    const signing = await startRadius({ signReplies: true });
    const nas = { host: '127.0.0.1', port: signing.coaPort, secret: SECRET };
    const first = await radiusTarget({ nas: [nas] }).deliver(ctx('alice', 'revoke'));
    expect(first.outcome).toBe('done');
    // FreeRADIUS 3.2.1 signs CoA/Disconnect replies over a zeroed authenticator: accepted, said so.
    expect(first.warning).toMatch(/zeroed authenticator/);
    expect(first.warning).not.toMatch(/no Message-Authenticator/);
    // The signed Access replies of the same server verify per RFC 3579.
    const access = await accessRequest(
      { host: '127.0.0.1', port: signing.authPort, secret: SECRET, requireMessageAuthenticator: true },
      'bob',
      'bob-old',
    );
    expect(access.exchange.messageAuthenticator).toBe('valid');

    // The same NAS address now answers without Message-Authenticator.
    await signing.stop();
    const forger = await forgingResponder(signing.coaPort, 'unsigned');
    try {
      // A new target, as in another worker process or after a restart: the memory is in Redis.
      const err = await failure(
        radiusTarget({ nas: [{ ...nas }], timeout: '200ms', retransmits: 1 }).deliver(ctx('alice', 'revoke')),
      );
      expect(err).toBeInstanceOf(PermanentDeliveryError);
      expect(err.code).toBe('RADIUS_REPLY_UNVERIFIED');
      expect(err.message).toContain(`127.0.0.1:${signing.coaPort}`);
      expect(err.message).toMatch(/signed its replies before.*downgrade/);
      expect(err.message).toContain('requireMessageAuthenticator: false');
      expect(forger.requests()).toBe(2);

      // Another app never saw this NAS sign: auto accepts, with the warning.
      const other = await radiusTarget({ nas: [nas] }, 'revoke', 'other-radius').deliver(ctx('alice', 'revoke'));
      expect(other.outcome).toBe('done');
      expect(other.warning).toMatch(/no Message-Authenticator/);
    } finally {
      await forger.close();
    }
  });

  it('requireMessageAuthenticator: true refuses the stock unsigned Disconnect-ACK', async () => {
    const radius = await startRadius();
    const strict = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET, requireMessageAuthenticator: true }],
      timeout: '1s',
      retransmits: 0,
    });
    const err = await failure(strict.deliver(ctx('alice', 'revoke')));
    expect(err).toBeInstanceOf(PermanentDeliveryError);
    expect(err.code).toBe('RADIUS_REPLY_UNVERIFIED');
    expect(err.message).toMatch(/without Message-Authenticator.*requireMessageAuthenticator: true/);
    expect(radius.output()).toMatch(/Sent Disconnect-ACK/);
  });

  it('a Message-Authenticator that is present must verify, whatever the mode', async () => {
    const port = await freePort();
    const forger = await forgingResponder(port, 'bad-signature');
    try {
      for (const requireMessageAuthenticator of [false, 'auto', true]) {
        const err = await failure(
          radiusTarget({
            nas: [{ host: '127.0.0.1', port, secret: SECRET, requireMessageAuthenticator }],
            timeout: '200ms',
            retransmits: 0,
          }).deliver(ctx('alice', 'revoke')),
        );
        expect(err.code).toBe('RADIUS_REPLY_UNVERIFIED');
        expect(err.message).toContain('Message-Authenticator does not match');
      }
    } finally {
      await forger.close();
    }
  });

  it('requireMessageAuthenticator: false accepts unsigned replies, with a warning', async () => {
    const radius = await startRadius();
    const lax = radiusTarget({
      nas: [{ host: '127.0.0.1', port: radius.coaPort, secret: SECRET, requireMessageAuthenticator: false }],
    });
    const result = await lax.deliver(ctx('alice', 'revoke'));
    expect(result.outcome).toBe('done');
    expect(result.warning).toMatch(/requireMessageAuthenticator: false.*Blast-RADIUS/);
  });

  it('a retry sends Disconnect only to the NAS that have not answered: the user is kicked off each NAS once', async () => {
    const acking = await startRadius();
    const downPort = await freePort();
    const nas = [
      { host: '127.0.0.1', port: acking.coaPort, secret: SECRET },
      { host: '127.0.0.1', port: downPort, secret: SECRET },
    ];
    const settings = { nas, timeout: '500ms', retransmits: 1 };
    const event = passwordChange({ username: 'alice' });

    const err = await failure(radiusTarget(settings).deliver(ctx('alice', 'revoke', undefined, { event })));
    expect(err).toBeInstanceOf(TransientDeliveryError);
    expect(err.code).toBe('RADIUS_NO_REPLY');
    expect(err.message).toContain(`127.0.0.1:${acking.coaPort}: Disconnect-ACK`);
    expect(await logged(acking, 1)).toBe(1);

    // The second NAS comes up; the next attempt (in any worker) contacts it alone.
    const late = await startRadius({ coaPort: downPort });
    const result = await radiusTarget(settings).deliver(ctx('alice', 'revoke', undefined, { event, attempt: 2 }));
    expect(result.outcome).toBe('done');
    expect(result.detail).toContain(`127.0.0.1:${acking.coaPort}: Disconnect-ACK (answered in an earlier attempt`);
    expect(result.detail).toContain(`127.0.0.1:${downPort}: Disconnect-ACK`);
    expect(await logged(acking, 1)).toBe(1);
    expect(await logged(late, 1)).toBe(1);

    // A new change (another event) disconnects everywhere again.
    await radiusTarget(settings).deliver(ctx('alice', 'revoke'));
    expect(await logged(acking, 2)).toBe(2);
    expect(await logged(late, 2)).toBe(2);
  });

  it('a NAK is not asked again on automatic retries; an ACK never is', async () => {
    const naking = await startRadius({ coa: 'nak', nakErrorCause: 'Administratively-Prohibited' });
    const downPort = await freePort();
    const settings = {
      nas: [
        { host: '127.0.0.1', port: naking.coaPort, secret: SECRET },
        { host: '127.0.0.1', port: downPort, secret: SECRET },
      ],
      timeout: '500ms',
      retransmits: 1,
    };
    const event = passwordChange({ username: 'alice' });
    const first = await failure(radiusTarget(settings).deliver(ctx('alice', 'revoke', undefined, { event })));
    expect(first).toBeInstanceOf(TransientDeliveryError);

    const late = await startRadius({ coaPort: downPort });
    const second = await failure(
      radiusTarget(settings).deliver(ctx('alice', 'revoke', undefined, { event, attempt: 2 })),
    );
    expect(second).toBeInstanceOf(PermanentDeliveryError);
    expect(second.code).toBe('RADIUS_NAK');
    expect(second.message).toMatch(/Error-Cause 501 Administratively-Prohibited \(answered in an earlier attempt/);
    expect(await logged(naking, 1)).toBe(1);
    expect(await logged(late, 1)).toBe(1);
  });

  it('an operator retry (POST …/retry) asks again a NAS that NAKed and has been fixed; the app ends done', async () => {
    const naking = await startRadius({ coa: 'nak', nakErrorCause: 'Administratively-Prohibited' });
    const t = await startRipple({
      redisUrl: redis.url,
      apps: [
        {
          id: 'wifi',
          kind: 'radius',
          retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
          radius: {
            nas: [{ host: '127.0.0.1', port: naking.coaPort, secret: SECRET }],
            timeout: '500ms',
            retransmits: 1,
          },
        },
      ],
    });
    try {
      const sent = await t.send(passwordChanged('alice'));
      const eventId = String(sent.json.eventId);
      const failed = await t.waitForEvent(eventId, ['partial', 'failed']);
      expect(failed.apps[0]?.lastError).toMatch(/RADIUS_NAK: .*Administratively-Prohibited/);
      expect(await logged(naking, 1)).toBe(1);

      // The NAS's admin fixes its policy: on the same port, it now ACKs.
      await naking.stop();
      radiusServers.splice(radiusServers.indexOf(naking), 1);
      const fixed = await startRadius({ coaPort: naking.coaPort });
      const retry = await t.http.inject({
        method: 'POST',
        url: `/v1/events/${eventId}/apps/wifi/retry`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(retry.statusCode).toBe(202);
      const after = await t.waitFor('the retried app to finish', async () => {
        const row = (await t.status(eventId)).apps[0];
        return row && row.attempts >= 2 && ['done', 'failed'].includes(row.state) ? row : undefined;
      });
      expect({ state: after.state, lastError: after.lastError, askedAgain: await logged(fixed, 1) }).toEqual({
        state: 'done',
        lastError: null,
        askedAgain: 1,
      });
    } finally {
      await t.close();
    }
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
    let from: { address: string; port: number } | undefined;
    relay.on('message', (msg, rinfo) => {
      from = rinfo;
      upstream.send(msg, radius.coaPort, '127.0.0.1');
    });
    upstream.on('message', (msg) => {
      const forged = Buffer.from(msg);
      forged[0] = 41; // Disconnect-ACK
      if (from) relay.send(forged, from.port, from.address);
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

  it('a reply recorded for an earlier change is not accepted for a later one the NAS never received', async () => {
    // The NAS signs its replies and Ripple requires it: the strictest setting.
    const nas = await startRadius({ signReplies: true });
    const path = await onPath(nas.coaPort);
    const settings = (timeout: string) => ({
      nas: [{ host: '127.0.0.1', port: path.port, secret: SECRET, requireMessageAuthenticator: true }],
      timeout,
      retransmits: 0,
    });
    try {
      // Earlier changes: the NAS acts on each; the on-path attacker (no secret) records every request and reply.
      for (let i = 0; i < 40; i++) {
        expect((await radiusTarget(settings('2s')).deliver(ctx('alice', 'revoke'))).outcome).toBe('done');
      }
      const nasSaw = await logged(nas, 40);

      // A new change: the attacker drops every request and answers a repeated one with the recorded reply.
      path.replay();
      const event = passwordChange({ username: 'alice' });
      let outcome = '';
      for (let attempt = 1; attempt <= 40 && outcome !== 'done'; attempt++) {
        outcome = await radiusTarget(settings('50ms'))
          .deliver(ctx('alice', 'revoke', undefined, { event, attempt }))
          .then(
            () => 'done',
            (err: DeliveryError) => err.code,
          );
      }
      expect(received(nas)).toBe(nasSaw);
      expect(outcome, `replayed ${path.stats.replayed} recorded replies`).toBe('RADIUS_NO_REPLY');
      // Each request carries Event-Timestamp (RFC 5176 §3.3), and stock FreeRADIUS ACKs it.
      expect(nas.output()).toMatch(/Event-Timestamp = "/);
    } finally {
      path.close();
    }
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
