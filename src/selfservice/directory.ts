import { type Client, type Entry, ResultCodeError } from 'ldapts';
import { attributeValues, groupName } from '../../workers/ldap/entry.js';
import {
  classifyLdapError,
  type LdapSettings,
  PASSWORD_MODIFY_OID,
  passwordModifyRequest,
  resolveUser,
  withClient,
} from '../../workers/ldap/index.js';
import { abandonOwnWrite, beginOwnWrite, type OwnWrites, recordOwnWrite } from '../../workers/ldap/own-writes.js';
import type { AppConfig } from '../config/types.js';
import { settledWithin } from '../runtime/delivery.js';

/** A directory user, as the event that records their change names them. */
export interface DirectoryUser {
  dn: string;
  /**
   * The directory's own name for the user: the entry's `uid`, else its DN. Never the spelling
   * typed: the directory may bind "ALİCE" as uid=alice, and everything after sign-in (MFA,
   * lockout-free steps, locks, ordering, events) must be about the entry that bound.
   */
  username: string;
  /** `entryUUID` when the directory has it, else the DN. */
  id: string;
  email?: string | undefined;
  /** The first RDN value of each `memberOf` group (what `assign: { groups }` names). */
  groups: string[];
}

export type PasswordWrite =
  | { outcome: 'changed'; user: DirectoryUser }
  | { outcome: 'invalid_credentials' }
  /** The directory's password policy refused the new password; `reason` is its own words. */
  | { outcome: 'policy'; reason: string; user: DirectoryUser };

/** How long a self-service change waits to record its write as Ripple's own (see `own-writes.ts`). */
const RECORD_OWN_WRITE_MS = 1_000;

/** Result codes with which a directory refuses a user's new password under its policy. */
const POLICY_CODES = new Set([19, 53]);

const ATTRIBUTES = ['uid', 'mail', 'entryUUID', 'memberOf'];

/** ldapts appends " Code: 0x13" to the server's diagnostic message; the user should read only the latter. */
export function diagnostic(err: ResultCodeError): string {
  return err.message.replace(/\s*Code: 0x[0-9a-f]+\s*$/i, '').trim();
}

function directoryUser(dn: string, entry: Entry): DirectoryUser {
  const first = (attr: string) => attributeValues(entry, attr)[0];
  return {
    dn,
    username: first('uid') ?? dn,
    id: first('entryUUID') ?? dn,
    email: first('mail'),
    groups: attributeValues(entry, 'memberOf').map(groupName),
  };
}

/**
 * The self-service directory: the `ldap` app named by `selfService.directory`, with its own
 * settings (url, TLS, service bind, user lookup). The user's password is checked and changed AS
 * THE USER — bound with the current password, then RFC 3062 Password Modify with the old and new
 * password — so the directory's own password policy (ppolicy) applies, which it would not to the
 * service account or rootdn.
 */
export class Directory {
  private readonly settings: LdapSettings;
  private readonly timeouts: { connect: number; operation: number };
  /** The longest one sign-in or change may keep its connection (the app's timeout and settle). */
  readonly longestMs: number;

  /**
   * @param own where Ripple's own writes are remembered, so that an `ldap-watch` source of this
   *   directory does not report the user's change a second time (as a newer change without a
   *   password, which would supersede this one's credential apps and then skip them).
   */
  constructor(
    readonly app: AppConfig<LdapSettings>,
    private readonly own?: OwnWrites & { warn(err: unknown, dn: string): void },
  ) {
    this.settings = app.settings;
    this.timeouts = { connect: app.timeout, operation: app.timeout + app.settle };
    this.longestMs = this.timeouts.connect + 2 * this.timeouts.operation;
  }

  /** The user, when `password` binds as them; undefined for an unknown user or a wrong password alike. */
  async authenticate(username: string, password: string): Promise<DirectoryUser | undefined> {
    return this.asUser(username, password, 0, async (user) => user);
  }

