import { access, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type ServerProcess, startServerProcess } from '../../src/util/server-process.js';

const INSTALL = 'apt-get install -y freeradius freeradius-utils freeradius-ldap';
const SYSTEM_RADDB = '/etc/freeradius/3.0';

export interface FreeradiusOptions {
  /** The slapd FreeRADIUS authenticates users against (rlm_ldap, PAP). */
  ldap: { url: string; bindDN: string; password: string; baseDN: string };
  /** Shared secret of the client 127.0.0.1 (Ripple, radclient and the tests). */
  nasSecret: string;
  /**
   * How the `coa` virtual server answers Disconnect/CoA-Requests. `ack` is FreeRADIUS's own
   * `sites-available/coa`, unchanged but for its address and port; `nak` makes `recv-coa`
   * reject (a NAS that refuses).
   */
  coa: 'ack' | 'nak';
  /** Error-Cause (FreeRADIUS dictionary name) added to NAKs, e.g. `Administratively-Prohibited`. */
  nakErrorCause?: string;
  /**
   * Add Message-Authenticator to every reply (default false: stock). Debian 12's FreeRADIUS
   * 3.2.1 predates the Blast-RADIUS fixes: stock, it answers Access-Requests and
   * Disconnect/CoA-Requests *without* Message-Authenticator, even when the request had one.
   * With `update reply { Message-Authenticator := 0x00 }` (what this option adds) it signs
   * Access replies per RFC 3579 and CoA/Disconnect replies over a zeroed authenticator (the
   * pre-RFC 5176 form Ripple reports as `legacy`). Models a NAS configured to sign its replies.
   */
  signReplies?: boolean;
  /** Listen for CoA/Disconnect on this port (default: a free one), e.g. to bring up a NAS that was down. */
  coaPort?: number;
}

export interface Freeradius {
  authPort: number;
  coaPort: number;
  secret: string;
  /** The full `-X` debug log so far. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts FreeRADIUS 3.2 in the foreground (`-X`) from a copy of the system config with
 * two sites: `default` (PAP against slapd via rlm_ldap, as a site would set it up) and the
 * stock `coa` virtual server (an RFC 5176 peer). The client entry requires
 * Message-Authenticator on every request (Blast-RADIUS defence, as the README advises).
 */
export async function startFreeradius(opts: FreeradiusOptions): Promise<Freeradius> {
  try {
    await access('/usr/lib/freeradius/rlm_ldap.so');
  } catch {
    throw new Error(`FreeRADIUS's LDAP module (rlm_ldap) is missing. Install it: ${INSTALL}`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'ripple-radius-'));
  const raddb = join(dir, 'raddb');
  try {
    await cp(SYSTEM_RADDB, raddb, { recursive: true, dereference: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot copy ${SYSTEM_RADDB} (${code}): is FreeRADIUS installed? Install it: ${INSTALL}`);
  }
  const logDir = join(dir, 'log');
  const runDir = join(dir, 'run');
  await mkdir(logDir);
  await mkdir(runDir);

  let main = await readFile(join(raddb, 'radiusd.conf'), 'utf8');
  main = main
    .replace(/^(\s*)(user|group) = freerad/gm, '$1#$2 = freerad')
    .replace(/^raddbdir = .*$/m, `raddbdir = ${raddb}`)
    .replace(/^logdir = .*$/m, `logdir = ${logDir}`)
    .replace(/^run_dir = .*$/m, `run_dir = ${runDir}`)
    .replace(/^(\s*)reject_delay = \d+/m, '$1reject_delay = 0');
  await writeFile(join(raddb, 'radiusd.conf'), main);

  // Only the modules our sites use (`realm` provides `suffix`, which the stock coa site calls).
  const modsEnabled = join(raddb, 'mods-enabled');
  for (const name of await readdir(modsEnabled)) {
    if (!['pap', 'always', 'realm'].includes(name)) await rm(join(modsEnabled, name), { force: true, recursive: true });
  }
  const ldapUrl = new URL(opts.ldap.url);
  await writeFile(
    join(modsEnabled, 'ldap'),
    `ldap {
	server = '${ldapUrl.hostname}'
	port = ${ldapUrl.port || 389}
	identity = '${opts.ldap.bindDN}'
	password = '${opts.ldap.password}'
	base_dn = '${opts.ldap.baseDN}'
	user {
		base_dn = "\${..base_dn}"
		filter = "(uid=%{%{Stripped-User-Name}:-%{User-Name}})"
		scope = 'sub'
	}
	update {
		control:Password-With-Header += 'userPassword'
	}
	options {
		net_timeout = 2
		res_timeout = 5
		srv_timelimit = 3
	}
	pool {
		start = 0
		min = 0
		max = 4
		spare = 1
		uses = 0
		retry_delay = 1
		lifetime = 0
		idle_timeout = 60
	}
}
`,
  );

  const sitesEnabled = join(raddb, 'sites-enabled');
  await rm(sitesEnabled, { recursive: true, force: true });
  await mkdir(sitesEnabled);
  const authPort = await freePort();
  const coaPort = opts.coaPort ?? (await freePort());
  const signReply = opts.signReplies
    ? `		update reply {
			Message-Authenticator := 0x00
		}
`
    : '';
  await writeFile(
    join(sitesEnabled, 'default'),
    `server default {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = ${authPort}
	}
	authorize {
		ldap
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
	}
	post-auth {
${signReply}		ok
		Post-Auth-Type REJECT {
${signReply}			ok
		}
	}
}
`,
  );
  await writeFile(join(sitesEnabled, 'coa'), await coaSite(raddb, coaPort, opts, signReply));
  await writeFile(
    join(raddb, 'clients.conf'),
    `client ripple-test {
	ipaddr = 127.0.0.1
	secret = '${opts.nasSecret}'
	require_message_authenticator = yes
	nas_type = other
}
`,
  );

  let proc: ServerProcess;
  try {
    proc = await startServerProcess({
      name: 'freeradius',
      command: 'freeradius',
      args: ['-d', raddb, '-X'],
      ready: /Ready to process requests/,
      installHint: INSTALL,
      timeoutMs: 20_000,
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    authPort,
    coaPort,
    secret: opts.nasSecret,
    output: () => proc.output(),
    async stop() {
      await proc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * FreeRADIUS's own `sites-available/coa`, listening on 127.0.0.1:port instead of *:3799; for
 * `nak` or `signReplies` the `recv-coa` section is changed, and only then.
 */
async function coaSite(raddb: string, port: number, opts: FreeradiusOptions, signReply: string): Promise<string> {
  const stock = await readFile(join(raddb, 'sites-available', 'coa'), 'utf8');
  const listen = /(listen \{\s*type = coa\s*)ipaddr = \*(\s*)port = 3799/;
  const recv = /(recv-coa \{)([\s\S]*?)(\n\t\tok\n\t\})/;
  if (!listen.test(stock) || !recv.test(stock)) {
    throw new Error(`${SYSTEM_RADDB}/sites-available/coa is not the one this fixture knows (FreeRADIUS 3.2)`);
  }
  let site = stock.replace(listen, `$1ipaddr = 127.0.0.1$2port = ${port}`);
  if (opts.coa === 'nak' || signReply) {
    const errorCause = opts.nakErrorCause
      ? `		update reply {
			Error-Cause := ${opts.nakErrorCause}
		}
`
      : '';
    const verdict = opts.coa === 'nak' ? `${errorCause}\t\treject` : '\t\tok';
    site = site.replace(recv, (_m, open: string, body: string) => `${open}${body}\n${signReply}${verdict}\n\t}`);
  }
  return site;
}
