import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import closeWithGrace from 'close-with-grace';
import { Webhook } from 'standardwebhooks';
import { formatDuration } from '../config/duration.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { AppConfig } from '../config/types.js';
import { ConfigErrors, errorMessage, RippleError } from '../errors.js';
import { createLogger } from '../log.js';
import { planPropagation } from '../planner/plan.js';
import { Ripple } from '../ripple.js';

const USAGE = `ripple — propagates a password change to every system that still trusts the old one

usage:
  ripple start                         API, planner and all workers in one process (npm start)
  ripple serve                         API and planner only
  ripple worker [--kind K]...          delivery workers (all kinds in use, or the given ones)
                [--metrics-port P]     also serve /healthz, /readyz and /metrics on P
  ripple config check                  validate the config directory and list the apps
  ripple probe [--app ID]...           check each enabled app is reachable and configured (changes nothing)
  ripple plan --user NAME [--groups a,b] [--at ISO-TIME]
                                       dry run: which apps act, in what order, when (no Redis)
  ripple emit --user NAME [--id ID] [--email E] [--groups a,b] [--source S]
              [--password-stdin] [--url URL]
                                       sign and send a password.changed event to a running Ripple

environment: RIPPLE_CONFIG (./config), REDIS_URL (unset: embedded redis-server),
             PORT (8080), HOST (127.0.0.1), LOG_LEVEL (info)`;

const env = process.env;
const configDir = () => env.RIPPLE_CONFIG ?? './config';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'start':
      return run({ api: true, planner: true, workers: 'all' });
    case 'serve':
      return run({ api: true, planner: true, workers: [] });
    case 'worker': {
      const { values } = parseArgs({
        args: rest,
        options: { kind: { type: 'string', multiple: true }, 'metrics-port': { type: 'string' } },
      });
      return run({
        api: false,
        planner: false,
        workers: values.kind?.length ? values.kind : 'all',
        metricsPort: values['metrics-port'] ? Number(values['metrics-port']) : undefined,
      });
    }
    case 'config':
      if (rest[0] !== 'check') return usage(`unknown config command "${rest[0] ?? ''}"`);
      return configCheck();
    case 'plan':
      return plan(rest);
    case 'probe':
      return probe(rest);
    case 'emit':
      return emit(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      return usage(`unknown command "${command}"`);
  }
}

function usage(problem: string): number {
  console.error(`ripple: ${problem}\n\n${USAGE}`);
  return 2;
}

function load(): LoadedConfig {
  return loadConfig(configDir());
}

async function run(roles: {
  api: boolean;
  planner: boolean;
  workers: string[] | 'all';
  metricsPort?: number | undefined;
}): Promise<number> {
  const ripple = await Ripple.open({ configDir: configDir(), redisUrl: env.REDIS_URL || undefined });
  const { log } = ripple.engine;
  closeWithGrace({ delay: ripple.engine.config.service.workers.drainTimeout + 10_000 }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error, shutting down');
    else log.info({ signal }, 'shutting down: draining active deliveries');
    await ripple.close();
  });
  if (roles.planner) ripple.startPlanner();
  if (roles.workers === 'all') ripple.startWorkers();
  else if (roles.workers.length > 0) ripple.startWorkers(roles.workers);
  const host = env.HOST ?? '127.0.0.1';
  if (roles.api) {
    const address = await ripple.listen(Number(env.PORT ?? 8080), host);
    log.info({ address, apps: ripple.engine.apps.size, kinds: ripple.kinds }, 'ripple is up');
  } else if (roles.metricsPort !== undefined) {
    const address = await ripple.listen(roles.metricsPort, host, false);
    log.info({ address, kinds: ripple.kinds }, 'ripple worker is up (health and metrics only)');
  } else {
    log.info({ kinds: ripple.kinds }, 'ripple worker is up');
  }
  return new Promise<number>(() => {}); // runs until a signal
}

