import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The RFC 6238 code of `secret` now (or `offsetSeconds` away) from oathtool: an implementation
 * independent of the library Ripple uses.
 */
export async function oathtool(secret: string, offsetSeconds = 0): Promise<string> {
  const at = new Date(Date.now() + offsetSeconds * 1000).toISOString().replace('T', ' ').replace(/\..*$/, ' UTC');
  try {
    const { stdout } = await run('oathtool', ['--totp', '-b', '--now', at, secret]);
    return stdout.trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('oathtool not found. Install it: apt-get install -y oathtool');
    }
    throw err;
  }
}
