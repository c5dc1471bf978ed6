import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a real Redis, to freeze or cut one connection between two commands. Once it has forwarded a
 * client write containing `marker` (and, for ingest, the `bodyHash` of an event's meta), it
 * either holds that connection's next client writes for `holdMs` (what a Redis frozen by a slow
 * fsync, a fork or a network hiccup does to them) and then forwards them, or (`cut`) drops the
 * connection at the next client write, as when Redis goes away between two commands.
 */
export interface StallingProxy {
  url: string;
  armFor(marker: string, action: { holdMs: number } | { cut: true }, also?: string): void;
  close(): Promise<void>;
}

export async function stallingProxy(redisPort: number): Promise<StallingProxy> {
  let armed: { marker: string; also: string; action: { holdMs: number } | { cut: true } } | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: redisPort });
    sockets.add(client);
    sockets.add(upstream);
    let holdUntil = 0;
    let cutNext = false;
    let held: Buffer[] = [];
    let flushTimer: NodeJS.Timeout | undefined;
    const flush = () => {
      for (const chunk of held) upstream.write(chunk);
      held = [];
      holdUntil = 0;
    };
    const end = () => {
      clearTimeout(flushTimer);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (cutNext) {
        end();
        return;
      }
      if (holdUntil > Date.now()) {
        held.push(chunk);
        return;
      }
      upstream.write(chunk);
      const text = chunk.toString('latin1');
      if (armed && text.includes(armed.marker) && text.includes(armed.also)) {
        const { action } = armed;
        armed = undefined;
        if ('cut' in action) cutNext = true;
        else {
          holdUntil = Date.now() + action.holdMs;
          flushTimer = setTimeout(flush, action.holdMs);
        }
      }
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `redis://127.0.0.1:${port}`,
    armFor(marker, action, also = 'bodyHash') {
      armed = { marker, also, action };
    },
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}
