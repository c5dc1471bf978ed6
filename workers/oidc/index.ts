import { z } from 'zod';
import { ConfigError, errorMessage } from '../../src/errors.js';
import { planSessions } from '../../src/sessions/plan.js';
import type { SessionRecord } from '../../src/sessions/store.js';
import { renderSubject, subjectTemplate } from '../../src/sessions/template.js';
import type { DeliveryContext, DeliveryResult, TargetAdapter } from '../../src/targets/adapter.js';
import {
  describeFetchError,
  excerpt,
  fetchTarget,
  httpStatusError,
  isRedirect,
  redirectRefusal,
} from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';
import { logoutToken } from './logout-token.js';
import { isLoopback, Revoker } from './revocation.js';

const httpUrl = (what: string) =>
  z
    .url({ protocol: /^https?$/, error: `${what} must be an http(s) URL` })
    .refine((u) => u.startsWith('https:') || isLoopback(u), `${what} must use https (http only on loopback)`);

const settings = z
  .strictObject({
    /** The app's client_id at the OP: the `aud` of logout tokens. */
    clientId: z.string().min(1),
    /** How the app knows the user: the `sub` of logout tokens. */
    subject: subjectTemplate().default('{id}'),
    /** The RP's back_channel_logout_uri; needed for `action: revoke`. */
    backchannelLogoutUri: httpUrl('backchannelLogoutUri').optional(),
    /** RFC 7009 revocation of recorded refresh tokens; needed for `action: refresh`. */
    revocation: z
      .strictObject({
        issuer: httpUrl('revocation.issuer'),
        clientId: z.string().min(1),
        clientSecret: z.string().min(1).optional(),
        authMethod: z.enum(['client_secret_basic', 'client_secret_post', 'none']).default('client_secret_basic'),
      })
      .refine((r) => r.authMethod === 'none' || r.clientSecret, {
        path: ['clientSecret'],
        message: 'required unless authMethod is none',
      })
      .optional(),
    /** With no session recorded for the user, send one `sub`-only logout token (ends all their sessions). */
    allowSubjectWide: z.boolean().default(false),
  })
  .refine((s) => s.backchannelLogoutUri || s.revocation, {
    message: 'give backchannelLogoutUri (for revoke) and/or revocation (for refresh)',
  });
type OidcSettings = z.output<typeof settings>;

