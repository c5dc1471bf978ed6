import { Webhook } from 'standardwebhooks';
import { z } from 'zod';
import { errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, TargetAdapter } from '../../src/targets/adapter.js';
import { parseRetryAfter } from '../../src/targets/http.js';

const settings = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  /** Standard Webhooks secret the receiver verifies with. */
  secret: z.string().regex(/^whsec_[A-Za-z0-9+/=]{24,}$/, 'a Standard Webhooks secret looks like whsec_<base64>'),
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

const EXCERPT = 200;

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
        let res: Response;
        try {
          res = await fetch(app.settings.url, {
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
          });
        } catch (err) {
          throw new TransientDeliveryError(
            'WEBHOOK_UNREACHABLE',
            `POST ${app.settings.url}: ${describeFetchError(err)}`,
            {
              cause: err,
            },
          );
        }
        if (res.ok) {
          await res.body?.cancel().catch(() => {});
          return { outcome: 'done', detail: `HTTP ${res.status}` };
        }
        const text = (await res.text().catch(() => '')).slice(0, EXCERPT);
        const message = `HTTP ${res.status}${text ? `: ${text.replace(/\s+/g, ' ').trim()}` : ''}`;
        if (res.status === 408 || res.status === 429 || res.status >= 500) {
          throw new TransientDeliveryError('WEBHOOK_HTTP_STATUS', message, {
            retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
          });
        }
        throw new PermanentDeliveryError('WEBHOOK_REFUSED', message);
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

function describeFetchError(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  if (err instanceof Error && err.name === 'AbortError') return 'aborted (timeout or shutdown)';
  const cause = err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined;
  return cause?.code ?? cause?.message ?? errorMessage(err);
}
