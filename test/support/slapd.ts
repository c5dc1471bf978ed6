import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'ldapts';
import { freePort, type ServerProcess, startServerProcess } from '../../src/util/server-process.js';
import { createServerPki } from './pki.js';

const run = promisify(execFile);
const INSTALL = 'apt-get install -y slapd ldap-utils';

export interface Slapd {
  url: string;
  /** Set when started with `tls: true`. */
  ldapsUrl?: string;
  rootDN: string;
  rootPassword: string;
  baseDN: string;
  peopleDN: string;
  /**
   * With `ppolicy: true`: a service account that may write `userPassword` and is not the rootdn
   * (ppolicy does not apply to the rootdn), as a site would give Ripple.
   */
  serviceDN?: string;
  servicePassword?: string;
  /** The CA that signed slapd's certificate (empty without TLS). */
  caPem: string;
  caFile: string;
  userDN(uid: string): string;
  /** Adds uid=<uid>,ou=people with the password stored as {SSHA}. Returns the DN. */
  addUser(uid: string, password: string, extra?: Record<string, string>): Promise<string>;
  /** Whether a simple bind as dn/password succeeds right now. */
  canBind(dn: string, password: string): Promise<boolean>;
  output(): string;
  /** Stops slapd but keeps its data: `resume()` brings it back on the same ports. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stops slapd and deletes its temp directory. */
  stop(): Promise<void>;
}

