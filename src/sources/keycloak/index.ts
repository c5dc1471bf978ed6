import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { refusal } from '../../api/refusal.js';
import { errorMessage } from '../../errors.js';
import { header, parseJsonBody, secretMatches } from '../request.js';
import type { Received, SourceChange, SourceKind, SourceRequest } from '../types.js';
import { KeycloakAdminApi } from './admin-api.js';

const settingsSchema = z.strictObject({
  /** The webhook's secret (keycloak-events signs each body with it); several to rotate. */
  secrets: z.array(z.string().min(16, 'at least 16 characters')).min(1, 'at least one secret is required'),
  /** For admin events that name only a user id: Keycloak's admin REST API with a service-account client. */
  adminApi: z
    .strictObject({
      url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
      realm: z.string().min(1),
      clientId: z.string().min(1),
      clientSecret: z.string().min(1),
    })
    .optional(),
  /** How long a lookup in the admin REST API may take before the delivery is answered 503 (sent again). */
  lookupTimeout: z.number().int().min(100).max(30_000).default(5_000),
});

export type KeycloakSettings = z.output<typeof settingsSchema>;

/** The largest epoch-ms value a JavaScript Date holds. */
const MAX_DATE_MS = 8.64e15;

/** keycloak-events' webhook payload: the parts Ripple reads. */
const payloadSchema = z.looseObject({
  uid: z.string().min(1).max(256),
  // Epoch ms: a larger one is no date at all.
  time: z.number().int().positive().max(MAX_DATE_MS, 'is beyond any date (epoch milliseconds expected)'),
  type: z.string(),
  error: z.string().nullish(),
  resourcePath: z.string().nullish(),
  authDetails: z.looseObject({ userId: z.string().nullish(), username: z.string().nullish() }).nullish(),
  details: z.record(z.string(), z.unknown()).nullish(),
});

const RESET_PATH = /^users\/([^/]+)\/reset-password$/;

/** The user id in a reset path's segment, or why it is none (a bad %-escape, a `.`/`..` segment). */
function userIdOf(segment: string): { userId: string } | { bad: string } {
  let userId: string;
  try {
    userId = decodeURIComponent(segment);
  } catch {
    return { bad: `resourcePath: user id segment "${segment}" has a malformed %-escape` };
  }
  if (userId === '.' || userId === '..' || userId.includes('/')) {
    return { bad: `resourcePath: user id segment "${segment}" is not a user id (a path segment)` };
  }
  return { userId };
}

/** Which change a payload reports, or why it is none. */
function classify(
  p: z.output<typeof payloadSchema>,
): { userId: string; username?: string; initiator: 'user' | 'admin' } | { ignore: string } | { bad: string } {
  if (p.error) return { ignore: `${p.type} failed (${p.error})` };
  if (p.type === 'access.UPDATE_PASSWORD' || p.type === 'access.UPDATE_CREDENTIAL') {
    const credentialType = p.details?.credential_type;
    if (p.type === 'access.UPDATE_CREDENTIAL' && credentialType !== 'password') {
      return {
        ignore: `access.UPDATE_CREDENTIAL of credential type ${String(credentialType ?? 'unknown')}, not password`,
      };
    }
    const userId = p.authDetails?.userId;
    if (!userId) return { ignore: `${p.type} without authDetails.userId` };
    const username =
      p.authDetails?.username ?? (typeof p.details?.username === 'string' ? p.details.username : undefined);
    return { userId, ...(username ? { username } : {}), initiator: 'user' };
  }
  if (p.type === 'admin.USER-ACTION') {
    const m = RESET_PATH.exec(p.resourcePath ?? '');
    if (!m?.[1])
      return { ignore: `admin.USER-ACTION on ${p.resourcePath ?? '(no resourcePath)'}, not users/{id}/reset-password` };
    const id = userIdOf(m[1]);
    return 'bad' in id ? id : { userId: id.userId, initiator: 'admin' };
  }
  return { ignore: `event type ${p.type} is not a password change` };
}

/** `sha256=<hex>` or bare hex, compared in constant time against each secret's HMAC of the body. */
function signatureMatches(given: string | undefined, body: Buffer, secrets: readonly string[]): boolean {
  const hex = given?.replace(/^sha256=/i, '').toLowerCase();
  return secretMatches(
    hex,
    secrets.map((secret) => createHmac('sha256', secret).update(body).digest('hex')),
  );
}

async function receive(s: KeycloakSettings, api: KeycloakAdminApi | undefined, req: SourceRequest): Promise<Received> {
  if (req.method !== 'POST') {
    return { refused: { status: 405, body: refusal('method_not_allowed', 'keycloak sources take POST only') } };
  }
  const signature = header(req.headers, 'x-keycloak-signature');
  if (!signature) {
    return { refused: { status: 401, body: refusal('signature_missing', 'header X-Keycloak-Signature is required') } };
  }
  if (!signatureMatches(signature, req.body, s.secrets)) {
    return {
      refused: {
        status: 401,
        body: refusal(
          'signature_invalid',
          'X-Keycloak-Signature is not the HMAC-SHA256 of the body with a configured secret',
        ),
      },
    };
  }
  const body = parseJsonBody(req.body);
  if ('refused' in body) return body;
  const parsed = payloadSchema.safeParse(body.json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return {
      refused: {
        status: 400,
        body: refusal(
          'invalid_body',
          `not a keycloak-events payload: ${issue?.path.join('.') || '(body)'}: ${issue?.message}`,
        ),
      },
    };
  }
  const p = parsed.data;
  const what = classify(p);
  if ('ignore' in what) return { changes: [], ignored: [`${p.uid}: ${what.ignore}`] };
  if ('bad' in what) {
    const issue = { field: 'resourcePath', message: what.bad.replace(/^resourcePath: /, '') };
    return { refused: { status: 400, body: refusal('invalid_body', what.bad, [issue]) } };
  }
  let username = what.username;
  let email: string | undefined;
  if (!username) {
    if (!api) {
      return {
        changes: [],
        ignored: [`${p.uid}: names only user id ${what.userId}; set adminApi to look up the username`],
      };
    }
    let found: Awaited<ReturnType<KeycloakAdminApi['user']>>;
    try {
      found = await api.user(what.userId, AbortSignal.any([req.signal, AbortSignal.timeout(s.lookupTimeout)]));
    } catch (err) {
      // Nothing recorded: keycloak-events sends the event again.
      return {
        refused: {
          status: 503,
          body: refusal('unavailable', `${errorMessage(err)}; nothing was accepted, send it again`),
        },
      };
    }
    if (!found) return { changes: [], ignored: [`${p.uid}: Keycloak has no user ${what.userId}`] };
    username = found.username;
    email = found.email;
  }
  const change: SourceChange = {
    sourceEventId: p.uid,
    occurredAt: new Date(p.time).toISOString(),
    user: { id: what.userId, username, ...(email ? { email } : {}) },
    initiator: what.initiator,
  };
  return { changes: [change], ignored: [] };
}

/**
 * `kind: keycloak` — the keycloak-events webhook (`X-Keycloak-Signature`, hex HMAC-SHA256 of the
 * body): a user's own password update and an admin's password reset.
 */
export const keycloakSource: SourceKind<'keycloak', KeycloakSettings> = {
  kind: 'keycloak',
  mode: 'push',
  settings: () => settingsSchema,
  create(source) {
    const s = source.settings;
    const api = s.adminApi ? new KeycloakAdminApi(s.adminApi) : undefined;
    return { receive: (req) => receive(s, api, req) };
  },
};
