import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import { webhookSecret } from '../../src/config/schema.js';
import type { DeliveryContext, TargetAdapter } from '../../src/targets/adapter.js';
import { describeFetchError, excerpt, fetchTarget, httpStatusError } from '../../src/targets/http.js';

const settings = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  /** Standard Webhooks secret the receiver verifies with. */
  secret: webhookSecret,
  headers: z.record(z.string(), z.string()).default({}),
});
type WebhookSettings = z.output<typeof settings>;

/** The body a receiver gets: the event without any credential, in the Standard Webhooks shape. */
export function webhookPayload(ctx: DeliveryContext): string {
  const { event, action, app } = ctx;
  return JSON.stringify({
    type: event.type,
    timestamp: new Date().toISOString(),
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
  concurrency: 50,
  settings: () => settings,
  create(app) {
    const signer = new Webhook(app.settings.secret);
    return {
      async deliver(ctx) {
        const body = webhookPayload(ctx);
        // The same id on every attempt lets the receiver deduplicate our retries.
        const msgId = `${ctx.event.id}.${app.id}`;
        const signature = signer.sign(msgId, new Date(), body);
        const res = await fetchTarget(
          app.settings.url,
          {
            method: 'POST',
            body,
            signal: ctx.signal,
            headers: {
              ...app.settings.headers,
              'content-type': 'application/json',
              'webhook-id': msgId,
              'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
              'webhook-signature': signature,
            },
          },
          'WEBHOOK_UNREACHABLE',
        );
        if (res.ok) {
          await res.body?.cancel().catch(() => {});
          return { outcome: 'done', detail: `HTTP ${res.status}` };
        }
        const text = excerpt(await res.text().catch(() => ''));
        throw httpStatusError(res, `HTTP ${res.status}${text ? `: ${text}` : ''}`, {
          retryable: 'WEBHOOK_HTTP_STATUS',
          permanent: 'WEBHOOK_REFUSED',
        });
      },
      async probe(signal) {
        try {
          const res = await fetch(app.settings.url, { method: 'HEAD', signal });
          await res.body?.cancel().catch(() => {});
          return { ok: res.status < 500, detail: `HEAD ${app.settings.url} → HTTP ${res.status}` };
        } catch (err) {
          return { ok: false, detail: `${app.settings.url}: ${describeFetchError(err)}` };
        }
      },
    };
  },
};
