import { generateKeyPairSync } from 'node:crypto';
import Fastify from 'fastify';
import { type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSigningKeys, type SigningKey, signingSchema } from '../../src/signing/index.js';
import {
  complexSubject,
  EVENT_TYPES,
  emailSubject,
  opaqueSubject,
  SET_TYP,
  SetError,
  setJti,
  signSet,
  subjectKey,
  verifySet,
} from '../../src/ssf/set.js';

const pem = (key: ReturnType<typeof generateKeyPairSync>['privateKey']) =>
  key.export({ type: 'pkcs8', format: 'pem' }).toString();
const keys = loadSigningKeys({
  signing: signingSchema.parse({
    keys: [
      { kid: 'rsa-1', privateKey: pem(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey) },
      { kid: 'ec-1', privateKey: pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey) },
    ],
  }),
});
if (!keys) throw new Error('no keys');
const [rsa, ec] = keys.keys as [SigningKey, SigningKey];
const stranger = loadSigningKeys({
  signing: signingSchema.parse({
    keys: [{ kid: 'rsa-1', privateKey: pem(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey) }],
  }),
})?.active as SigningKey;

const ISS = 'https://ripple.example.org';
const AUD = 'https://app.example.org';
const base = {
  key: rsa,
  issuer: ISS,
  audience: AUD,
  subject: emailSubject('ada@example.org'),
  type: EVENT_TYPES.credentialChange,
  payload: { credential_type: 'password', change_type: 'update', event_timestamp: 1_700_000_000 },
  jti: setJti('event-1', 'app', EVENT_TYPES.credentialChange),
  txn: 'event-1',
};
const check = { keys: keys.jwks, issuer: ISS, audience: AUD };

/** A token signed by `key` with any header and claims: what a hostile or broken transmitter could send. */
async function forge(claims: Record<string, unknown>, header: Record<string, unknown> = {}, key: SigningKey = rsa) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: SET_TYP, ...header })
    .sign(key.privateKey);
}
const now = () => Math.floor(Date.now() / 1000);
const goodClaims = () => ({
  iss: ISS,
  aud: AUD,
  iat: now(),
  jti: 'j-1',
  sub_id: { format: 'email', email: 'ada@example.org' },
  events: { [EVENT_TYPES.credentialChange]: { credential_type: 'password' } },
});

async function refusal(token: string, opts: Partial<Parameters<typeof verifySet>[1]> = {}) {
  try {
    await verifySet(token, { ...check, ...opts });
  } catch (err) {
    expect(err).toBeInstanceOf(SetError);
    return { err: (err as SetError).err, description: (err as SetError).message };
  }
  throw new Error('verifySet accepted the SET');
}

