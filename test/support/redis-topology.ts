import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import type { RedisTopology } from '../../src/redis/connections.js';
import { REDIS_INSTALL_HINT, startEmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess, startServerProcess } from '../../src/util/server-process.js';
import { tempDir } from './ripple.js';

const run = promisify(execFile);

export interface RedisNode {
  host: string;
  port: number;
  process: ServerProcess;
}

/** A redis-server on a free loopback port, with the settings every Redis Ripple starts runs with, plus `extra`. */
async function startNode(label: string, dir: string, extra: string[]): Promise<RedisNode> {
  const server = await startEmbeddedRedis({
    dir,
    appendOnly: false,
    extraArgs: extra,
    name: `redis-server (${label})`,
  });
  return { host: '127.0.0.1', port: server.port, process: server.process };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function info(node: { host: string; port: number }, section: string): Promise<string> {
  const client = new Redis({ host: node.host, port: node.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await client.connect();
    return section === 'cluster' ? await client.cluster('INFO') : await client.info(section);
  } finally {
    client.disconnect();
  }
}

export interface TestCluster {
  nodes: RedisNode[];
  topology: RedisTopology;
  /** Keys per node under `pattern` (`KEYS` on each primary). */
  keysPerNode(pattern: string): Promise<number[]>;
  stop(): Promise<void>;
}

/**
 * A Redis Cluster of `size` primaries (no replicas) on loopback, as `../shared/SERVERS.md`
 * describes: `redis-server --cluster-enabled yes` × size, then `redis-cli --cluster create`.
 */
export async function startRedisCluster(size = 3): Promise<TestCluster> {
  const dir = tempDir('redis-cluster');
  const nodes: RedisNode[] = [];
  const stop = () => Promise.all(nodes.map((n) => n.process.stop(2_000))).then(() => undefined);
  try {
    for (let i = 0; i < size; i++) {
      nodes.push(
        await startNode(`cluster node ${i + 1}`, join(dir, `node${i + 1}`), [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          '--cluster-node-timeout',
          '5000',
        ]),
      );
    }
    await run(
      'redis-cli',
      ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: 30_000 },
    ).catch((err: NodeJS.ErrnoException & { stderr?: string }) => {
      if (err.code === 'ENOENT') throw new Error(`redis-cli not found. Install it: ${REDIS_INSTALL_HINT}`);
      throw new Error(`redis-cli --cluster create failed: ${err.stderr ?? err.message}`);
    });
    for (const n of nodes) {
      await until(`cluster_state:ok on ${n.port}`, async () => /cluster_state:ok/.test(await info(n, 'cluster')));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes,
    topology: { kind: 'cluster', nodes: nodes.map((n) => ({ host: n.host, port: n.port })) },
    async keysPerNode(pattern) {
      return Promise.all(
        nodes.map(async (n) => {
          const client = new Redis({ host: n.host, port: n.port });
          try {
            return (await client.keys(pattern)).length;
          } finally {
            client.disconnect();
          }
        }),
      );
    },
    stop,
  };
}

export interface TestSentinelSet {
  primary: RedisNode;
  replica: RedisNode;
  sentinel: RedisNode;
  name: string;
  topology: RedisTopology;
  /** The address Sentinel gives for the primary now. */
  currentPrimary(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * A primary, one replica of it and one Sentinel watching them (quorum 1, a primary that does not
 * answer for 1 s is down), on loopback.
 */
export async function startRedisSentinel(name = 'ripple'): Promise<TestSentinelSet> {
  const dir = tempDir('redis-sentinel');
  const started: RedisNode[] = [];
  const stop = () => Promise.all(started.map((n) => n.process.stop(2_000))).then(() => undefined);
  try {
    const primary = await startNode('primary', join(dir, 'primary'), []);
    started.push(primary);
    const replica = await startNode('replica', join(dir, 'replica'), [
      '--replicaof',
      primary.host,
      String(primary.port),
    ]);
    started.push(replica);
    await until('the replica in sync', async () => /master_link_status:up/.test(await info(replica, 'replication')));
    const port = await freePort();
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} ${primary.host} ${primary.port} 1`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    const proc = await startServerProcess({
      name: 'redis-sentinel',
      command: 'redis-server',
      args: [conf, '--sentinel'],
      ready: /\+monitor master/,
      installHint: REDIS_INSTALL_HINT,
    });
    const sentinel = { host: '127.0.0.1', port, process: proc };
    started.push(sentinel);
    // Sentinel learns of the replica from the primary's INFO, within its 10 s poll.
    await until('sentinel to see the replica', async () => /slaves=1/.test(await info(sentinel, 'sentinel')), 20_000);
    return {
      primary,
      replica,
      sentinel,
      name,
      topology: { kind: 'sentinel', sentinels: [{ host: sentinel.host, port }], name },
      async currentPrimary() {
        const client = new Redis({ host: sentinel.host, port });
        try {
          const [host, p] = (await client.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string];
          return `${host}:${p}`;
        } finally {
          client.disconnect();
        }
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
