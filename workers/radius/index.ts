import { lookup } from 'node:dns/promises';
import { z } from 'zod';
import { duration } from '../../src/config/schema-context.js';
import { errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, DeliveryResult, ProbeResult, TargetAdapter } from '../../src/targets/adapter.js';
import { type Exchange, RadiusNoReplyError, radiusExchange } from './client.js';
import {
  Attr,
  Code,
  codeName,
  DICTIONARY,
  encodeValue,
  errorCauseName,
  integerAttribute,
  type RadiusAttribute,
  type RadiusPacket,
} from './codec.js';
import { type NasAnswer, NasMemory } from './nas-memory.js';

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
  /**
   * Whether replies must carry Message-Authenticator (Blast-RADIUS). `auto`: once this NAS has
   * sent one (remembered in Redis); `true`: always; `false`: never. One that is present must verify.
   */
  requireMessageAuthenticator: z
    .union([z.literal('auto'), z.boolean()], { error: 'must be auto, true or false' })
    .default('auto'),
  /** Whether this NAS answers Status-Server (RFC 5997) on this port; `probe` uses it. */
  statusServer: z.boolean().default(false),
  /** Extra attributes identifying the NAS in every request to it (e.g. NAS-IP-Address, NAS-Identifier). */
  attributes: attributeMap,
});

const settings = z.strictObject({
  nas: z
    .array(nasSchema)
    .min(1, 'at least one NAS is required')
    .superRefine((list, ctx) => {
      // Ripple remembers each NAS by host:port (which signs, which already answered an event).
      const seen = new Set<string>();
      list.forEach((nas, i) => {
        const where = `${nas.host}:${nas.port}`;
        if (seen.has(where)) ctx.addIssue({ code: 'custom', path: [i, 'host'], message: `${where} is listed twice` });
        seen.add(where);
      });
    }),
  /** Attributes of the CoA-Request sent for `action: refresh`. */
  coaAttributes: attributeMap,
  /** How long to wait for a reply before retransmitting. */
  timeout: duration().default(2_000),
  /** Retransmissions after the first try (same packet and identifier). */
  retransmits: z.number().int().min(0).max(10).default(3),
});

export type RadiusSettings = z.output<typeof settings>;
type Nas = RadiusSettings['nas'][number];

type NasOutcome = { nas: string; detail: string } & (
  | { kind: 'done'; warning?: string }
  | { kind: 'transient'; code: string }
  | { kind: 'permanent'; code: string }
);

/** Error-Causes worth another try later (RFC 5176 §3.6: resources may free up). */
const TRANSIENT_CAUSES = new Set([506]);

/** How to make a NAS sign, for the messages that ask an operator to. */
const SIGN_HINT = 'FreeRADIUS as the CoA server: `update reply { Message-Authenticator := 0x00 }` in recv-coa';

/** The warning on a reply accepted without Message-Authenticator (`auto` before the NAS ever signed, or `false`). */
function unsignedAccepted(where: string, replyName: string, mode: Nas['requireMessageAuthenticator']): string {
  const why =
    mode === 'auto'
      ? 'requireMessageAuthenticator: auto, and this NAS has never sent one'
      : 'requireMessageAuthenticator: false';
  const then = mode === 'auto' ? ', and Ripple will require it from then on' : '';
  return `${where} sent no Message-Authenticator in its ${replyName} (accepted: ${why}); only the MD5 Response Authenticator protects its replies (Blast-RADIUS, CVE-2024-3596): make the NAS sign its CoA/Disconnect replies (${SIGN_HINT})${then}`;
}

/**
 * Why an unsigned reply was refused and how to fix it: `requireMessageAuthenticator: true`, or
 * (`auto`) the NAS signed before (`signedSince`), so an unsigned reply may be a downgrade.
 */
