import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import closeWithGrace from 'close-with-grace';
import { Webhook } from 'standardwebhooks';
import { devSecretsMessage, findDevSecrets, isLoopback } from '../config/dev-secrets.js';
import { formatDuration, parseDuration } from '../config/duration.js';
import { type LoadedConfig, loadConfig } from '../config/load.js';
import type { AppConfig } from '../config/types.js';
import { AGENT_USAGE, agent } from '../devices/agent.js';
import { ConfigErrors, errorMessage, RippleError, StartupError } from '../errors.js';
import { createLogger } from '../log.js';
import { planPropagation } from '../planner/plan.js';
import { topologyFromEnv } from '../redis/connections.js';
import { Ripple } from '../ripple.js';
import { numberedUsers, readGroupsFile, simulate } from '../simulate/simulate.js';
import { ssfCommand } from '../ssf/cli.js';

const USAGE = `ripple — propagates a password change to every system that still trusts the old one

usage:
  ripple start [--data-dir DIR]        API, planner and all workers in one process (npm start)
  ripple serve                         API and planner only (needs REDIS_URL)
  ripple worker [--kind K]...          delivery workers for all kinds in use, or the given ones (needs REDIS_URL)
                [--metrics-port P]     also serve /healthz, /readyz and /metrics on P
  ripple config check                  validate the config directory and list the apps
  ripple probe [--app ID]... [--data-dir DIR]
                                       check each enabled app is reachable and configured (changes nothing)
  ripple plan --user NAME [--groups a,b] [--at ISO-TIME]
                                       dry run: which apps act, in what order, when (no Redis)
  ripple simulate --users N [--groups-file F] [--over D] [--json]
                                       forecast a forced reset of N users from the config: per app, the rate its
                                       limit allows, when its last job starts vs its delay, which apps run late,
                                       Redis memory at the peak (no target, no Redis). F: lines username,g1;g2
  ripple emit --user NAME [options]    sign a password.changed event with the first ingest secret of
                                       RIPPLE_CONFIG and send it to a running Ripple; prints the answer
    --id ID                            user.id in the event (default: the --user name)
    --email E                          user.email (default: none)
    --groups a,b                       user.groups (default: none)
    --source S                         source of the change (default: admin)
    --password-stdin                   read the new password from stdin and send it as credential.password
                                       (default: no credential; credential kinds such as ldap then fail)
    --url URL                          Ripple's base URL (default: http://$HOST:$PORT, i.e. http://127.0.0.1:8080)
                                       The webhook-id is a new evt_… each time; occurredAt is now.
${AGENT_USAGE}
  ripple ssf token --receiver NAME [--delay D] [--data-dir DIR]
                                       issue the bearer token a Shared Signals receiver manages its streams
                                       with (replaces its previous one); its streams get SETs D after a change

environment: RIPPLE_CONFIG (./config), REDIS_URL (unset: the embedded redis-server, start and probe only),
             or REDIS_SENTINELS=host:port,… + REDIS_SENTINEL_NAME, or REDIS_CLUSTER_NODES=host:port,…
             (REDIS_PASSWORD, REDIS_SENTINEL_PASSWORD, REDIS_TLS=1, REDIS_TLS_CA: see README "Redis topologies"),
             RIPPLE_DATA_DIR (the embedded Redis's data; default: var/<config dir name>/redis beside the
             config dir), PORT (8080), HOST (127.0.0.1), LOG_LEVEL (info)`;

