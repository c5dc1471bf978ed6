import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { type ServerProcess, startServerProcess } from '../../src/util/server-process.js';

export const RIPPLE_BIN = join(import.meta.dirname, '..', '..', 'bin', 'ripple.js');

/** Runs `ripple …` to completion (asynchronously, so a Ripple in this process can answer it). */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [RIPPLE_BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdin?.end(input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** Starts a long-running `ripple …` process; resolves once its log says it is up. */
export function spawnRipple(
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { cwd?: string } = {},
): Promise<ServerProcess> {
  return startServerProcess({
    name: `ripple ${args.join(' ')}`,
    command: process.execPath,
    args: [RIPPLE_BIN, ...args],
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    ready: /is up/,
    installHint: 'npm ci',
    timeoutMs: 20_000,
  });
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((res) => child.once('exit', (code) => res(code)));
}
