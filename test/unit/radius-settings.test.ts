import { describe, expect, it } from 'vitest';
import { radiusAdapter } from '../../workers/radius/index.js';

describe('kind: radius settings', () => {
  const schema = radiusAdapter.settings({ configDir: '/nonexistent' });

  it('defaults port 3799, 2s timeout, 3 retransmits, Message-Authenticator required once a NAS sent one (auto)', () => {
    const s = schema.parse({ nas: [{ host: '10.0.0.1', secret: 's' }] });
    expect(s).toMatchObject({ timeout: 2000, retransmits: 3, coaAttributes: [] });
    expect(s.nas[0]).toMatchObject({ port: 3799, requireMessageAuthenticator: 'auto', statusServer: false });
  });

  it('requireMessageAuthenticator is auto, true or false', () => {
    for (const value of ['auto', true, false]) {
      const s = schema.parse({ nas: [{ host: 'h', secret: 's', requireMessageAuthenticator: value }] });
      expect(s.nas[0]?.requireMessageAuthenticator).toBe(value);
    }
    const bad = schema.safeParse({ nas: [{ host: 'h', secret: 's', requireMessageAuthenticator: 'yes' }] });
    expect(JSON.stringify(bad.error?.issues)).toContain('auto, true or false');
  });

  it('encodes coaAttributes from the dictionary and parses durations', () => {
    const s = schema.parse({
      nas: [{ host: 'nas.example.org', port: 1700, secret: 's', attributes: { 'NAS-Identifier': 'ap-1' } }],
      coaAttributes: { 'Session-Timeout': 1, 'Filter-Id': 'guest' },
      timeout: '500ms',
    });
    expect(s.timeout).toBe(500);
    expect(s.coaAttributes).toEqual([
      { type: 27, value: Buffer.from([0, 0, 0, 1]) },
      { type: 11, value: Buffer.from('guest') },
    ]);
    expect(s.nas[0]?.attributes).toEqual([{ type: 32, value: Buffer.from('ap-1') }]);
  });

  it('refuses unknown or reserved attributes, bad values, and an empty NAS list', () => {
    const issues = (raw: object) => JSON.stringify(schema.safeParse(raw).error?.issues ?? []);
    expect(issues({ nas: [{ host: 'h', secret: 's' }], coaAttributes: { 'Foo-Bar': 1 } })).toContain(
      'unknown attribute',
    );
    expect(issues({ nas: [{ host: 'h', secret: 's' }], coaAttributes: { 'User-Name': 'x' } })).toContain(
      'set by Ripple',
    );
    expect(issues({ nas: [{ host: 'h', secret: 's' }], coaAttributes: { 'Session-Timeout': 'soon' } })).toContain(
      'integer',
    );
    expect(issues({ nas: [] })).toContain('at least one NAS');
    expect(
      issues({
        nas: [
          { host: 'h', secret: 's' },
          { host: 'h', port: 3799, secret: 't' },
        ],
      }),
    ).toContain('h:3799 is listed twice');
    expect(issues({ nas: [{ host: 'h', secret: '' }] })).toContain('shared secret');
  });

  it('declares itself a credential kind without the password, revoke and refresh', () => {
    expect(radiusAdapter).toMatchObject({
      kind: 'radius',
      category: 'credential',
      needsCredential: false,
      actions: ['revoke', 'refresh'],
    });
  });
});