function unsignedRefused(what: string, where: string, signedSince: string | undefined, signingKey: string): string {
  if (signedSince === undefined) {
    return `${what}, refused (requireMessageAuthenticator: true): make the NAS sign its CoA/Disconnect replies (${SIGN_HINT}), or set requireMessageAuthenticator: auto for this NAS to accept unsigned replies until it first signs one`;
  }
  return `${what}, but this NAS signed its replies before (first seen ${signedSince}): refused as a possible Blast-RADIUS downgrade (CVE-2024-3596). Make the NAS sign its CoA/Disconnect replies again (${SIGN_HINT}); if it really no longer can, set requireMessageAuthenticator: false for ${where}, or make Ripple forget it with \`redis-cli HDEL ${signingKey} ${where}\``;
}

/** What one delivery knows before it sends: which NAS sign, and which already answered this event. */
interface Known {
  eventId: string;
  signers: Map<string, string>;
  memory: NasMemory;
}

/** Sends the request to one NAS and classifies its verified answer; remembers what must be remembered. */
async function toNas(
  nas: Nas,
  code: number,
  attributes: RadiusAttribute[],
  s: RadiusSettings,
  known: Known,
  signal: AbortSignal,
): Promise<NasOutcome> {
  const where = `${nas.host}:${nas.port}`;
  const request = codeName(code);
  const mode = nas.requireMessageAuthenticator;
  const signedSince = known.signers.get(where);
  let exchange: Exchange;
  try {
    exchange = await radiusExchange(
      {
        host: nas.host,
        port: nas.port,
        secret: nas.secret,
        // Required from a NAS that signed before, so an unsigned (possibly forged) reply is ignored
        // while the exchange waits for the NAS's own.
        requireMessageAuthenticator: mode === true || (mode === 'auto' && signedSince !== undefined),
      },
      {
        code,
        attributes: [...attributes, ...nas.attributes],
        timeoutMs: s.timeout,
        retransmits: s.retransmits,
        signal,
      },
    );
  } catch (err) {
    return noAnswer(err, where, request, signedSince, known.memory.signingKey);
  }
  const { reply, messageAuthenticator } = exchange;
  const replyName = codeName(reply.code);
  if (messageAuthenticator !== 'absent' && signedSince === undefined) await known.memory.rememberSigner(where);
  const warning =
    messageAuthenticator === 'legacy'
      ? `${where} signs replies' Message-Authenticator over a zeroed authenticator (pre-RFC 5176 FreeRADIUS behaviour); accepted because the Response Authenticator verified`
      : messageAuthenticator === 'absent'
        ? unsignedAccepted(where, replyName, mode)
        : undefined;
  const outcome = classifyReply(where, request, replyName, reply, warning);
  // A final answer (acted, no session, or refused) is not asked for again by a later attempt.
  if (outcome.kind === 'done') {
    await known.memory.rememberAnswer(known.eventId, where, {
      kind: 'done',
      detail: outcome.detail,
      ...(outcome.warning ? { warning: outcome.warning } : {}),
    });
  } else if (outcome.kind === 'permanent' && outcome.code === 'RADIUS_NAK') {
    await known.memory.rememberAnswer(known.eventId, where, {
      kind: 'permanent',
      code: outcome.code,
      detail: outcome.detail,
    });
  }
  return outcome;
}

/** No verified reply: retry later, unless replies came and were refused. */
function noAnswer(
  err: unknown,
  where: string,
  request: string,
  signedSince: string | undefined,
  signingKey: string,
): NasOutcome {
  if (!(err instanceof RadiusNoReplyError)) {
    return { nas: where, kind: 'transient', code: 'RADIUS_SEND_FAILED', detail: `${where}: ${errorMessage(err)}` };
  }
  if (err.refused.length > 0 && !err.aborted) {
    if (err.unsigned.length > 0) {
      const what = `${where}: ${[...new Set(err.unsigned)].join(', ')} in reply to ${request}`;
      const others = err.refused.length > err.unsigned.length ? ` (${err.message})` : '';
      const detail = `${unsignedRefused(what, where, signedSince, signingKey)}${others}`;
      return { nas: where, kind: 'permanent', code: 'RADIUS_REPLY_UNVERIFIED', detail };
    }
    return { nas: where, kind: 'permanent', code: 'RADIUS_REPLY_UNVERIFIED', detail: err.message };
  }
  const hint = err.aborted
    ? ''
    : ' (is the NAS up, and is the shared secret right? A NAS that requires Message-Authenticator drops requests signed with another secret without answering)';
  return { nas: where, kind: 'transient', code: 'RADIUS_NO_REPLY', detail: `${err.message}${hint}` };
}