const env = process.env;
const configDir = () => env.RIPPLE_CONFIG ?? './config';

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'start': {
      const { values } = parseArgs({ args: rest, options: { 'data-dir': { type: 'string' } } });
      portFromEnv();
      return run('start', { api: true, planner: true, workers: 'all', dataDir: values['data-dir'] });
    }
    case 'serve':
      parseArgs({ args: rest, options: {} });
      portFromEnv();
      return run('serve', { api: true, planner: true, workers: [] });
    case 'worker': {
      const { values } = parseArgs({
        args: rest,
        options: { kind: { type: 'string', multiple: true }, 'metrics-port': { type: 'string' } },
      });
      return run('worker', {
        api: false,
        planner: false,
        workers: values.kind?.length ? values.kind : 'all',
        metricsPort: values['metrics-port'] === undefined ? undefined : port(values['metrics-port'], '--metrics-port'),
      });
    }
    case 'config':
      if (rest[0] !== 'check') return usage(`unknown config command "${rest[0] ?? ''}"`);
      parseArgs({ args: rest.slice(1), options: {} });
      return configCheck();
    case 'plan':
      return plan(rest);
    case 'probe':
      return probe(rest);
    case 'emit':
      return emit(rest);
    case 'agent':
      return agent(rest, usage);
    case 'ssf':
      return ssfCommand(rest, {
        configDir: configDir(),
        redisUrl: env.REDIS_URL || undefined,
        dataDir: dataDirOption(undefined),
      });
    case 'simulate':
      return simulateCommand(rest);
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

/** A wrong command line: `main` prints it with the usage text and exits 2. */
class UsageError extends Error {}

/** A TCP port number from the command line or the environment, refused before anything starts. */
function port(value: string, what: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65_535) throw new UsageError(`${what} "${value}" is not a port number (0-65535)`);
  return n;
}

/** PORT, or 8080 when unset or empty. */
function portFromEnv(): number {
  return env.PORT ? port(env.PORT, 'PORT') : 8080;
}

/** HOST (127.0.0.1 when unset or empty) as a URL host: an IPv6 address goes in brackets. */
function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function load(): LoadedConfig {
  return loadConfig(configDir());
}

/** The embedded Redis's data directory from `--data-dir` or RIPPLE_DATA_DIR (unset: beside the config). */
const dataDirOption = (flag: string | undefined) => flag || env.RIPPLE_DATA_DIR || undefined;

