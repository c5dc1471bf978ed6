import type { Redis } from 'ioredis';

/** Every key and every value in the Redis database, as text, for "is this secret anywhere?" checks. */
export async function dumpRedis(redis: Redis): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      let value: unknown;
      if (type === 'string') value = await redis.getBuffer(key).then((b) => b?.toString('latin1'));
      else if (type === 'hash') value = await redis.hgetall(key);
      else if (type === 'list') value = await redis.lrange(key, 0, -1);
      else if (type === 'set') value = await redis.smembers(key);
      else if (type === 'zset') value = await redis.zrange(key, 0, -1, 'WITHSCORES');
      else if (type === 'stream') value = await redis.xrange(key, '-', '+');
      out.set(key, JSON.stringify(value) ?? '');
    }
  } while (cursor !== '0');
  return out;
}

/** Keys whose name or value contains `needle` (also checked in base64, hex and JSON-escaped forms). */
export async function findInRedis(redis: Redis, needle: string): Promise<string[]> {
  const forms = [
    needle,
    Buffer.from(needle).toString('base64'),
    Buffer.from(needle).toString('hex'),
    JSON.stringify(needle).slice(1, -1),
  ];
  const hits: string[] = [];
  for (const [key, value] of await dumpRedis(redis)) {
    if (forms.some((f) => key.includes(f) || value.includes(f))) hits.push(key);
  }
  return hits;
}
