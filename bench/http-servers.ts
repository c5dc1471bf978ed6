// The two HTTP servers the ingest benchmark compares, each in its own process:
//   bare   — a fastify route that reads the body and answers 202
//   ripple — Ripple's API (ingest, status) against the given Redis, no workers
import Fastify from 'fastify';
import pino from 'pino';
import { Ripple } from '../src/ripple.js';

const [mode, redisUrl, configDir, prefix] = process.argv.slice(2);

async function main() {
  if (mode === 'bare') {
    const app = Fastify();
    app.post('/v1/events', async (req, reply) => reply.code(202).send({ eventId: req.headers['webhook-id'] }));
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    process.send?.({ address });
    return;
  }
  const ripple = await Ripple.open({
    configDir: configDir as string,
    redisUrl,
    prefix,
    log: pino({ level: 'warn' }),
  });
  const address = await ripple.listen(0, '127.0.0.1');
  process.send?.({ address });
}
void main();
process.on('message', (m) => {
  if (m === 'exit') process.exit(0);
});
