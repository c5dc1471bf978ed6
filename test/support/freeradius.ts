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
  /** How the `coa` virtual server answers Disconnect/CoA-Requests. */
  coa: 'ack' | 'nak';
  /** Error-Cause (FreeRADIUS dictionary name) added to NAKs, e.g. `Administratively-Prohibited`. */
  nakErrorCause?: string;
  /**
   * Whether replies carry Message-Authenticator (default true). FreeRADIUS 3.2.1 (Debian 12)
   * predates the Blast-RADIUS fixes and only signs replies when the attribute is in the reply list,
   * so the generated sites add it, the way a patched NAS does; `false` models an unpatched NAS.
   */
  replyMessageAuthenticator?: boolean;
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
 * only our sites: `default` (PAP against slapd via rlm_ldap) and `coa` (an RFC 5176 peer).
 * The client requires Message-Authenticator on every request (Blast-RADIUS defence).
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

  // Only the modules our sites use.
  const modsEnabled = join(raddb, 'mods-enabled');
  for (const name of await readdir(modsEnabled)) {
    if (!['pap', 'always'].includes(name)) await rm(join(modsEnabled, name), { force: true, recursive: true });
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
  const coaPort = await freePort();
  const nak = opts.coa === 'nak';
  const signReply =
    opts.replyMessageAuthenticator === false
      ? ''
      : `		update reply {
			Message-Authenticator := 0x00
		}
`;
  const errorCause = opts.nakErrorCause
    ? `		update reply {
			Error-Cause := ${opts.nakErrorCause}
		}
`
    : '';
  await writeFile(
    join(sitesEnabled, 'ripple'),
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

server coa {
	listen {
		type = coa
		ipaddr = 127.0.0.1
		port = ${coaPort}
	}
	recv-coa {
${signReply}${nak ? `${errorCause}		reject` : '		ok'}
	}
	send-coa {
		ok
	}
}
`,
  );
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
