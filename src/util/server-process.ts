import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { StartupError } from '../errors.js';

export interface ServerProcessOptions {
  /** What it is, for messages ("redis-server", "slapd"). */
  name: string;
  command: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Output (stdout or stderr) that means the server is ready. */
  ready: RegExp;
  /** How to get the command when it is missing, e.g. "apt-get install -y redis-server". */
  installHint: string;
  timeoutMs?: number;
}

export interface ServerProcess {
  name: string;
  child: ChildProcess;
  /** Everything the process printed so far (for assertions and failure messages). */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts a server in the foreground and resolves once it prints its ready line.
 * The one way Ripple (embedded Redis) and its tests (Redis, slapd, FreeRADIUS) start real servers.
 */
export function startServerProcess(opts: ServerProcessOptions): Promise<ServerProcess> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  return new Promise((resolvePromise, reject) => {
    let log = '';
    const child = spawn(opts.command, opts.args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let settled = false;
    const exited = new Promise<void>((res) => child.once('exit', () => res()));
    const handle: ServerProcess = {
      name: opts.name,
      child,
      output: () => log,
      async stop(graceMs = 5_000) {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      },
    };
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new StartupError(`${opts.name} did not become ready within ${timeoutMs} ms:\n${tail(log)}`)),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      log += chunk.toString();
      if (log.length > 1_000_000) log = log.slice(-500_000);
      if (!settled && opts.ready.test(log)) {
        settled = true;
        clearTimeout(timer);
        resolvePromise(handle);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') {
        fail(new StartupError(`${opts.command} not found. Install it: ${opts.installHint}`));
      } else fail(new StartupError(`${opts.name}: ${err.message}`, { cause: err }));
    });
    child.once('exit', (code, signal) => {
      fail(new StartupError(`${opts.name} exited (${signal ?? `code ${code}`}) before it was ready:\n${tail(log)}`));
    });
  });
}

function tail(text: string): string {
  return text.split('\n').slice(-25).join('\n');
}

/** A TCP (and, by the same number being free, usually UDP) port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => res(port));
    });
  });
}