/** `kind: oidc` — OpenID Connect Back-Channel Logout tokens and RFC 7009 refresh-token revocation. */
export const oidcAdapter: TargetAdapter<'oidc', OidcSettings> = {
  kind: 'oidc',
  category: 'session',
  actions: ['revoke', 'refresh'],
  defaultAction: 'revoke',
  needsCredential: false,
  honoursRetryAfter: true,
  concurrency: 20,
  settings: () => settings,
  create(app, services) {
    const s = app.settings;
    const issuer = services.config.issuer;
    const key = services.signing?.active;
    if (app.action === 'revoke') {
      if (!s.backchannelLogoutUri)
        throw new ConfigError(app.file, 'oidc.backchannelLogoutUri', 'required for action: revoke');
      if (!issuer)
        throw new ConfigError(app.file, 'kind', 'kind oidc with action revoke needs `issuer` in ripple.yaml');
      if (!key)
        throw new ConfigError(app.file, 'kind', 'kind oidc with action revoke needs `signing` keys in ripple.yaml');
    }
    if (app.action === 'refresh' && !s.revocation) {
      throw new ConfigError(app.file, 'oidc.revocation', 'required for action: refresh');
    }
    if (!services.sessions && !s.allowSubjectWide) {
      throw new ConfigError(
        app.file,
        'oidc.allowSubjectWide',
        'no session registry is running, so set allowSubjectWide: true',
      );
    }
    const revoker = s.revocation ? new Revoker(s.revocation) : undefined;

    const logoutUri = s.backchannelLogoutUri ?? '';

    async function sendLogout(ctx: DeliveryContext, claims: { sub: string; sid?: string | undefined }): Promise<void> {
      const url = logoutUri;
      const token = await logoutToken({
        key: key as NonNullable<typeof key>,
        issuer: issuer as string,
        audience: s.clientId,
        ...claims,
      });
      const res = await fetchTarget(
        url,
        {
          method: 'POST',
          body: new URLSearchParams({ logout_token: token }),
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'cache-control': 'no-store' },
          redirect: 'manual',
          signal: ctx.signal,
        },
        'OIDC_LOGOUT_UNREACHABLE',
      );
      if (res.status === 200 || res.status === 204) {
        await res.body?.cancel().catch(() => {});
        return;
      }
      if (isRedirect(res)) {
        await res.body?.cancel().catch(() => {});
        throw redirectRefusal(res, 'OIDC_LOGOUT_REFUSED', 'oidc.backchannelLogoutUri');
      }
      const text = excerpt(await res.text().catch(() => ''));
      const message = `back-channel logout ${claims.sid ? `of sid ${claims.sid}` : 'of the subject'}: HTTP ${res.status}${text ? `: ${text}` : ''}`;
      throw httpStatusError(res, message, { retryable: 'OIDC_LOGOUT_FAILED', permanent: 'OIDC_LOGOUT_REFUSED' });
    }

    async function revokeRefreshToken(
      ctx: DeliveryContext,
      session: SessionRecord,
      warnings: string[],
    ): Promise<boolean> {
      if (!session.hasRefreshToken || !revoker || !services.sessions) return false;
      let token: string | undefined;
      try {
        token = await services.sessions.refreshToken(session.id);
      } catch (err) {
        // Sealed under a vault key that is gone (rotated): nothing we can revoke.
        warnings.push(`refresh token of session ${session.id} is unreadable: ${errorMessage(err)}`);
      }
      if (token) await revoker.revokeRefreshToken(token, ctx.signal);
      await services.sessions.forgetRefreshToken(session.id);
      return Boolean(token);
    }

    const unrevocable = (session: SessionRecord) =>
      `session ${session.id} has a refresh token but oidc.revocation is not configured: it stays valid at the OP`;

    return {
      async deliver(ctx): Promise<DeliveryResult> {
        const { event } = ctx;
        const plan = await planSessions(
          services.sessions,
          app.id,
          event.user.username,
          event.occurredAt,
          s.allowSubjectWide,
        );
        if (plan.mode === 'skip') return { outcome: 'skipped', detail: plan.detail };
        const sub = renderSubject(s.subject, event.user);

        if (plan.mode === 'subjectWide') {
          if (ctx.action === 'refresh') {
            return { outcome: 'skipped', detail: 'no refresh token recorded for this user; nothing to revoke' };
          }
          await sendLogout(ctx, { sub });
          return { outcome: 'done', detail: `sub-only logout token accepted by ${redactSecrets(logoutUri)}` };
        }

        let loggedOut = 0;
        let revoked = 0;
        const warnings: string[] = [];
        if (ctx.action === 'refresh') {
          for (const session of plan.sessions) if (await revokeRefreshToken(ctx, session, warnings)) revoked++;
        } else {
          const withSid = plan.sessions.filter((session) => session.sid);
          const withoutSid = plan.sessions.filter((session) => !session.sid);
          // Each session is ended, its token revoked and the entry forgotten before the next one,
          // so a retry after a failure picks up where this attempt stopped.
          for (const session of withSid) {
            await sendLogout(ctx, { sub, sid: session.sid });
            loggedOut++;
            if (await revokeRefreshToken(ctx, session, warnings)) revoked++;
            else if (session.hasRefreshToken && !revoker) warnings.push(unrevocable(session));
            await services.sessions?.delete(session.id);
          }
          if (withoutSid.length > 0) {
            // Without a sid only a subject-wide logout ends them, safe only when no later session exists.
            const subjectWide = s.allowSubjectWide && plan.later === 0;
            if (subjectWide) {
              await sendLogout(ctx, { sub });
              loggedOut++;
            }
            for (const session of withoutSid) {
              if (await revokeRefreshToken(ctx, session, warnings)) revoked++;
              else if (session.hasRefreshToken && !revoker) warnings.push(unrevocable(session));
              // Only what was ended is forgotten: a session still open at the app stays listed.
              if (subjectWide) await services.sessions?.delete(session.id);
            }
            if (!subjectWide) {
              const why = s.allowSubjectWide ? 'a later session exists' : 'allowSubjectWide is off';
              warnings.push(
                `${withoutSid.length} session(s) recorded without sid not logged out (${why}): kept in the registry`,
              );
            }
          }
        }
        const parts = [];
        if (ctx.action === 'revoke') parts.push(`${loggedOut} logout token(s) accepted`);
        parts.push(`${revoked} refresh token(s) revoked`);
        if (plan.later > 0) parts.push(`${plan.later} later session(s) left alone`);
        if (ctx.action === 'refresh' && revoked === 0) {
          return {
            outcome: 'skipped',
            detail: `no refresh token recorded in sessions before the change; ${parts.join(', ')}`,
          };
        }
        const result: DeliveryResult = { outcome: 'done', detail: parts.join(', ') };
        if (warnings.length > 0) result.warning = warnings.join('; ');
        return result;
      },

      async probe(signal) {
        const details: string[] = [];
        let ok = true;
        if (revoker) {
          try {
            details.push(`revocation endpoint ${redactSecrets(await revoker.check(signal))}`);
          } catch (err) {
            ok = false;
            details.push(
              `discovery at ${redactSecrets(s.revocation?.issuer ?? '')} failed: ${describeFetchError(err)}`,
            );
          }
        }
        if (s.backchannelLogoutUri) {
          const where = redactSecrets(s.backchannelLogoutUri);
          // An empty logout request: a live RP answers 400 (Back-Channel Logout §2.8) without logging anyone out.
          try {
            const res = await fetchTarget(
              s.backchannelLogoutUri,
              {
                method: 'POST',
                body: new URLSearchParams(),
                headers: { 'content-type': 'application/x-www-form-urlencoded' },
                redirect: 'manual',
                signal,
              },
              'PROBE',
            );
            await res.body?.cancel().catch(() => {});
            const answers = res.status < 500 && res.status !== 404 && res.status !== 405 && !isRedirect(res);
            ok &&= answers;
            details.push(`POST ${where} → HTTP ${res.status}${answers ? '' : ' (not a logout endpoint?)'}`);
          } catch (err) {
            ok = false;
            details.push(errorMessage(err));
          }
        }
        return { ok, detail: details.join('; ') };
      },
    };
  },
};
