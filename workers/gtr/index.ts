import { z } from 'zod';
import { ConfigError, errorMessage, PermanentDeliveryError } from '../../src/errors.js';
import { subjectFormatSchema, userSubject } from '../../src/ssf/caep.js';
import { setSigningKey } from '../../src/ssf/set.js';
import type { TargetAdapter } from '../../src/targets/adapter.js';
import { excerpt, fetchTarget, httpStatusError, isRedirect, redirectRefusal } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';
import { isLoopback } from '../oidc/revocation.js';
import { AccessTokens } from './token.js';

const httpUrl = (what: string) =>
  z
    .url({ protocol: /^https?$/, error: `${what} must be an http(s) URL` })
    .refine((u) => u.startsWith('https:') || isLoopback(u), `${what} must use https (http only on loopback)`);

const oauth = {
  /** The authorization server (its discovery document names the token endpoint). */
  issuer: httpUrl('auth.issuer'),
  clientId: z.string().min(1),
  scope: z.string().min(1).optional(),
};

const settings = z.strictObject({
  /** The app's Global Token Revocation endpoint. */
  endpoint: httpUrl('endpoint'),
  /** How the app knows the user. */
  subject: subjectFormatSchema.default({ format: 'email' }),
  /** `sub_id` (the current draft) or `subject` (the older member Okta's Universal Logout sends). */
  member: z.enum(['sub_id', 'subject']).default('sub_id'),
  /** How Ripple authenticates: one of a static bearer token, client credentials, or private_key_jwt. */
  auth: z.union(
    [
      z.strictObject({ bearer: z.string().min(1) }),
      z.strictObject({
        clientCredentials: z.strictObject({
          ...oauth,
          clientSecret: z.string().min(1),
          authMethod: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
        }),
      }),
      z.strictObject({
        privateKeyJwt: z.strictObject({
          ...oauth,
          /** The `signing` key that signs the client assertion; the active key by default. */
          kid: z.string().min(1).optional(),
        }),
      }),
    ],
    {
      error:
        'give one of bearer, clientCredentials { issuer, clientId, clientSecret } or privateKeyJwt { issuer, clientId }',
    },
  ),
});
type GtrSettings = z.output<typeof settings>;

/** `kind: gtr` — Global Token Revocation (the IETF draft behind Okta's Universal Logout): end every session and token of the user. */
export const gtrAdapter: TargetAdapter<'gtr', GtrSettings> = {
  kind: 'gtr',
  category: 'session',
  actions: ['revoke'],
  defaultAction: 'revoke',
  needsCredential: false,
  honoursRetryAfter: true,
  concurrency: 20,
  settings: () => settings,
  // A static bearer with an email or opaque subject signs nothing and names no issuer.
  needsService: (s) => ({
    issuer: s.subject.format === 'iss_sub' && !s.subject.iss,
    signing: 'privateKeyJwt' in s.auth,
  }),
  create(app, services) {
    const s = app.settings;
    const issuer = services.config.issuer ?? '';
    if (s.subject.format === 'iss_sub' && !s.subject.iss && !issuer) {
      throw new ConfigError(app.file, 'gtr.subject.iss', 'give iss, or set `issuer` in ripple.yaml');
    }
    let tokens: AccessTokens | undefined;
    if ('clientCredentials' in s.auth) {
      const { clientSecret, authMethod, ...rest } = s.auth.clientCredentials;
      tokens = new AccessTokens({ ...rest, auth: { method: authMethod, clientSecret } });
    } else if ('privateKeyJwt' in s.auth) {
      const { kid, ...rest } = s.auth.privateKeyJwt;
      const refuse = (reason: string) => new ConfigError(app.file, 'gtr.auth.privateKeyJwt', reason);
      const key = kid
        ? services.signing?.keys.find((k) => k.kid === kid)
        : setSigningKey(services, services.signing?.active.alg === 'ES256' ? 'ES256' : 'RS256', refuse);
      if (!key) throw refuse(`no signing key with kid "${kid}" in ripple.yaml`);
      tokens = new AccessTokens({ ...rest, auth: { method: 'private_key_jwt', key } });
    }
    const staticBearer = 'bearer' in s.auth ? s.auth.bearer : undefined;
    const where = redactSecrets(s.endpoint);

    async function post(body: string, signal: AbortSignal): Promise<Response> {
      const token = staticBearer ?? (await tokens?.get(signal));
      return fetchTarget(
        s.endpoint,
        {
          method: 'POST',
          body,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          redirect: 'manual',
          signal,
        },
        'GTR_UNREACHABLE',
      );
    }

    return {
      async deliver(ctx) {
        const subject = userSubject(s.subject, ctx.event.user, issuer);
        const body = JSON.stringify({ [s.member]: subject });
        let res = await post(body, ctx.signal);
        if (res.status === 401 && tokens) {
          // The cached access token may have been revoked or expired early: one more try with a new one.
          await res.body?.cancel().catch(() => {});
          tokens.forget();
          res = await post(body, ctx.signal);
        }
        if (res.status === 204 || res.status === 200) {
          await res.body?.cancel().catch(() => {});
          return { outcome: 'done', detail: `${where} revoked the user's sessions and tokens (HTTP ${res.status})` };
        }
        if (res.status === 404) {
          await res.body?.cancel().catch(() => {});
          return { outcome: 'skipped', detail: `${where} does not know this user (HTTP 404)` };
        }
        if (isRedirect(res)) {
          await res.body?.cancel().catch(() => {});
          throw redirectRefusal(res, 'GTR_REFUSED', 'gtr.endpoint');
        }
        const text = excerpt(await res.text().catch(() => ''), res);
        if (res.status === 422) {
          throw new PermanentDeliveryError(
            'GTR_UNABLE',
            redactSecrets(
              `unable to log out: the app could not revoke the user's sessions (HTTP 422)${text ? `: ${text}` : ''}`,
            ),
          );
        }
        throw httpStatusError(res, `global token revocation: HTTP ${res.status}${text ? `: ${text}` : ''}`, {
          retryable: 'GTR_HTTP_STATUS',
          permanent: 'GTR_REFUSED',
        });
      },

      async probe(signal) {
        // Authentication only (a token when OAuth is used), then an empty JSON body: a GTR endpoint answers 400.
        try {
          const res = await post('{}', signal);
          await res.body?.cancel().catch(() => {});
          const ok = res.status === 400 || res.status === 422;
          const hint =
            res.status === 401 || res.status === 403 ? ' (check gtr.auth)' : ok ? '' : ' (not a GTR endpoint?)';
          return { ok, detail: `POST ${where} → HTTP ${res.status}${hint}` };
        } catch (err) {
          return { ok: false, detail: errorMessage(err) };
        }
      },
    };
  },
};
