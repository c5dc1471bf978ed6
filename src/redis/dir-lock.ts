import { createHash } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { StartupError } from '../errors.js';

export interface DirLock {
  release(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A lock on one directory across processes, which the kernel releases when its holder dies,
 * `kill -9` included, so a crash never leaves it held. Linux: a listening socket in the abstract
 * namespace named after the directory (no file to go stale). Elsewhere: a lock file holding the
 * holder's pid, taken over when that pid is gone.
 */
export async function lockDir(dir: string, opts: { what: string; timeoutMs?: number }): Promise<DirLock> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    const lock = process.platform === 'linux' ? await tryAbstractLock(dir) : tryFileLock(dir);
    if (lock) return lock;
    if (Date.now() > deadline) {
      throw new StartupError(
        `another ripple process has been ${opts.what} in ${dir} for ${Math.round((opts.timeoutMs ?? 20_000) / 1000)} s; try again when it is done`,
      );
    }
    await sleep(50 + Math.random() * 100);
  }
}

function tryAbstractLock(dir: string): Promise<DirLock | undefined> {
  const name = `\0ripple-dir-lock-${createHash('sha256').update(dir).digest('hex').slice(0, 40)}`;
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err),
    );
    server.listen({ path: name }, () => {
      server.unref();
      resolve({ release: () => new Promise<void>((res) => server.close(() => res())) });
    });
  });
}

function tryFileLock(dir: string): DirLock | undefined {
  const file = join(dir, '.ripple-lock');
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
    return {
      release: async () => {
        try {
          unlinkSync(file);
        } catch {
          // already gone
        }
      },
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const holder = Number(readFileSafe(file));
  if (holder > 0 && !pidAlive(holder)) {
    try {
      unlinkSync(file);
    } catch {
      // another process took it over first
    }
  }
  return undefined;
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** True while a process with this pid exists (signal 0 tests without signalling). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
