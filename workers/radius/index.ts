import { lookup } from 'node:dns/promises';
import { z } from 'zod';
import { duration } from '../../src/config/schema-context.js';
import { errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, DeliveryResult, ProbeResult, TargetAdapter } from '../../src/targets/adapter.js';
import { RadiusNoReplyError, radiusExchange } from './client.js';
import {
  Attr,
  Code,
  codeName,
  DICTIONARY,
  encodeValue,
  errorCauseName,
  integerAttribute,
  type RadiusAttribute,
} from './codec.js';

export { accessRequest, RadiusNoReplyError, radiusExchange } from './client.js';

/** Attributes Ripple sets itself; config may not override them. */
const RESERVED = new Set(['User-Name', 'User-Password', 'Message-Authenticator']);

/** `{ Session-Timeout: 1, Filter-Id: "guest" }` → encoded attributes, names checked against the dictionary. */
const attributeMap = z
  .record(z.string(), z.union([z.string(), z.number()]))
  .default({})
  .transform((record, ctx): RadiusAttribute[] => {
    const out: RadiusAttribute[] = [];
    for (const [name, value] of Object.entries(record)) {
      const def = DICTIONARY[name];
      if (!def || RESERVED.has(name)) {
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: RESERVED.has(name)
            ? `${name} is set by Ripple`
            : `unknown attribute; known: ${Object.keys(DICTIONARY)
                .filter((n) => !RESERVED.has(n))
                .join(', ')}`,
        });
        continue;
      }
      try {
        out.push({ type: def.type, value: encodeValue(def.format, value) });
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: [name], message: errorMessage(err) });
      }
    }
    return out;
  });

const nasSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65_535).default(3799),
  secret: z.string().min(1, 'the shared secret of this NAS is required'),
  /** Refuse replies without Message-Authenticator (Blast-RADIUS). Only turn off for an unpatched NAS. */
  requireMessageAuthenticator: z.boolean().default(true),
  /** Whether this NAS answers Status-Server (RFC 5997) on this port; `probe` uses it. */
  statusServer: z.boolean().default(false),
  /** Extra attributes identifying the NAS in every request to it (e.g. NAS-IP-Address, NAS-Identifier). */
  attributes: attributeMap,
});

const settings = z.strictObject({
  nas: z.array(nasSchema).min(1, 'at least one NAS is required'),
  /** Attributes of the CoA-Request sent for `action: refresh`. */
  coaAttributes: attributeMap,
  /** How long to wait for a reply before retransmitting. */
  timeout: duration().default(2_000),
  /** Retransmissions after the first try (same packet and identifier). */
  retransmits: z.number().int().min(0).max(10).default(3),
});

export type RadiusSettings = z.output<typeof settings>;
type Nas = RadiusSettings['nas'][number];

type NasOutcome =
  | { nas: string; kind: 'done'; detail: string; warning?: string }
  | { nas: string; kind: 'transient'; code: string; detail: string }
  | { nas: string; kind: 'permanent'; code: string; detail: string };

/** Error-Causes worth another try later (RFC 5176 §3.6: resources may free up). */
const TRANSIENT_CAUSES = new Set([506]);

async function toNas(
  nas: Nas,
  code: number,
  attributes: RadiusAttribute[],
  s: RadiusSettings,
  signal: AbortSignal,
): Promise<NasOutcome> {
  const where = `${nas.host}:${nas.port}`;
  const request = codeName(code);
  try {
    const { reply, messageAuthenticator } = await radiusExchange(
      {
        host: nas.host,
        port: nas.port,
        secret: nas.secret,
        requireMessageAuthenticator: nas.requireMessageAuthenticator,
      },
      {
        code,
        attributes: [...attributes, ...nas.attributes],
        timeoutMs: s.timeout,
        retransmits: s.retransmits,
        signal,
      },
    );
    const warning =
      messageAuthenticator === 'legacy'
        ? `${where} signs replies' Message-Authenticator over a zeroed authenticator (pre-RFC 5176 FreeRADIUS behaviour); accepted because the Response Authenticator verified`
        : messageAuthenticator === 'absent'
          ? `${where} sent no Message-Authenticator (requireMessageAuthenticator: false): vulnerable to Blast-RADIUS`
          : undefined;
    const replyName = codeName(reply.code);
    if (reply.code === Code.DisconnectAck || reply.code === Code.CoaAck) {
      return { nas: where, kind: 'done', detail: `${where}: ${replyName}`, ...(warning ? { warning } : {}) };
    }
    if (reply.code === Code.DisconnectNak || reply.code === Code.CoaNak) {
      const cause = integerAttribute(reply, Attr.ErrorCause);
      if (cause === 503) {
        return {
          nas: where,
          kind: 'done',
          detail: `${where}: ${replyName} Session-Context-Not-Found (no session)`,
          ...(warning ? { warning } : {}),
        };
      }
      const causeText = cause === undefined ? 'no Error-Cause' : `Error-Cause ${cause} ${errorCauseName(cause)}`;
      const detail = `${where}: ${replyName}, ${causeText}`;
      return cause !== undefined && TRANSIENT_CAUSES.has(cause)
        ? { nas: where, kind: 'transient', code: 'RADIUS_NAK', detail }
        : { nas: where, kind: 'permanent', code: 'RADIUS_NAK', detail };
    }
    return {
      nas: where,
      kind: 'permanent',
      code: 'RADIUS_UNEXPECTED_REPLY',
      detail: `${where}: ${replyName} in reply to ${request}`,
    };
  } catch (err) {
    if (err instanceof RadiusNoReplyError) {
      if (err.refused.length > 0 && !err.aborted) {
        return { nas: where, kind: 'permanent', code: 'RADIUS_REPLY_UNVERIFIED', detail: err.message };
      }
      const hint = err.aborted
        ? ''
        : ' (is the NAS up, and is the shared secret right? A NAS that requires Message-Authenticator drops requests signed with another secret without answering)';
      return { nas: where, kind: 'transient', code: 'RADIUS_NO_REPLY', detail: `${err.message}${hint}` };
    }
    return { nas: where, kind: 'transient', code: 'RADIUS_SEND_FAILED', detail: `${where}: ${errorMessage(err)}` };
  }
}

