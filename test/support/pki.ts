import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestPki {
  dir: string;
  caPem: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('openssl not found. Install it: apt-get install -y openssl');
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`);
  }
}

/** A throwaway CA only (e.g. the "wrong CA" a client must refuse a server with). */
export async function createCa(name = 'Ripple Test CA'): Promise<{ dir: string; caPem: string; caFile: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'ripple-pki-'));
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  const caFile = join(dir, 'ca.pem');
  return { dir, caPem: await readFile(caFile, 'utf8'), caFile };
}

/** A CA and a server certificate for 127.0.0.1 / localhost signed by it, made with the openssl CLI. */
export async function createServerPki(): Promise<TestPki> {
  const ca = await createCa();
  const { dir } = ca;
  await openssl(
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ],
    dir,
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '2',
      '-copy_extensions',
      'copy',
    ],
    dir,
  );
  return { ...ca, certFile: join(dir, 'server.pem'), keyFile: join(dir, 'server.key') };
}
