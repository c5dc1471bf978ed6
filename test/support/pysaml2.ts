import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServerProcess } from '../../src/util/server-process.js';

const SCRIPT = join(import.meta.dirname, 'pysaml2-sp.py');
const INSTALL = 'apt-get install -y python3-pysaml2 xmlsec1';

/** What the pysaml2 SP recorded for one LogoutRequest. */
export type Pysaml2Record =
  | {
      verified: true;
      binding: 'soap' | 'post';
      id: string;
      issuer: string;
      destination: string;
      nameId: string;
      nameIdFormat: string;
      sessionIndexes: string[];
      reason: string | null;
      notOnOrAfter: string;
    }
  | { verified: false; binding: 'soap' | 'post'; error: string };

export interface Pysaml2Sp {
  entityID: string;
  sloUrl: string;
  /** The SP metadata pysaml2 wrote (one SLO endpoint for SOAP and HTTP-POST, its signing certificate). */
  metadataPath: string;
  metadata: string;
  addSession(sessionIndex: string, nameId: string): Promise<void>;
  /** Sign responses as a stock pysaml2 7.0 does (RSA-SHA1), or as configured (RSA-SHA256). */
  stockAlgorithms(stock: boolean): Promise<void>;
  /** Unwrap SOAP with pysaml2's own parser (`parse_logout_request(envelope, BINDING_SOAP)`), not byte for byte. */
  nativeSoapUnwrapping(native: boolean): Promise<void>;
  state(): Promise<{ sessions: Record<string, string>; log: Pysaml2Record[] }>;
  stop(): Promise<void>;
}

/**
 * The pysaml2 service provider (test/support/pysaml2-sp.py) in its own `/usr/bin/python3`
 * process; it loads Ripple's IdP metadata from `idpMetadataUrl` at the first LogoutRequest.
 */
export async function startPysaml2Sp(idpMetadataUrl: string): Promise<Pysaml2Sp> {
  const dir = mkdtempSync(join(tmpdir(), 'pysaml2-sp-'));
  const proc = await startServerProcess({
    name: 'pysaml2 SP',
    command: '/usr/bin/python3',
    args: [SCRIPT, dir, idpMetadataUrl],
    ready: /pysaml2 SP ready \{.*\}\n/,
    installHint: `${INSTALL} (Debian's python3)`,
    timeoutMs: 30_000,
  }).catch((err: Error) => {
    rmSync(dir, { recursive: true, force: true });
    if (/pysaml2 is not installed/.test(err.message)) throw new Error(`pysaml2 is not installed: ${INSTALL}`);
    throw err;
  });
  const ready = /pysaml2 SP ready (\{.*\})\n/.exec(proc.output())?.[1] ?? '{}';
  const info = JSON.parse(ready) as { entityID: string; sloUrl: string; base: string; metadataPath: string };
  const call = async (path: string, init?: RequestInit) => {
    const res = await fetch(`${info.base}${path}`, init);
    if (!res.ok) throw new Error(`pysaml2 SP ${path}: HTTP ${res.status}`);
    return res;
  };
  return {
    entityID: info.entityID,
    sloUrl: info.sloUrl,
    metadataPath: info.metadataPath,
    metadata: readFileSync(info.metadataPath, 'utf8'),
    async addSession(sessionIndex, nameId) {
      await call('/sessions', { method: 'POST', body: JSON.stringify({ sessionIndex, nameId }) });
    },
    async stockAlgorithms(stock) {
      await call('/algorithms', { method: 'POST', body: JSON.stringify({ stock }) });
    },
    async nativeSoapUnwrapping(native) {
      await call('/soap-unwrapping', { method: 'POST', body: JSON.stringify({ native }) });
    },
    async state() {
      return (await (await call('/state')).json()) as Awaited<ReturnType<Pysaml2Sp['state']>>;
    },
    async stop() {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