async function run(
  command: 'start' | 'serve' | 'worker',
  roles: {
    api: boolean;
    planner: boolean;
    workers: string[] | 'all';
    metricsPort?: number | undefined;
    dataDir?: string | undefined;
  },
): Promise<number> {
  const config = load();
  const redis = topologyFromEnv(env);
  if (!redis && command !== 'start') {
    throw new StartupError(
      `ripple ${command} needs a shared Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379) to the Redis that ` +
        'every serve and worker process uses. Without it each would start a private Redis and never see the ' +
        "others' work. To run everything in one process with the embedded Redis, use ripple start.",
    );
  }
  const host = env.HOST || '127.0.0.1';
  const listens = roles.api || roles.metricsPort !== undefined;
  if (listens && !isLoopback(host)) {
    const found = findDevSecrets(config);
    if (found.length > 0) throw new StartupError(devSecretsMessage(host, found));
  }
  const ripple = await Ripple.open({
    configDir: config.dir,
    config,
    redis,
    dataDir: dataDirOption(roles.dataDir),
  });
  const { log } = ripple.engine;
  for (const warning of config.warnings) log.warn({ file: warning.file, key: warning.key }, warning.reason);
  const drainMs = ripple.engine.config.service.workers.drainTimeout;
  const delivers = roles.workers === 'all' || roles.workers.length > 0;
  let fatal = false;
  const grace = closeWithGrace(
    {
      // A backstop only: close() itself stops waiting shortly after the drain timeout. (drainTimeout
      // is at most 24 days, so this stays within what a timer can wait.)
      delay: drainMs + 6_000,
      logger: false,
      onTimeout: (ms) => log.error({ ms }, 'shutdown did not finish in time; exiting'),
    },
    async ({ signal, err }) => {
      if (err) log.error({ err }, 'fatal error, shutting down');
      else if (delivers) {
        log.info(
          { signal, drainMs },
          'shutting down: taking no new job, draining active deliveries (for up to workers.drainTimeout)',
        );
      } else log.info({ signal }, 'shutting down');
      const report = await ripple.close();
      // A non-zero exit tells the supervisor that work may have been left unrecorded (logged above),
      // or that Ripple stopped by itself and should be started again.
      if (!report.clean || fatal)
        throw new Error(fatal ? 'stopped: the embedded Redis is gone' : 'shutdown incomplete');
    },
  );
  ripple.superviseRedis((err) => {
    fatal = true;
    log.error({ err }, `${err.message}\nRipple stops (exit 1) so that a supervisor can start it again.`);
    grace.close();
  });
  try {
    if (roles.planner) ripple.startPlanner();
    if (roles.workers === 'all') ripple.startWorkers();
    else if (roles.workers.length > 0) ripple.startWorkers(roles.workers);
    if (delivers) await ripple.reportLeftovers();
    if (roles.api) {
      const address = await ripple.listen(portFromEnv(), host);
      log.info({ address, apps: ripple.engine.apps.size, kinds: ripple.runningKinds }, 'ripple is up');
    } else if (roles.metricsPort !== undefined) {
      const address = await ripple.listen(roles.metricsPort, host, false);
      log.info({ address, kinds: ripple.runningKinds }, 'ripple worker is up (health and metrics only)');
    } else {
      log.info({ kinds: ripple.runningKinds }, 'ripple worker is up');
    }
  } catch (err) {
    // e.g. the port is taken: stop what already runs (workers, the embedded Redis) before exiting.
    grace.uninstall();
    await ripple.close();
    throw err;
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
  for (const warning of config.warnings) console.error(`ripple: ${warning.message}`);
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
  const { values } = parseArgs({
    args,
    options: { app: { type: 'string', multiple: true }, 'data-dir': { type: 'string' } },
  });
  const ripple = await Ripple.open({
    configDir: configDir(),
    redis: topologyFromEnv(env),
    dataDir: dataDirOption(values['data-dir']),
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
  // Date.parse alone reads almost anything ("1" is 2001): only ISO 8601 is taken.
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
  const at = values.at === undefined ? Date.now() : iso.test(values.at) ? Date.parse(values.at) : Number.NaN;
  if (Number.isNaN(at)) return usage(`--at "${values.at}" is not an ISO 8601 date-time (e.g. 2026-11-27T07:00:00Z)`);
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

function simulateCommand(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      users: { type: 'string' },
      'groups-file': { type: 'string' },
      over: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const count = values.users === undefined ? undefined : Number(values.users);
  if (count !== undefined && !(/^\d+$/.test(values.users ?? '') && count >= 1 && count <= 10_000_000)) {
    return usage(`--users "${values.users}" is not a number of users (1-10000000)`);
  }
  if (count === undefined && !values['groups-file']) return usage('simulate needs --users N (or --groups-file F)');
  const overMs = values.over === undefined ? 0 : parseDuration(values.over);
  if (overMs === undefined) return usage(`--over "${values.over}" is not a duration (e.g. 0, 30m, 8h)`);
  const config = load();
  const users = values['groups-file'] ? readGroupsFile(values['groups-file'], count) : numberedUsers(count as number);
  const forecast = simulate(config.apps, users, overMs);
  if (values.json) {
    console.log(JSON.stringify(forecast, null, 2));
    return 0;
  }
  const over = overMs ? `evenly over ${formatDuration(overMs)}` : 'at one instant';
  console.log(`forced reset: ${forecast.users} users change their password ${over}\nusers: ${forecast.usersFrom}\n`);
  const rel = (ms: number) => `+${formatDuration(ms)}`;
  const rows = [['APP', 'KIND', 'JOBS', 'RATE LIMIT', 'ALLOWS', 'DELAY', 'LAST DUE', 'LAST START', 'LATE BY']];
  for (const a of forecast.apps) {
    rows.push([
      a.id,
      a.kind,
      String(a.jobs),
      a.rateLimit ? `${a.rateLimit.max}/${formatDuration(a.rateLimit.perMs)}` : '-',
      a.peakPerSecond === null ? 'unlimited' : `${Number(a.peakPerSecond.toPrecision(3))}/s`,
      `${formatDuration(a.delayMs)}${a.jitterMs ? ` ±${formatDuration(a.jitterMs)}` : ''}${a.after.length ? ` after ${a.after.join(',')}` : ''}`,
      a.jobs ? rel(a.lastDueMs) : '-',
      a.jobs ? rel(a.lastStartMs) : '-',
      a.lateByMs > 0 ? formatDuration(a.lateByMs) : '-',
    ]);
  }
  console.log(table(rows));
  const late = forecast.apps.filter((a) => a.lateByMs > 0);
  console.log(
    late.length
      ? `\nlate: ${late.map((a) => `${a.id} by up to ${formatDuration(a.lateByMs)} (last job at ${rel(a.lastStartMs)}, due by ${rel(a.lastDueMs)})`).join('; ')}`
      : '\nno app runs late: every job can start when it is due',
  );
  const { redis } = forecast;
  console.log(
    `Redis at the peak: ${redis.peakPendingJobs} pending app jobs × ~${redis.bytesPerPendingJob} B ≈ ${(redis.peakBytes / 1e6).toFixed(0)} MB ` +
      '(an estimate: what a pending job cost in npm run bench -- --soak; status of finished events stays for status.retention on top)',
  );
  console.log(
    'Modelled: delays, jitter, after: and rate limits. Not modelled: worker throughput and target response times (deliveries take no time here).',
  );
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
    // An admin running `ripple emit` resets someone's password: receivers see initiating_entity admin.
    initiator: 'admin',
  };
  if (values['password-stdin']) {
    const password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
    if (!password) return usage('--password-stdin read an empty password');
    body.credential = { password };
  }
  const payload = JSON.stringify(body);
  const id = `evt_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const now = new Date();
  const base = values.url ?? `http://${hostForUrl(env.HOST || '127.0.0.1')}:${portFromEnv()}`;
  let target: URL;
  try {
    // Relative to the base's path, so a Ripple behind a proxy at https://h/ripple gets …/ripple/v1/events.
    target = new URL('v1/events', base.endsWith('/') ? base : `${base}/`);
  } catch {
    return usage(`--url "${base}" is not a URL (e.g. http://127.0.0.1:8080)`);
  }
  let res: Response;
  let text: string;
  try {
    res = await fetch(target, {
      method: 'POST',
      body: payload,
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': new Webhook(secret).sign(id, now, payload),
      },
      signal: AbortSignal.timeout(EMIT_TIMEOUT_MS),
    });
    text = await res.text();
  } catch (err) {
    throw new RippleError('EMIT_UNREACHABLE', `cannot reach ${target}: ${fetchFailure(err)}`, { cause: err });
  }
  console.log(`HTTP ${res.status} ${text}`);
  return res.status === 202 ? 0 : 1;
}

const EMIT_TIMEOUT_MS = 15_000;

/** Why fetch failed, in the words of the network: ECONNREFUSED, ENOTFOUND, no answer in time. */
function fetchFailure(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `no answer within ${EMIT_TIMEOUT_MS / 1000} s`;
  const cause = err instanceof Error ? (err.cause as NodeJS.ErrnoException | undefined) : undefined;
  return cause?.code ?? cause?.message ?? errorMessage(err);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError || String((err as NodeJS.ErrnoException)?.code).startsWith('ERR_PARSE_ARGS')) {
      process.exitCode = usage(errorMessage(err));
      return;
    }
    if (err instanceof ConfigErrors) {
      console.error(
        `ripple: invalid configuration in ${configDir()}:\n${err.errors.map((e) => `  ${e.message}`).join('\n')}`,
      );
    } else if (err instanceof RippleError) console.error(`ripple: ${err.message}`);
    else console.error(`ripple: ${errorMessage(err)}`);
    process.exitCode = 1;
  },
);
