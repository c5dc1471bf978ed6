import { z } from 'zod';
import { duration } from '../../src/config/schema-context.js';
import { ConfigError, errorMessage } from '../../src/errors.js';
import { planSessions } from '../../src/sessions/plan.js';
import { changeSets, subjectFormatSchema, userSubject } from '../../src/ssf/caep.js';
import { pushSet } from '../../src/ssf/push.js';
import { setSigningKey, signSet } from '../../src/ssf/set.js';
import type { TargetAdapter } from '../../src/targets/adapter.js';
import { fetchTarget } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';
import { isLoopback } from '../oidc/revocation.js';
import { streamsTarget } from './streams.js';

const settings = z
  .strictObject({
    /** The receiver's RFC 8935 push endpoint. */
    endpoint: z
      .url({ protocol: /^https?$/, error: 'endpoint must be an http(s) URL' })
      .refine((u) => u.startsWith('https:') || isLoopback(u), 'endpoint must use https (http only on loopback)')
      .optional(),
    /** The `Authorization` header value the receiver expects (e.g. `Bearer ${APP_SSF_TOKEN}`). */
    authorization: z.string().min(1).optional(),
    /** The `aud` of every SET: how the receiver names itself. */
    audience: z.string().min(1).optional(),
    /** How the receiver knows the user. */
    subject: subjectFormatSchema.default({ format: 'email' }),
    /** RS256 (every receiver takes it) or ES256 where the receiver allows it; a `signing` key of that alg signs. */
    algorithm: z.enum(['RS256', 'ES256']).default('RS256'),
    /**
     * Instead of one receiver: Ripple as an SSF transmitter. This app then stands for every stream
     * receivers create at run time; each gets the SETs of the users it covers after its receiver's delay.
     */
    streams: z
      .strictObject({
        /** Which users a new stream covers before any add-subject: `ALL` or `NONE`. */
        defaultSubjects: z.enum(['ALL', 'NONE']).default('NONE'),
        /** The least time between two verification requests of one stream. */
        minVerificationInterval: duration().default(30_000),
        /**
         * Let receivers point streams at loopback, private or link-local addresses. Off: a
         * receiver (a remote party) could otherwise aim Ripple at services only Ripple's host reaches.
         */
        allowPrivateEndpoints: z.boolean().default(false),
      })
      .optional(),
  })
  .superRefine((s, ctx) => {
    if (s.streams) {
      for (const key of ['endpoint', 'audience', 'authorization'] as const) {
        if (s[key] !== undefined) {
          ctx.addIssue({ code: 'custom', path: [key], message: 'not with streams (each stream names its own)' });
        }
      }
      return;
    }
    for (const key of ['endpoint', 'audience'] as const) {
      if (s[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: 'is required (or give streams)' });
    }
  });
export type SsfSettings = z.output<typeof settings>;

/** `kind: ssf` — CAEP credential-change and session-revoked SETs pushed to a Shared Signals receiver (RFC 8935). */
export const ssfAdapter: TargetAdapter<'ssf', SsfSettings> = {
  kind: 'ssf',
  category: 'session',
  actions: ['revoke', 'refresh'],
  defaultAction: 'revoke',
  needsCredential: false,
  honoursRetryAfter: true,
  concurrency: 20,
  settings: () => settings,
  // Two streams apps would each queue every change for every stream: one stands for them all.
  checkApps(apps) {
    const withStreams = apps.filter((a) => a.settings.streams);
    return withStreams.slice(1).map((a) => ({
      file: a.file,
      key: 'ssf.streams',
      reason: `only one ssf app may have streams (app "${withStreams[0]?.id}" in ${withStreams[0]?.file} already does)`,
    }));
  },
  create(app, services) {
    const s = app.settings;
    const issuer = services.config.issuer;
    if (!issuer) throw new ConfigError(app.file, 'kind', 'kind ssf needs `issuer` in ripple.yaml (the iss of SETs)');
    const key = setSigningKey(services, s.algorithm, (reason) => new ConfigError(app.file, 'ssf.algorithm', reason));
    // The key is checked here for streams too: the stream worker signs with the same choice.
    if (s.streams) return streamsTarget(app, services, issuer);
    const endpoint = s.endpoint as string;
    const audience = s.audience as string;
    const where = redactSecrets(endpoint);

    return {
      async deliver(ctx) {
        const { event } = ctx;
        const user = userSubject(s.subject, event.user, issuer);
        const plan =
          ctx.action === 'revoke'
            ? await planSessions(services.sessions, app.id, event.user.username, event.occurredAt, true)
            : undefined;
        const sets = changeSets({
          event,
          action: ctx.action,
          scope: app.id,
          user,
          sessions: plan?.mode === 'sessions' ? plan.sessions : [],
          userWide: plan?.mode === 'subjectWide',
        });
        // In order, one at a time: a failure leaves the rest for the retry, which resends the
        // accepted ones under the same jti (the receiver dedupes them).
        for (const set of sets) {
          const token = await signSet({
            key,
            issuer,
            audience,
            subject: set.subject,
            type: set.type,
            payload: set.payload,
            jti: set.jti,
            txn: event.id,
          });
          await pushSet({
            endpoint,
            authorization: s.authorization,
            token,
            signal: ctx.signal,
            what: 'ssf.endpoint',
          });
          if (set.session) await services.sessions?.delete(set.session.id);
        }
        const revoked = sets.length - 1;
        const parts = [`credential-change accepted by ${where}`];
        if (ctx.action === 'revoke') {
          parts.push(plan?.mode === 'subjectWide' ? 'user-wide session-revoked' : `${revoked} session-revoked`);
          if (plan?.mode === 'sessions' && plan.later > 0) parts.push(`${plan.later} later session(s) left alone`);
          if (plan?.mode === 'skip') parts.push(plan.detail);
        }
        return { outcome: 'done', detail: parts.join(', ') };
      },

      async probe(signal) {
        // An empty push: a live RFC 8935 receiver answers 400 (not a SET) and acts on nothing.
        try {
          const res = await fetchTarget(
            endpoint,
            {
              method: 'POST',
              body: '',
              headers: {
                'content-type': 'application/secevent+jwt',
                ...(s.authorization ? { authorization: s.authorization } : {}),
              },
              redirect: 'manual',
              signal,
            },
            'PROBE',
          );
          await res.body?.cancel().catch(() => {});
          const ok = res.status === 400 || res.status === 202;
          const hint =
            res.status === 401 || res.status === 403
              ? ' (check ssf.authorization)'
              : ok
                ? ''
                : ' (not an SSF push endpoint?)';
          return { ok, detail: `POST ${where} → HTTP ${res.status}${hint}` };
        } catch (err) {
          return { ok: false, detail: errorMessage(err) };
        }
      },
    };
  },
};