function createTarget(s: RadiusSettings) {
  return {
    async deliver(ctx: DeliveryContext): Promise<DeliveryResult> {
      const username = ctx.event.user.username;
      const code = ctx.action === 'revoke' ? Code.DisconnectRequest : Code.CoaRequest;
      const attributes: RadiusAttribute[] = [
        { type: Attr.UserName, value: Buffer.from(username, 'utf8') },
        ...(code === Code.CoaRequest ? s.coaAttributes : []),
      ];
      const outcomes = await Promise.all(s.nas.map((nas) => toNas(nas, code, attributes, s, ctx.signal)));
      const summary = outcomes.map((o) => o.detail).join('; ');
      const transient = outcomes.find((o) => o.kind === 'transient');
      // Retry while any NAS may still answer; a NAS that already ACKed answers a repeat with
      // "no session", which counts as done.
      if (transient && transient.kind === 'transient') throw new TransientDeliveryError(transient.code, summary);
      const permanent = outcomes.find((o) => o.kind === 'permanent');
      if (permanent && permanent.kind === 'permanent') throw new PermanentDeliveryError(permanent.code, summary);
      const warnings = outcomes.flatMap((o) => (o.kind === 'done' && o.warning ? [o.warning] : []));
      return { outcome: 'done', detail: summary, ...(warnings.length ? { warning: warnings.join('; ') } : {}) };
    },

    async probe(signal: AbortSignal): Promise<ProbeResult> {
      const results = await Promise.all(
        s.nas.map(async (nas): Promise<ProbeResult> => {
          const where = `${nas.host}:${nas.port}`;
          if (!nas.statusServer) {
            try {
              const { address } = await lookup(nas.host);
              return {
                ok: true,
                detail: `${where} (${address}): Status-Server not enabled for this NAS, reachability not checked`,
              };
            } catch (err) {
              return { ok: false, detail: `${where}: cannot resolve ${nas.host}: ${errorMessage(err)}` };
            }
          }
          try {
            // The Response Authenticator proves the secret; many servers (FreeRADIUS up to 3.2.x)
            // answer Status-Server without Message-Authenticator even when they sign other replies.
            const { reply, messageAuthenticator } = await radiusExchange(
              { host: nas.host, port: nas.port, secret: nas.secret, requireMessageAuthenticator: false },
              { code: Code.StatusServer, attributes: [], timeoutMs: s.timeout, retransmits: 0, signal },
            );
            const unsigned = messageAuthenticator === 'absent' ? ' (unsigned: no Message-Authenticator)' : '';
            return { ok: true, detail: `${where}: Status-Server answered with ${codeName(reply.code)}${unsigned}` };
          } catch (err) {
            return { ok: false, detail: errorMessage(err) };
          }
        }),
      );
      return { ok: results.every((r) => r.ok), detail: results.map((r) => r.detail).join('; ') };
    },
  };
}

/**
 * `kind: radius` — RFC 5176 Dynamic Authorization: after the credential store changed,
 * tell every NAS to end (`revoke`: Disconnect-Request) or re-authorize (`refresh`:
 * CoA-Request) the user's live sessions, so they must authenticate with the new password.
 */
export const radiusAdapter: TargetAdapter<'radius', RadiusSettings> = {
  kind: 'radius',
  category: 'credential',
  actions: ['revoke', 'refresh'],
  defaultAction: 'revoke',
  needsCredential: false,
  concurrency: 20,
  settings: () => settings,
  create(app) {
    return createTarget(app.settings);
  },
};