async function waitForPort(port: number, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const sock = connect({ host: '127.0.0.1', port }, () => {
        sock.destroy();
        res(true);
      });
      sock.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`slapd is not accepting connections on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function sshaForTest(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** The password policy of `startSlapd({ ppolicy: true })`, as /work/shared/SERVERS.md describes a stock one. */
export const PPOLICY = { minLength: 12, inHistory: 3, maxFailure: 5 } as const;

/**
 * Starts a private OpenLDAP slapd (foreground, owned by this process) from a generated slapd.conf.
 * `ppolicy`: the password policy overlay (`pwdMinLength` 12, `pwdCheckQuality` 2, `pwdInHistory` 3,
 * lockout after 5 failures) as the default policy, and a service account it applies to.
 */
export async function startSlapd(opts: { tls?: boolean; ppolicy?: boolean } = {}): Promise<Slapd> {
  const dir = await mkdtemp(join(tmpdir(), 'ripple-slapd-'));
  const dbDir = join(dir, 'db');
  await mkdir(dbDir);
  const baseDN = 'dc=example,dc=org';
  const rootDN = `cn=admin,${baseDN}`;
  const rootPassword = randomBytes(12).toString('hex');
  const peopleDN = `ou=people,${baseDN}`;
  const serviceDN = `cn=ripple,ou=services,${baseDN}`;
  const servicePassword = randomBytes(12).toString('hex');
  const policyDN = `cn=default,ou=policies,${baseDN}`;
  const port = await freePort();
  const tlsPort = opts.tls ? await freePort() : undefined;
  const pki = opts.tls ? await createServerPki() : undefined;

  const conf = [
    'include /etc/ldap/schema/core.schema',
    'include /etc/ldap/schema/cosine.schema',
    'include /etc/ldap/schema/inetorgperson.schema',
    'include /etc/ldap/schema/nis.schema',
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    'moduleload pw-sha2',
    ...(opts.ppolicy ? ['moduleload ppolicy'] : []),
    `pidfile ${join(dir, 'slapd.pid')}`,
    `argsfile ${join(dir, 'slapd.args')}`,
    ...(pki
      ? [
          `TLSCACertificateFile ${pki.caFile}`,
          `TLSCertificateFile ${pki.certFile}`,
          `TLSCertificateKeyFile ${pki.keyFile}`,
        ]
      : []),
    'database mdb',
    `suffix "${baseDN}"`,
    `rootdn "${rootDN}"`,
    `rootpw ${rootPassword}`,
    `directory ${dbDir}`,
    ...(opts.ppolicy ? ['overlay ppolicy', `ppolicy_default "${policyDN}"`, 'ppolicy_use_lockout'] : []),
    `access to attrs=userPassword${opts.ppolicy ? ` by dn.exact="${serviceDN}" write` : ''} by self write by anonymous auth by * none`,
    'access to * by * read',
    '',
  ].join('\n');
  const confFile = join(dir, 'slapd.conf');
  await writeFile(confFile, conf);
  await writeFile(
    join(dir, 'base.ldif'),
    [
      `dn: ${baseDN}`,
      'objectClass: dcObject',
      'objectClass: organization',
      'o: Example',
      'dc: example',
      '',
      `dn: ${peopleDN}`,
      'objectClass: organizationalUnit',
      'ou: people',
      '',
      ...(opts.ppolicy
        ? [
            `dn: ou=policies,${baseDN}`,
            'objectClass: organizationalUnit',
            'ou: policies',
            '',
            `dn: ${policyDN}`,
            'objectClass: pwdPolicy',
            'objectClass: device',
            'cn: default',
            'pwdAttribute: userPassword',
            `pwdMinLength: ${PPOLICY.minLength}`,
            'pwdCheckQuality: 2',
            `pwdInHistory: ${PPOLICY.inHistory}`,
            'pwdLockout: TRUE',
            `pwdMaxFailure: ${PPOLICY.maxFailure}`,
            '',
            `dn: ou=services,${baseDN}`,
            'objectClass: organizationalUnit',
            'ou: services',
            '',
            `dn: ${serviceDN}`,
            'objectClass: person',
            'cn: ripple',
            'sn: ripple',
            `userPassword: ${servicePassword}`,
            '',
          ]
        : []),
    ].join('\n'),
  );
  try {
    await run('slapadd', ['-f', confFile, '-l', join(dir, 'base.ldif')]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`slapadd not found. Install it: ${INSTALL}`);
    throw new Error(`slapadd failed: ${e.stderr ?? e.message}`);
  }

  const url = `ldap://127.0.0.1:${port}`;
  const ldapsUrl = tlsPort ? `ldaps://127.0.0.1:${tlsPort}` : undefined;
  const listen = [`${url}/`, ...(ldapsUrl ? [`${ldapsUrl}/`] : [])].join(' ');
  let proc: ServerProcess | undefined;
  const start = async () => {
    proc = await startServerProcess({
      name: 'slapd',
      command: 'slapd',
      // -d 256 (stats): foreground, logs "slapd starting" and each operation.
      args: ['-d', '256', '-f', confFile, '-h', listen],
      ready: /slapd starting/,
      installHint: INSTALL,
    });
    // slapd prints "slapd starting" just before its listener thread accepts connections.
    await waitForPort(port);
    if (tlsPort) await waitForPort(tlsPort);
  };
  await start();

  const userDN = (uid: string) => `uid=${uid},${peopleDN}`;
  const withRoot = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const client = new Client({ url, timeout: 5000, connectTimeout: 5000 });
    try {
      await client.bind(rootDN, rootPassword);
      return await fn(client);
    } finally {
      await client.unbind().catch(() => {});
    }
  };

  return {
    url,
    ...(ldapsUrl ? { ldapsUrl } : {}),
    rootDN,
    rootPassword,
    ...(opts.ppolicy ? { serviceDN, servicePassword } : {}),
    baseDN,
    peopleDN,
    caPem: pki?.caPem ?? '',
    caFile: pki?.caFile ?? '',
    userDN,
    async addUser(uid, password, extra = {}) {
      const dn = userDN(uid);
      await withRoot((c) =>
        c.add(dn, {
          objectClass: ['inetOrgPerson'],
          uid,
          cn: uid,
          sn: uid,
          mail: `${uid}@example.org`,
          userPassword: sshaForTest(password),
          ...extra,
        }),
      );
      return dn;
    },
    async canBind(dn, password) {
      const client = new Client({ url, timeout: 5000, connectTimeout: 5000 });
      try {
        await client.bind(dn, password);
        return true;
      } catch (err) {
        if ((err as { code?: number }).code === 49) return false;
        throw err;
      } finally {
        await client.unbind().catch(() => {});
      }
    },
    output: () => proc?.output() ?? '',
    async pause() {
      await proc?.stop();
    },
    resume: start,
    async stop() {
      await proc?.stop();
      await rm(dir, { recursive: true, force: true });
      if (pki) await rm(pki.dir, { recursive: true, force: true });
    },
  };
}

/** An `ldap` app writing users' passwords in `slapd` as its service account (with `ppolicy: true`). */
export function ldapApp(slapd: Slapd, id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    kind: 'ldap',
    retry: { attempts: 2, backoff: '100ms', maxBackoff: '1s' },
    ...extra,
    ldap: {
      url: slapd.url,
      bindDN: slapd.serviceDN,
      bindPassword: slapd.servicePassword,
      userDN: `uid={username},${slapd.peopleDN}`,
    },
  };
}
