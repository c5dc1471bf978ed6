import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { Attribute, Change, Client, type Entry, ResultCodeError } from 'ldapts';
import { z } from 'zod';
import { pem, type SchemaContext } from '../../src/config/schema-context.js';
import { DeliveryError, errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, DeliveryResult, ProbeResult, TargetAdapter } from '../../src/targets/adapter.js';
import { escapeDnValue, escapeFilterValue, renderTemplate, unknownPlaceholders } from './escape.js';
import { abandonOwnWrite, beginOwnWrite, type OwnWrites, recordOwnWrite } from './own-writes.js';
import { type HashScheme, hashPassword, PASSWORD_MODIFY_OID, passwordModifyRequest } from './password.js';

export { escapeDnValue, escapeFilterValue, renderTemplate } from './escape.js';
export { hashPassword, PASSWORD_MODIFY_OID, passwordModifyRequest } from './password.js';

/** RFC 4511 §4.1.9 result code names. */
export const RESULT_CODE_NAMES: Record<number, string> = {
  1: 'operationsError',
  2: 'protocolError',
  3: 'timeLimitExceeded',
  4: 'sizeLimitExceeded',
  7: 'authMethodNotSupported',
  8: 'strongerAuthRequired',
  11: 'adminLimitExceeded',
  12: 'unavailableCriticalExtension',
  13: 'confidentialityRequired',
  16: 'noSuchAttribute',
  17: 'undefinedAttributeType',
  18: 'inappropriateMatching',
  19: 'constraintViolation',
  20: 'attributeOrValueExists',
  21: 'invalidAttributeSyntax',
  32: 'noSuchObject',
  33: 'aliasProblem',
  34: 'invalidDNSyntax',
  36: 'aliasDereferencingProblem',
  48: 'inappropriateAuthentication',
  49: 'invalidCredentials',
  50: 'insufficientAccessRights',
  51: 'busy',
  52: 'unavailable',
  53: 'unwillingToPerform',
  54: 'loopDetect',
  64: 'namingViolation',
  65: 'objectClassViolation',
  80: 'other',
};

/** Result codes worth another attempt: the server is overloaded, shutting down or slow. */
const TRANSIENT_RESULT_CODES = new Set([3, 11, 51, 52, 80]);

const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

const template = (what: string) =>
  z
    .string()
    .min(1)
    .superRefine((value, ctx) => {
      const unknown = unknownPlaceholders(value);
      if (unknown.length) {
        ctx.addIssue({
          code: 'custom',
          message: `unknown placeholder ${unknown.map((u) => `{${u}}`).join(', ')} in ${what}; use {username}, {email} or {id}`,
        });
      }
    });

