import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import { webhookSecret } from '../../src/config/schema.js';
import { errorMessage } from '../../src/errors.js';
import type { DeliveryContext, TargetAdapter } from '../../src/targets/adapter.js';
import { excerpt, fetchTarget, httpStatusError, isRedirect, redirectRefusal } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';

const settings = z
  .strictObject({
    /** The receiver; `https://user:pass@host/…` sends those credentials as HTTP Basic auth. */
    url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
    /** Standard Webhooks secret the receiver verifies with. */
    secret: webhookSecret,
    headers: z.record(z.string(), z.string()).default({}),
  })
  .superRefine((s, ctx) => {
    // Refinements run even when `url` itself was refused (reported above).
    if (!URL.canParse(s.url)) return;
    const url = new URL(s.url);
    const hasAuthHeader = Object.keys(s.headers).some((h) => h.toLowerCase() === 'authorization');
    if ((url.username || url.password) && hasAuthHeader) {
      ctx.addIssue({
        code: 'custom',
        path: ['headers'],
        message:
          'give credentials either in url (user:pass@, sent as Basic auth) or as an authorization header, not both',
      });
    }
  });
type WebhookSettings = z.output<typeof settings>;

/** The body a receiver gets: the event without any credential, in the Standard Webhooks shape. */
export function webhookPayload(ctx: DeliveryContext, now: Date = new Date()): string {
  const { event, action, app } = ctx;
  return JSON.stringify({
    type: event.type,
    timestamp: now.toISOString(),
    data: {
      eventId: event.id,
      occurredAt: event.occurredAt,
      source: event.source,
      user: event.user,
      app: app.id,
      action,
    },
  });
}

/** `kind: webhook` — a Standard Webhooks-signed POST of the event, for anything else. */
export const webhookAdapter: TargetAdapter<'webhook', WebhookSettings> = {
  kind: 'webhook',
  category: 'notify',
  actions: ['revoke', 'refresh'],
  defaultAction: 'revoke',
  needsCredential: false,
  honoursRetryAfter: true,
  concurrency: 50,
  settings: () => settings,
  create(app) {
    const signer = new Webhook(app.settings.secret);
    return {
      async deliver(ctx) {
        // One clock read per attempt: the signed timestamp and `webhook-timestamp` must be the
        // same second, or the receiver's verification fails.
        const now = new Date();
        const body = webhookPayload(ctx, now);
        // The same id on every attempt lets the receiver deduplicate our retries.
        const msgId = `${ctx.event.id}.${app.id}`;
        const res = await fetchTarget(
          app.settings.url,
          {
            method: 'POST',
            body,
            signal: ctx.signal,
            // A redirect would carry the signed body to a host nobody configured.
            redirect: 'manual',
            headers: {
              ...app.settings.headers,
              'content-type': 'application/json',
              'webhook-id': msgId,
              'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
              'webhook-signature': signer.sign(msgId, now, body),
            },
          },
          'WEBHOOK_UNREACHABLE',
        );
        if (res.ok) {
          await res.body?.cancel().catch(() => {});
          return { outcome: 'done', detail: `HTTP ${res.status}` };
        }
        if (isRedirect(res)) {
          await res.body?.cancel().catch(() => {});
          throw redirectRefusal(res, 'WEBHOOK_REDIRECT', 'webhook.url');
        }
        const text = excerpt(await res.text().catch(() => ''));
        throw httpStatusError(res, `HTTP ${res.status}${text ? `: ${text}` : ''}`, {
          retryable: 'WEBHOOK_HTTP_STATUS',
          permanent: 'WEBHOOK_REFUSED',
        });
      },
      async probe(signal) {
        const where = redactSecrets(app.settings.url);
        try {
          const res = await fetchTarget(app.settings.url, { method: 'HEAD', signal, redirect: 'manual' }, 'PROBE');
          await res.body?.cancel().catch(() => {});
          if (isRedirect(res)) {
            return {
              ok: false,
              detail: `HEAD ${where} → HTTP ${res.status}: ${redirectRefusal(res, 'PROBE', 'webhook.url').message}`,
            };
          }
          return { ok: res.status < 500, detail: `HEAD ${where} → HTTP ${res.status}` };
        } catch (err) {
          return { ok: false, detail: errorMessage(err) };
        }
      },
    };
  },
};
