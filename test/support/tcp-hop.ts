import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP hop (a network path) in front of a real server (Redis, slapd), to play what a network or
 * a stalling server does between two commands. One-shot rules, each matched against a client
 * write (what the client sent, as latin1 text):
 * - `holdWrite`: this write and the next client writes of that connection reach the server only
 *   `ms` later, in order (a delayed or queued packet). A client close is also delivered late:
 *   the server sees the held bytes first, then (after `closeAfterMs` more) the end of the connection.
 * - `holdAfter`: this write goes through; the client writes after it on that connection are held
 *   for `ms` (the connection freezes between two commands).
 * - `holdReply`: this write goes through; what the server answers on that connection reaches the
 *   client only `ms` later (a delayed reply, or a server that answers late after acting).
 * - `cut`: this write goes through; the connection is dropped at the client's next write (the
 *   server went away between two commands).
 */
export interface Rule {
  match: (text: string) => boolean;
  action: 'holdWrite' | 'holdAfter' | 'holdReply' | 'cut';
  /** How long to hold (not used by `cut`). */
  ms?: number;
  closeAfterMs?: number;
  /** Set once the rule fired. */
  firedAt?: number;
}

export interface TcpHop {
  url: string;
  port: number;
  add(rule: Rule): Rule;
  connections(): number;
  close(): Promise<void>;
}

export async function tcpHop(port: number, scheme = 'redis'): Promise<TcpHop> {
  const rules: Rule[] = [];
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((client) => {
    count++;
    const upstream = connect({ host: '127.0.0.1', port });
    sockets.add(client);
    sockets.add(upstream);
    let clientHeldUntil = 0;
    let replyHeldUntil = 0;
    const toServer: Buffer[] = [];
    const toClient: Buffer[] = [];
    let clientClosed = false;
    let cutNext = false;
    const flushToServer = () => {
      if (Date.now() < clientHeldUntil) return;
      for (const c of toServer.splice(0)) upstream.write(c);
    };
    const flushToClient = () => {
      if (Date.now() < replyHeldUntil) return;
      for (const c of toClient.splice(0)) if (!client.destroyed) client.write(c);
    };
    client.on('data', (chunk: Buffer) => {
      if (cutNext) {
        client.destroy();
        upstream.destroy();
        return;
      }
      const text = chunk.toString('latin1');
      const rule = rules.find((r) => r.firedAt === undefined && r.match(text));
      if (rule) rule.firedAt = Date.now();
      const ms = rule?.ms ?? 0;
      if (rule?.action === 'cut') cutNext = true;
      if (rule?.action === 'holdWrite') {
        clientHeldUntil = Date.now() + ms;
        toServer.push(chunk);
        setTimeout(flushToServer, ms + 1);
        return;
      }
      if (Date.now() < clientHeldUntil) toServer.push(chunk);
      else upstream.write(chunk);
      if (rule?.action === 'holdAfter') {
        clientHeldUntil = Date.now() + ms;
        setTimeout(flushToServer, ms + 1);
      }
      if (rule?.action === 'holdReply') {
        replyHeldUntil = Date.now() + ms;
        setTimeout(flushToClient, ms + 1);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (Date.now() < replyHeldUntil) toClient.push(chunk);
      else if (!client.destroyed) client.write(chunk);
    });
    const endAll = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', () => undefined);
    upstream.on('error', endAll);
    upstream.on('close', endAll);
    client.on('close', () => {
      if (clientClosed) return;
      clientClosed = true;
      // The end of the connection travels behind the bytes still held on the path.
      const wait = Math.max(0, clientHeldUntil - Date.now());
      const rule = rules.find((r) => r.action === 'holdWrite' && r.firedAt !== undefined);
      setTimeout(() => {
        flushToServer();
        setTimeout(() => upstream.end(), rule?.closeAfterMs ?? 0);
      }, wait + 5);
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const address = server.address();
  const listen = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `${scheme}://127.0.0.1:${listen}`,
    port: listen,
    add(rule) {
      rules.push(rule);
      return rule;
    },
    connections: () => count,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}