const settingsSchema = (ctx: SchemaContext) =>
  z
    .strictObject({
      url: z.string().regex(/^ldaps?:\/\/[^/?#\s]+\/?$/i, 'must be ldap://host[:port] or ldaps://host[:port]'),
      startTLS: z.boolean().default(false),
      tls: z
        .strictObject({
          /** CA certificate(s) to trust, PEM inline or a file relative to the config directory. */
          ca: pem(ctx).optional(),
          rejectUnauthorized: z.boolean().default(true),
          /** Name to verify the server certificate against, when it differs from the URL's host. */
          servername: z.string().min(1).optional(),
        })
        .default({ rejectUnauthorized: true }),
      bindDN: z.string().min(1),
      bindPassword: z.string().min(1),
      /** DN of the user, e.g. `uid={username},ou=people,dc=example,dc=org` (values RFC 4514-escaped). */
      userDN: template('userDN').optional(),
      /** Or find the user: values in `filter` are RFC 4515-escaped. */
      search: z
        .strictObject({
          base: z.string().min(1),
          filter: template('search.filter'),
          scope: z.enum(['sub', 'one']).default('sub'),
        })
        .optional(),
      /** `passwordModify` (RFC 3062, the server hashes) or a replace of the attribute with a salted hash. */
      passwordWrite: z.enum(['passwordModify', 'ssha', 'ssha256', 'ssha512']).default('passwordModify'),
      /** The attribute a hashed replace writes. */
      passwordAttribute: z.string().min(1).default('userPassword'),
      /** After writing, bind as the user with the new password. */
      verify: z.boolean().default(true),
    })
    .superRefine((s, issue) => {
      if ((s.userDN === undefined) === (s.search === undefined)) {
        issue.addIssue({ code: 'custom', path: ['userDN'], message: 'set exactly one of userDN or search' });
      }
      if (s.startTLS && /^ldaps:/i.test(s.url)) {
        issue.addIssue({
          code: 'custom',
          path: ['startTLS'],
          message: 'startTLS is for ldap:// URLs; ldaps:// is TLS already',
        });
      }
    });

export type LdapSettings = z.output<ReturnType<typeof settingsSchema>>;

/**
 * Records a write of Ripple's for `ldap-watch` (see own-writes.ts). Best effort: if it cannot be
 * recorded, a watcher takes the write for one more change, which carries no password and so
 * writes nothing again: no loop, one extra session logout at most.
 */
async function recordWritten(own: OwnWrites, client: Client, dn: string, ctx: DeliveryContext): Promise<void> {
  try {
    await recordOwnWrite(own, client, dn);
  } catch (err) {
    ctx.log.warn(
      { err, dn },
      "could not record this password write as Ripple's own (an ldap-watch source may report it)",
    );
  }
}

function resultName(code: number): string {
  return RESULT_CODE_NAMES[code] ?? `resultCode${code}`;
}

function snake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** Maps any failure of an LDAP step to Transient (retry) or Permanent (dead letter). */
export function classifyLdapError(err: unknown, step: string): DeliveryError {
  if (err instanceof DeliveryError) return err;
  if (err instanceof ResultCodeError) {
    const name = resultName(err.code);
    const detail = err.message && err.message !== name ? `: ${err.message}` : '';
    const message = `${step}: ${name} (${err.code})${detail}`;
    const code = `LDAP_${snake(name)}`;
    return TRANSIENT_RESULT_CODES.has(err.code)
      ? new TransientDeliveryError(code, message, { cause: err })
      : new PermanentDeliveryError(code, message, { cause: err });
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code && TLS_VERIFY_CODES.has(code)) {
    return new PermanentDeliveryError(
      'LDAP_TLS_VERIFY_FAILED',
      `${step}: server certificate refused: ${code} (${errorMessage(err)})`,
      {
        cause: err,
      },
    );
  }
  return new TransientDeliveryError('LDAP_UNREACHABLE', `${step}: ${code ?? errorMessage(err)}`, { cause: err });
}

function tlsOptions(s: LdapSettings): ConnectionOptions {
  const host = new URL(s.url).hostname.replace(/^\[|\]$/g, '');
  const servername = s.tls.servername ?? (isIP(host) ? undefined : host);
  return {
    ...(s.tls.ca ? { ca: [s.tls.ca] } : {}),
    rejectUnauthorized: s.tls.rejectUnauthorized,
    // StartTLS upgrades an existing socket: tell TLS which name to verify.
    host: s.tls.servername ?? host,
    ...(servername ? { servername } : {}),
  };
}

/** Runs `fn` with a connected (and, with startTLS, upgraded) client; aborts with the signal. */
export async function withClient<T>(
  s: LdapSettings,
  timeouts: Timeouts,
  signal: AbortSignal,
  fn: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client({
    url: s.url,
    timeout: timeouts.operation,
    connectTimeout: timeouts.connect,
    // ldapts speaks TLS from the first byte whenever tlsOptions is set: only for ldaps://.
    ...(/^ldaps:/i.test(s.url) ? { tlsOptions: tlsOptions(s) } : {}),
  });
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () =>
      reject(new TransientDeliveryError('LDAP_TIMEOUT', `${s.url}: aborted (app timeout or worker shutdown)`));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    return await Promise.race([
      (async () => {
        if (s.startTLS) {
          try {
            await client.startTLS(tlsOptions(s));
          } catch (err) {
            throw classifyLdapError(err, `StartTLS with ${s.url}`);
          }
        }
        return fn(client);
      })(),
      aborted,
    ]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
    await client.unbind().catch(() => {});
  }
}

export async function step<T>(name: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw classifyLdapError(err, name);
  }
}

export type FoundUser = { dn: string; entry: Entry } | { skip: string };

/**
 * Finds the user's DN (and reads `attributes` of the entry), or says why they are not in this
 * directory. The connection must be bound as the service (or be allowed to search anonymously).
 */
export async function resolveUser(
  client: Client,
  s: LdapSettings,
  user: { username: string; email?: string | undefined; id?: string | undefined },
  attributes: string[] = ['1.1'],
): Promise<FoundUser> {
  const values = { username: user.username, email: user.email, id: user.id };
  if (s.userDN !== undefined) {
    const rendered = renderTemplate(s.userDN, values, escapeDnValue);
    if ('missing' in rendered) return { skip: `user has no ${rendered.missing} for userDN ${s.userDN}` };
    try {
      const found = await client.search(rendered.text, { scope: 'base', filter: '(objectClass=*)', attributes });
      return { dn: rendered.text, entry: found.searchEntries[0] ?? { dn: rendered.text } };
    } catch (err) {
      if (err instanceof ResultCodeError && err.code === 32) return { skip: `no entry ${rendered.text} in ${s.url}` };
      throw classifyLdapError(err, `read ${rendered.text}`);
    }
  }
  const search = s.search as NonNullable<LdapSettings['search']>;
  const rendered = renderTemplate(search.filter, values, escapeFilterValue);
  if ('missing' in rendered) return { skip: `user has no ${rendered.missing} for filter ${search.filter}` };
  const result = await step(`search ${search.base} for ${rendered.text}`, () =>
    client.search(search.base, { scope: search.scope, filter: rendered.text, attributes, sizeLimit: 2 }),
  ).catch((err: DeliveryError) => {
    if (err.code === 'LDAP_SIZE_LIMIT_EXCEEDED') return { searchEntries: [{ dn: '' }, { dn: '' }] as Entry[] };
    throw err;
  });
  const entries = result.searchEntries;
  if (entries.length === 0) return { skip: `no entry matches ${rendered.text} under ${search.base}` };
  if (entries.length > 1) {
    throw new PermanentDeliveryError(
      'LDAP_AMBIGUOUS_USER',
      `more than one entry matches ${rendered.text} under ${search.base}: make the filter unique`,
    );
  }
  const entry = entries[0] as Entry;
  return { dn: entry.dn, entry };
}

async function writePassword(client: Client, s: LdapSettings, dn: string, password: string): Promise<void> {
  if (s.passwordWrite === 'passwordModify') {
    await step(`password modify (RFC 3062) for ${dn}`, () =>
      client.exop(PASSWORD_MODIFY_OID, passwordModifyRequest(dn, password)),
    );
    return;
  }
  const hashed = hashPassword(s.passwordWrite as HashScheme, password);
  await step(`replace ${s.passwordAttribute} of ${dn}`, () =>
    client.modify(
      dn,
      new Change({
        operation: 'replace',
        modification: new Attribute({ type: s.passwordAttribute, values: [hashed] }),
      }),
    ),
  );
}

/**
 * Whether a simple bind as `dn` with `password` succeeds on this connection (which is then bound
 * as the user, or anonymous): false on invalidCredentials (49), any other failure thrown.
 */
async function bindsAs(client: Client, dn: string, password: string): Promise<boolean> {
  try {
    await client.bind(dn, password);
    return true;
  } catch (err) {
    if (err instanceof ResultCodeError && err.code === 49) return false;
    throw classifyLdapError(err, `bind as ${dn} with the new password`);
  }
}

type Written = { skip: string } | { dn: string; alreadySet?: string };

/**
 * Connecting may fail fast (nothing was sent), but an operation already sent must be given the
 * app's `timeout` + `settle`: closing the socket earlier would let the directory apply the write
 * after Ripple gave up on it — after a newer change, even. The engine waits that long too.
 */
export interface Timeouts {
  connect: number;
  operation: number;
}

function createTarget(s: LdapSettings, timeouts: Timeouts, own?: OwnWrites) {
  const how = s.passwordWrite === 'passwordModify' ? 'password modify' : `${s.passwordWrite} replace`;

  /**
   * Binds as the service, finds the user and writes the password, unless it is set already.
   * A retry may follow a write that took effect although its answer was lost, or a verify that
   * reached a lagging replica; a directory with a password policy (pwdInHistory) then refuses the
   * same password again with constraintViolation (19). So, when Ripple may bind as the user
   * (`verify`), a retry first binds with the new password, and a first try that is refused binds
   * before failing: if it binds, the directory holds it and the app is done. A failed bind counts
   * towards a lockout policy, which is why a first try does not check before writing.
   */
  async function write(client: Client, ctx: DeliveryContext, password: string): Promise<Written> {
    const serviceBind = () => step(`bind as ${s.bindDN}`, () => client.bind(s.bindDN, s.bindPassword));
    await serviceBind();
    const user = await resolveUser(client, s, ctx.event.user);
    if ('skip' in user) return user;
    const checkFirst = s.verify && ctx.attempt > 1;
    if (checkFirst) {
      if (await bindsAs(client, user.dn, password)) {
        return {
          dn: user.dn,
          alreadySet: 'the new password already binds (set by an earlier attempt); not written again',
        };
      }
      await serviceBind();
    }
    // Marked before writing, so a watcher of this directory that sees the change first waits for the record.
    if (own) await beginOwnWrite(own, user.dn, timeouts.operation + 5_000);
    try {
      await writePassword(client, s, user.dn, password);
      if (own) await recordWritten(own, client, user.dn, ctx);
    } catch (err) {
      if (own) await abandonOwnWrite(own, user.dn).catch(() => {});
      const refused = err instanceof DeliveryError && err.code === 'LDAP_CONSTRAINT_VIOLATION';
      if (refused && s.verify && !checkFirst && (await bindsAs(client, user.dn, password).catch(() => false))) {
        const why = err.cause instanceof ResultCodeError ? err.cause.message : err.message;
        return {
          dn: user.dn,
          alreadySet: `the new password already binds; the directory refused setting it again (constraintViolation (19): ${why})`,
        };
      }
      throw err;
    }
    return { dn: user.dn };
  }

  return {
    async deliver(ctx: DeliveryContext): Promise<DeliveryResult> {
      const password = await ctx.credential();
      if (password === undefined || password === '') {
        throw new PermanentDeliveryError(
          'LDAP_NO_CREDENTIAL',
          'the event carries no new password (credential.password), and kind ldap must set one',
        );
      }
      const written = await withClient(s, timeouts, ctx.signal, (client) => write(client, ctx, password));
      if ('skip' in written) return { outcome: 'skipped', detail: written.skip };
      const { dn } = written;
      if (written.alreadySet)
        return { outcome: 'done', detail: `password already set for ${dn}: ${written.alreadySet}` };
      if (!s.verify) return { outcome: 'done', detail: `${how} for ${dn}` };
      await withClient(s, timeouts, ctx.signal, async (client) => {
        try {
          await client.bind(dn, password);
        } catch (err) {
          if (err instanceof ResultCodeError && err.code === 49) {
            // Written but not yet effective (e.g. a replica behind a load balancer): try again later.
            throw new TransientDeliveryError(
              'LDAP_VERIFY_FAILED',
              `verify: bind as ${dn} with the new password failed: invalidCredentials (49)`,
            );
          }
          throw classifyLdapError(err, `verify: bind as ${dn}`);
        }
      });
      return { outcome: 'done', detail: `${how} for ${dn}, verified by binding with the new password` };
    },

    async probe(signal: AbortSignal): Promise<ProbeResult> {
      try {
        return await withClient(s, timeouts, signal, async (client) => {
          await step(`bind as ${s.bindDN}`, () => client.bind(s.bindDN, s.bindPassword));
          const dse = await step('read root DSE', () =>
            client.search('', {
              scope: 'base',
              filter: '(objectClass=*)',
              attributes: ['supportedExtension', 'vendorName', 'vendorVersion', 'namingContexts'],
            }),
          );
          const root = dse.searchEntries[0] ?? { dn: '' };
          const asList = (v: unknown): string[] =>
            Array.isArray(v) ? v.map(String) : v === undefined ? [] : [String(v)];
          const extensions = asList(root.supportedExtension);
          const vendor = asList(root.vendorName)[0] ?? 'LDAP server';
          const contexts = asList(root.namingContexts).join(', ');
          if (s.passwordWrite === 'passwordModify' && !extensions.includes(PASSWORD_MODIFY_OID)) {
            return {
              ok: false,
              detail: `${s.url}: bound as ${s.bindDN}, but the server does not advertise Password Modify (${PASSWORD_MODIFY_OID}); use passwordWrite: ssha512`,
            };
          }
          if (s.search) {
            const base = s.search.base;
            await step(`read search base ${base}`, () =>
              client.search(base, { scope: 'base', filter: '(objectClass=*)', attributes: ['1.1'] }),
            );
          }
          return {
            ok: true,
            detail: `${s.url}: bound as ${s.bindDN} (${vendor}${contexts ? `, naming contexts ${contexts}` : ''})${s.passwordWrite === 'passwordModify' ? ', Password Modify advertised' : ''}`,
          };
        });
      } catch (err) {
        return { ok: false, detail: errorMessage(classifyLdapError(err, s.url)) };
      }
    },
  };
}

/**
 * `kind: ldap` — sets the user's new password in an LDAP directory (RFC 3062 Password
 * Modify, or a replace with a salted hash), then optionally proves it by binding with it.
 */
export const ldapAdapter: TargetAdapter<'ldap', LdapSettings> = {
  kind: 'ldap',
  category: 'credential',
  actions: ['refresh'],
  defaultAction: 'refresh',
  needsCredential: true,
  honoursRetryAfter: false,
  concurrency: 10,
  settings: (ctx) => settingsSchema(ctx),
  create(app, services) {
    return createTarget(
      app.settings,
      { connect: app.timeout, operation: app.timeout + app.settle },
      // Adapter-level tests build services without Redis: they have no watcher to tell.
      services.redis ? { redis: services.redis, prefix: services.prefix } : undefined,
    );
  },
};