/** A verified reply → done (ACK, or NAK 503 no session), retry later (NAK 506) or refused. */
function classifyReply(
  where: string,
  request: string,
  replyName: string,
  reply: RadiusPacket,
  warning: string | undefined,
): NasOutcome {
  const warned = warning ? { warning } : {};
  if (reply.code === Code.DisconnectAck || reply.code === Code.CoaAck) {
    return { nas: where, kind: 'done', detail: `${where}: ${replyName}`, ...warned };
  }
  if (reply.code === Code.DisconnectNak || reply.code === Code.CoaNak) {
    const cause = integerAttribute(reply, Attr.ErrorCause);
    if (cause === 503) {
      return {
        nas: where,
        kind: 'done',
        detail: `${where}: ${replyName} Session-Context-Not-Found (no session)`,
        ...warned,
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
}

/** A NAS's answer to this event in an earlier attempt, reported again instead of asking twice. */
function earlierOutcome(where: string, answer: NasAnswer): NasOutcome {
  const detail = `${answer.detail} (answered in an earlier attempt, not sent again)`;
  return answer.kind === 'done'
    ? { nas: where, kind: 'done', detail, ...(answer.warning ? { warning: answer.warning } : {}) }
    : { nas: where, kind: 'permanent', code: answer.code ?? 'RADIUS_NAK', detail };
}

function createTarget(s: RadiusSettings, memory: NasMemory) {
  const auto = s.nas.some((nas) => nas.requireMessageAuthenticator === 'auto');
  return {
    async deliver(ctx: DeliveryContext): Promise<DeliveryResult> {
      const username = ctx.event.user.username;
      const code = ctx.action === 'revoke' ? Code.DisconnectRequest : Code.CoaRequest;
      const attributes: RadiusAttribute[] = [
        { type: Attr.UserName, value: Buffer.from(username, 'utf8') },
        ...(code === Code.CoaRequest ? s.coaAttributes : []),
      ];
      const eventId = ctx.event.id;
      const [signers, answers] = await Promise.all([
        auto ? memory.signers() : new Map<string, string>(),
        memory.answers(eventId),
      ]);
      // Attempt 1 is a first try or an operator retry (which restarts the count): a NAS that
      // refused is asked again (its policy may have been fixed); one that acted never is.
      if (ctx.attempt <= 1) {
        const refused = [...answers].filter(([, a]) => a.kind === 'permanent').map(([nas]) => nas);
        for (const nas of refused) answers.delete(nas);
        await memory.forgetAnswers(eventId, refused);
      }
      const known: Known = { eventId, signers, memory };
      const outcomes = await Promise.all(
        s.nas.map((nas) => {
          const earlier = answers.get(`${nas.host}:${nas.port}`);
          return earlier
            ? earlierOutcome(`${nas.host}:${nas.port}`, earlier)
            : toNas(nas, code, attributes, s, known, ctx.signal);
        }),
      );
      const summary = outcomes.map((o) => o.detail).join('; ');
      // Retry while any NAS may still answer; the next attempt contacts only the NAS without a final answer.
      const transient = outcomes.find((o) => o.kind === 'transient');
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
  honoursRetryAfter: false,
  concurrency: 20,
  settings: () => settings,
  create(app, services) {
    const memory = new NasMemory(services.redis, services.prefix, app.id, services.config.status.retention);
    return createTarget(app.settings, memory);
  },
};