describe('SET signing (RFC 8417 as SSF 1.0 profiles it)', () => {
  it('signs a SET with typ secevent+jwt, the kid, iss/aud/iat/jti/txn/sub_id and exactly one event, no sub or exp', async () => {
    const token = await signSet(base);
    const header = JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString());
    expect(header).toEqual({ alg: 'RS256', kid: 'rsa-1', typ: 'secevent+jwt' });
    const set = await verifySet(token, check);
    expect(set.iss).toBe(ISS);
    expect(set.aud).toBe(AUD);
    expect(set.txn).toBe('event-1');
    expect(set.jti).toBe(base.jti);
    expect(set.sub_id).toEqual({ format: 'email', email: 'ada@example.org' });
    expect(set.events).toEqual([{ type: EVENT_TYPES.credentialChange, payload: base.payload }]);
    expect(Math.abs(set.iat - now())).toBeLessThanOrEqual(2);
    expect(set.claims.sub).toBeUndefined();
    expect(set.claims.exp).toBeUndefined();
  });

  it('signs with an ES256 key too, and refuses keys SSF receivers are not expected to take', async () => {
    const set = await verifySet(await signSet({ ...base, key: ec }), check);
    expect(set.alg).toBe('ES256');
    expect(set.kid).toBe('ec-1');
    await expect(signSet({ ...base, key: { ...rsa, alg: 'PS256' } })).rejects.toThrow(/RS256 or ES256/);
  });

  it('gives the same jti for the same (event, app, event type) and a different one otherwise', () => {
    expect(setJti('e1', 'app', EVENT_TYPES.credentialChange)).toBe(setJti('e1', 'app', EVENT_TYPES.credentialChange));
    expect(setJti('e1', 'app', EVENT_TYPES.credentialChange)).not.toBe(setJti('e1', 'app', EVENT_TYPES.sessionRevoked));
    expect(setJti('e1', 'app')).not.toBe(setJti('e1', 'app2'));
    // Parts cannot run into each other: ("a","bc") is not ("ab","c").
    expect(setJti('a', 'bc')).not.toBe(setJti('ab', 'c'));
    expect(setJti('e1')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it('carries complex subjects (user + session) and compares subjects regardless of member order', async () => {
    const subject = complexSubject({ user: emailSubject('ada@example.org'), session: opaqueSubject('s-1') });
    const set = await verifySet(await signSet({ ...base, subject }), check);
    expect(set.sub_id).toEqual({
      format: 'complex',
      user: { format: 'email', email: 'ada@example.org' },
      session: { format: 'opaque', id: 's-1' },
    });
    expect(subjectKey({ format: 'iss_sub', iss: 'a', sub: 'b' })).toBe(
      subjectKey({ sub: 'b', iss: 'a', format: 'iss_sub' } as never),
    );
  });
});

describe('SET verification refuses what SSF forbids, with the RFC 8935 err code', () => {
  it('refuses a sub claim', async () => {
    expect(await refusal(await forge({ ...goodClaims(), sub: 'ada' }))).toEqual({
      err: 'invalid_request',
      description: expect.stringMatching(/sub/),
    });
  });
  it('refuses an exp claim, past or future', async () => {
    expect((await refusal(await forge({ ...goodClaims(), exp: now() + 600 }))).description).toMatch(/exp/);
    expect((await refusal(await forge({ ...goodClaims(), exp: now() - 600 }))).description).toMatch(/exp/);
  });
  it('refuses two events in one SET, and an empty events object', async () => {
    const two = {
      ...goodClaims(),
      events: { [EVENT_TYPES.credentialChange]: {}, [EVENT_TYPES.sessionRevoked]: {} },
    };
    expect((await refusal(await forge(two))).description).toMatch(/2 members/);
    expect((await refusal(await forge({ ...goodClaims(), events: {} }))).description).toMatch(/empty/);
    // ...unless the caller allows more (RISC-style multi-event SETs).
    expect((await verifySet(await forge(two), { ...check, maxEvents: 2 })).events).toHaveLength(2);
  });
  it('refuses a wrong or missing typ', async () => {
    expect((await refusal(await forge(goodClaims(), { typ: 'JWT' }))).err).toBe('invalid_request');
    expect((await refusal(await forge(goodClaims(), { typ: 'logout+jwt' }))).err).toBe('invalid_request');
    expect((await refusal(await forge(goodClaims(), { typ: undefined }))).err).toBe('invalid_request');
  });
  it('refuses another issuer (invalid_issuer) and another audience (invalid_audience)', async () => {
    expect((await refusal(await forge({ ...goodClaims(), iss: 'https://evil.example' }))).err).toBe('invalid_issuer');
    expect((await refusal(await forge({ ...goodClaims(), aud: 'https://other.example' }))).err).toBe(
      'invalid_audience',
    );
  });
  it('refuses a SET signed by a key that is not the transmitter’s, even under a known kid (invalid_key)', async () => {
    expect((await refusal(await forge(goodClaims(), {}, stranger))).err).toBe('invalid_key');
    expect((await refusal(await forge(goodClaims(), { kid: 'nope' }))).err).toBe('invalid_key');
    // A tampered payload fails the signature.
    const [h, , s] = (await forge(goodClaims())).split('.');
    const payload = Buffer.from(JSON.stringify({ ...goodClaims(), jti: 'j-2' })).toString('base64url');
    expect((await refusal(`${h}.${payload}.${s}`)).err).toBe('invalid_key');
  });
  it('refuses an algorithm outside the allow-list', async () => {
    expect((await refusal(await forge(goodClaims()), { algorithms: ['ES256'] })).err).toBe('invalid_key');
  });
  it('refuses an iat from the future beyond the tolerance, a missing iat or jti, and a too old SET when asked', async () => {
    expect((await refusal(await forge({ ...goodClaims(), iat: now() + 600 }))).description).toMatch(/iat/);
    const { iat: _iat, ...noIat } = goodClaims();
    expect((await refusal(await forge(noIat))).description).toMatch(/iat/);
    const { jti: _jti, ...noJti } = goodClaims();
    expect((await refusal(await forge(noJti))).description).toMatch(/jti/);
    const old = await forge({ ...goodClaims(), iat: now() - 3600 });
    expect((await refusal(old, { maxAgeS: 600 })).description).toMatch(/old/);
    await expect(verifySet(old, check)).resolves.toBeTruthy();
  });
  it('refuses a missing or malformed sub_id and names what is wrong', async () => {
    const { sub_id: _s, ...noSub } = goodClaims();
    expect((await refusal(await forge(noSub))).description).toMatch(/sub_id is missing/);
    expect(
      (await refusal(await forge({ ...goodClaims(), sub_id: { format: 'email', email: 'not-an-email' } }))).description,
    ).toMatch(/sub_id\.email/);
    expect((await refusal(await forge({ ...goodClaims(), sub_id: { format: 'telepathy' } }))).description).toMatch(
      /format/,
    );
    expect((await refusal(await forge({ ...goodClaims(), sub_id: { format: 'complex' } }))).description).toMatch(
      /facet/,
    );
  });
  it('refuses what is not a JWS at all', async () => {
    expect((await refusal('hello')).err).toBe('invalid_request');
    expect((await refusal('a.b.c')).err).toBe('invalid_request');
  });
});

describe('SET verification against a remote JWKS', () => {
  const app = Fastify();
  let served: { keys: JWK[] } = { keys: [rsa.publicJwk] };
  let fetches = 0;
  let url = '';
  beforeAll(async () => {
    app.get('/jwks', async () => {
      fetches++;
      return served;
    });
    url = `${await app.listen({ port: 0, host: '127.0.0.1' })}/jwks`;
  });
  afterAll(() => app.close());

  it('fetches the JWKS once, and again when a SET names a kid it has not seen (key rotation)', async () => {
    const opts = { ...check, keys: url, jwksCooldownMs: 0 };
    await verifySet(await signSet(base), opts);
    await verifySet(await signSet(base), opts);
    expect(fetches).toBe(1);
    served = { keys: [rsa.publicJwk, ec.publicJwk] };
    const set = await verifySet(await signSet({ ...base, key: ec }), opts);
    expect(set.kid).toBe('ec-1');
    expect(fetches).toBe(2);
  });

  it('answers invalid_key, marked retryable, when the JWKS cannot be fetched (the receiver should answer 5xx)', async () => {
    const gone = Fastify();
    const deadUrl = `${await gone.listen({ port: 0, host: '127.0.0.1' })}/jwks`;
    await gone.close();
    const err = await verifySet(await signSet(base), { ...check, keys: deadUrl }).catch((e) => e);
    expect(err).toBeInstanceOf(SetError);
    expect(err.err).toBe('invalid_key');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/ECONNREFUSED/);
    // A SET that fails on its own merits is not retryable.
    const bad = await verifySet(await forge({ ...goodClaims(), sub: 'x' }), check).catch((e) => e);
    expect(bad.retryable).toBe(false);
  });
});
