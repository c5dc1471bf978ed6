import { describe, expect, it } from 'vitest';
import { describeTopology, topologyFromEnv } from '../../src/redis/connections.js';

/** The one place that reads which Redis to use from the environment. */
describe('REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES', () => {
  it('reads each topology, with default ports and IPv6 hosts', () => {
    expect(topologyFromEnv({ REDIS_URL: 'redis://:pw@10.0.0.5:6380' })).toEqual({
      kind: 'single',
      url: 'redis://:pw@10.0.0.5:6380',
    });
    expect(
      topologyFromEnv({
        REDIS_SENTINELS: 's1:26380, s2,[::1]:26381',
        REDIS_SENTINEL_NAME: 'ripple',
        REDIS_PASSWORD: 'redis-pw',
        REDIS_SENTINEL_PASSWORD: 'sentinel-pw',
      }),
    ).toMatchObject({
      kind: 'sentinel',
      name: 'ripple',
      password: 'redis-pw',
      sentinelPassword: 'sentinel-pw',
      sentinels: [
        { host: 's1', port: 26380 },
        { host: 's2', port: 26379 },
        { host: '::1', port: 26381 },
      ],
    });
    const cluster = topologyFromEnv({ REDIS_CLUSTER_NODES: 'n1:7000,n2', REDIS_TLS: '1' });
    expect(cluster).toMatchObject({
      kind: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 6379 },
      ],
      tls: {},
    });
    expect(topologyFromEnv({})).toBeUndefined();
  });

  it('never prints a password where it says which Redis it uses', () => {
    expect(describeTopology({ kind: 'single', url: 'redis://user:s3cret@host:6379' })).toBe('redis://***@host:6379');
    const sentinel = topologyFromEnv({ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_NAME: 'm', REDIS_PASSWORD: 's3cret' });
    expect(describeTopology(sentinel as NonNullable<typeof sentinel>)).not.toContain('s3cret');
  });

  it('refuses what cannot be meant, naming the variable', () => {
    expect(() => topologyFromEnv({ REDIS_URL: 'redis://a', REDIS_CLUSTER_NODES: 'b:1' })).toThrow(
      /REDIS_URL and REDIS_CLUSTER_NODES are both set/,
    );
    expect(() => topologyFromEnv({ REDIS_SENTINELS: 'a:26379' })).toThrow(/REDIS_SENTINEL_NAME is not/);
    expect(() => topologyFromEnv({ REDIS_CLUSTER_NODES: 'n1:notaport' })).toThrow(
      /REDIS_CLUSTER_NODES: "n1:notaport" is not host:port/,
    );
    expect(() =>
      topologyFromEnv({ REDIS_CLUSTER_NODES: 'n1', REDIS_TLS: '1', REDIS_TLS_CA: '/nonexistent/ca.pem' }),
    ).toThrow(/REDIS_TLS_CA: cannot read \/nonexistent\/ca.pem/);
  });
});