  /**
   * Binds as the user with `current`, asks `beforeWrite` (e.g. the MFA code check: a reason to
   * stop, or undefined to go on), then has the directory change it to `next` under its policy.
   * `beforeWrite` may wait up to `waitMs` (for the directory lock) on top of the app's timeouts;
   * after such a wait it calls `stillBinds()`, since the password may have changed meanwhile
   * (a delivery it waited for), before it consumes anything such as a one-time code.
   */
  async changePassword<Stop>(
    username: string,
    current: string,
    next: string,
    beforeWrite: (user: DirectoryUser, stillBinds: () => Promise<boolean>) => Promise<Stop | undefined>,
    waitMs = 0,
  ): Promise<PasswordWrite | { outcome: 'stopped'; why: Stop; user: DirectoryUser }> {
    const written = await this.asUser(username, current, waitMs, async (user, client) => {
      const stillBinds = async () => {
        try {
          await client.bind(user.dn, current);
          return true;
        } catch (err) {
          if (err instanceof ResultCodeError && err.code === 49) return false;
          throw classifyLdapError(err, `bind as ${user.dn}`);
        }
      };
      const why = await beforeWrite(user, stillBinds);
      if (why !== undefined) return { outcome: 'stopped', why, user } as const;
      const own = this.own;
      if (own) await beginOwnWrite(own, user.dn, this.longestMs + 5_000);
      try {
        await client.exop(PASSWORD_MODIFY_OID, passwordModifyRequest(user.dn, next, current));
        // Best effort, and bounded: the user's answer (and recording the change) must not wait on
        // it. Until it lands, the pending mark keeps a watcher from taking the write for a change.
        if (own) {
          const recording = recordOwnWrite(own, client, user.dn).catch((err) => own.warn(err, user.dn));
          if ((await settledWithin(recording, RECORD_OWN_WRITE_MS)) === 'late') {
            own.warn(new Error(`not recorded within ${RECORD_OWN_WRITE_MS} ms`), user.dn);
          }
        }
        return { outcome: 'changed', user } as const;
      } catch (err) {
        if (own) await abandonOwnWrite(own, user.dn).catch(() => {});
        if (err instanceof ResultCodeError && POLICY_CODES.has(err.code)) {
          return {
            outcome: 'policy',
            reason: diagnostic(err) || 'the directory refused the new password under its password policy',
            user,
          } as const;
        }
        if (err instanceof ResultCodeError && err.code === 49) return undefined;
        throw classifyLdapError(err, `password modify (RFC 3062) as ${user.dn}`);
      }
    });
    return written ?? { outcome: 'invalid_credentials' };
  }

  /**
   * Service bind, find the user, bind as them with `password`, then `fn` on that connection.
   * An unknown user costs a bind too (to a DN that does not exist), so that the answer takes
   * about as long as for a known user with a wrong password.
   */
  private async asUser<T>(
    username: string,
    password: string,
    waitMs: number,
    fn: (user: DirectoryUser, client: Client) => Promise<T | undefined>,
  ): Promise<T | undefined> {
    // An empty password is an "unauthenticated bind", which LDAP servers answer with success.
    if (password === '') return undefined;
    const s = this.settings;
    const signal = AbortSignal.timeout(this.longestMs + waitMs);
    return withClient(s, this.timeouts, signal, async (client) => {
      try {
        await client.bind(s.bindDN, s.bindPassword);
      } catch (err) {
        throw classifyLdapError(err, `bind as ${s.bindDN}`);
      }
      const found = await resolveUser(client, s, { username }, ATTRIBUTES);
      const dn = 'skip' in found ? this.nobody() : found.dn;
      try {
        await client.bind(dn, password);
      } catch (err) {
        if (err instanceof ResultCodeError && err.code === 49) return undefined;
        throw classifyLdapError(err, `bind as ${dn}`);
      }
      // A DN that binds without an entry found (an anonymous or unauthenticated bind) is nobody.
      if ('skip' in found) return undefined;
      return fn(directoryUser(found.dn, found.entry), client);
    });
  }

  /** A DN under the user base that no entry has: binding to it is refused like a wrong password. */
  private nobody(): string {
    const s = this.settings;
    const base = s.search?.base ?? (s.userDN ?? '').replace(/^(?:[^,\\]|\\.)*,/, '');
    return `cn=ripple-no-such-user,${base}`;
  }
}