function assignText(app: AppConfig): string {
  if (app.assign === 'all') return 'all';
  return 'users' in app.assign ? `users: ${app.assign.users.join(',')}` : `groups: ${app.assign.groups.join(',')}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function configCheck(): number {
  const config = load();
  console.log(`config ${config.dir}: OK, ${config.apps.length} app(s)\n`);
  const rows = [['ID', 'KIND', 'ACTION', 'DELAY', 'JITTER', 'AFTER', 'ASSIGN', 'ENABLED']];
  for (const app of config.apps) {
    rows.push([
      app.id,
      app.kind,
      app.action,
      formatDuration(app.delay),
      formatDuration(app.jitter),
      app.after.join(',') || '-',
      assignText(app),
      app.enabled ? 'yes' : 'no',
    ]);
  }
  console.log(table(rows));
  return 0;
}

async function probe(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { app: { type: 'string', multiple: true } } });
  const ripple = await Ripple.open({
    configDir: configDir(),
    redisUrl: env.REDIS_URL || undefined,
    log: createLogger({ level: env.LOG_LEVEL ?? 'warn' }),
  });
  try {
    const results = await ripple.probe(values.app?.length ? values.app : undefined);
    if (results.length === 0) console.log('no enabled app to probe');
    else console.log(table([['APP', 'OK', 'DETAIL'], ...results.map((r) => [r.app, r.ok ? 'yes' : 'NO', r.detail])]));
    return results.every((r) => r.ok) ? 0 : 1;
  } finally {
    await ripple.close();
  }
}

function plan(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: { user: { type: 'string' }, groups: { type: 'string' }, at: { type: 'string' } },
  });
  if (!values.user) return usage('plan needs --user NAME');
  const at = values.at ? Date.parse(values.at) : Date.now();
  if (Number.isNaN(at)) return usage(`--at "${values.at}" is not a date-time`);
  const config = load();
  const groups = values.groups ? values.groups.split(',').filter(Boolean) : [];
  // Jitter shown as its midpoint: the plan is a forecast, the real run draws it.
  const result = planPropagation(config.apps, { username: values.user, groups }, at, () => 0.5);
  console.log(
    `plan for ${values.user}${groups.length ? ` (groups: ${groups.join(',')})` : ''}, change at ${new Date(at).toISOString()}\n`,
  );
  if (result.apps.length === 0) {
    console.log('no enabled app is assigned to this user');
    return 0;
  }
  const rows = [['#', 'APP', 'KIND', 'ACTION', 'DUE', 'IN', 'AFTER']];
  result.apps.forEach((item, i) => {
    rows.push([
      String(i + 1),
      item.app.id,
      item.app.kind,
      item.app.action,
      new Date(item.dueAt).toISOString(),
      `+${formatDuration(item.dueAt - at)}${item.app.jitter ? ` ±${formatDuration(item.app.jitter)}` : ''}`,
      item.after.join(',') || '-',
    ]);
  });
  console.log(table(rows));
  return 0;
}

async function emit(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      user: { type: 'string' },
      id: { type: 'string' },
      email: { type: 'string' },
      groups: { type: 'string' },
      source: { type: 'string', default: 'admin' },
      'password-stdin': { type: 'boolean', default: false },
      url: { type: 'string' },
    },
  });
  if (!values.user) return usage('emit needs --user NAME');
  const config = load();
  const secret = config.service.ingest.secrets[0] as string;
  const body: Record<string, unknown> = {
    type: 'password.changed',
    occurredAt: new Date().toISOString(),
    user: {
      id: values.id ?? values.user,
      username: values.user,
      ...(values.email ? { email: values.email } : {}),
      groups: values.groups ? values.groups.split(',').filter(Boolean) : [],
    },
    source: values.source,
  };
  if (values['password-stdin']) {
    const password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
    if (!password) return usage('--password-stdin read an empty password');
    body.credential = { password };
  }
  const payload = JSON.stringify(body);
  const id = `evt_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const now = new Date();
  const url = values.url ?? `http://${env.HOST ?? '127.0.0.1'}:${env.PORT ?? 8080}`;
  const res = await fetch(new URL('/v1/events', url), {
    method: 'POST',
    body: payload,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': new Webhook(secret).sign(id, now, payload),
    },
  });
  const text = await res.text();
  console.log(`HTTP ${res.status} ${text}`);
  return res.status === 202 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigErrors) {
      console.error(
        `ripple: invalid configuration in ${configDir()}:\n${err.errors.map((e) => `  ${e.message}`).join('\n')}`,
      );
    } else if (err instanceof RippleError) console.error(`ripple: ${err.message}`);
    else console.error(`ripple: ${errorMessage(err)}`);
    process.exitCode = 1;
  },
);
