import { randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import {
  Attr,
  Code,
  codeName,
  encodeRequest,
  type MessageAuthenticatorCheck,
  type RadiusAttribute,
  type RadiusPacket,
  verifyReply,
} from './codec.js';

export interface RadiusPeer {
  host: string;
  port: number;
  secret: string;
  /** Refuse replies without Message-Authenticator (Blast-RADIUS). One that is present is always verified. */
  requireMessageAuthenticator: boolean;
}

export interface ExchangeOptions {
  code: number;
  attributes: RadiusAttribute[];
  /** Only for Access-Request (PAP). */
  password?: string;
  /** Wait per try, ms. */
  timeoutMs: number;
  /** Extra tries after the first (same packet, same identifier). */
  retransmits: number;
  signal?: AbortSignal;
}

export interface Exchange {
  reply: RadiusPacket;
  /** How the reply's Message-Authenticator verified. */
  messageAuthenticator: MessageAuthenticatorCheck;
  tries: number;
}

/** No verified reply: every try timed out, or every reply failed verification. */
export class RadiusNoReplyError extends Error {
  readonly tries: number;
  /** Why replies were refused, if any arrived. */
  readonly refused: string[];
  /** The refusals that were only for a missing (required) Message-Authenticator. */
  readonly unsigned: string[];
  /** Socket errors (e.g. ICMP port unreachable). */
  readonly socketErrors: string[];
  readonly aborted: boolean;
  constructor(
    peer: string,
    request: string,
    tries: number,
    refused: string[],
    unsigned: string[],
    socketErrors: string[],
    aborted: boolean,
  ) {
    const why = refused.length
      ? `every reply failed verification: ${[...new Set(refused)].join('; ')}`
      : socketErrors.length
        ? `no reply (${[...new Set(socketErrors)].join('; ')})`
        : 'no reply';
    super(
      `${request} to ${peer}: ${aborted ? 'aborted (timeout or shutdown) with ' : ''}${why} after ${tries} ${tries === 1 ? 'try' : 'tries'}`,
    );
    this.name = 'RadiusNoReplyError';
    this.tries = tries;
    this.refused = refused;
    this.unsigned = unsigned;
    this.socketErrors = socketErrors;
    this.aborted = aborted;
  }
}

/**
 * Identifiers are handed out in turn from a random start, not drawn at random: with
 * Event-Timestamp (one-second resolution), a request for the same user to the same NAS could
 * otherwise repeat byte for byte within a second, and so could a recorded reply to it.
 */
let nextIdentifier = randomInt(256);
function takeIdentifier(): number {
  const identifier = nextIdentifier;
  nextIdentifier = (nextIdentifier + 1) & 0xff;
  return identifier;
}

/**
 * The Event-Timestamp attribute (RFC 5176 §3.3) for a CoA/Disconnect-Request. Its Request
 * Authenticator is a hash of the packet, so without it a request for the same user and NAS is
 * the same bytes at every change, and a reply recorded for an earlier change would verify for a
 * later one the NAS never received.
 */
function eventTimestamp(now = Date.now()): RadiusAttribute {
  const value = Buffer.alloc(4);
  value.writeUInt32BE(Math.floor(now / 1000) >>> 0);
  return { type: Attr.EventTimestamp, value };
}

/**
 * Sends one request over UDP and waits for a verified reply, retransmitting the same
 * packet (same Identifier and Event-Timestamp) after each `timeoutMs`. Replies that fail
 * verification are ignored (an attacker may inject them) and reported if no valid one comes.
 */
export function radiusExchange(peer: RadiusPeer, opts: ExchangeOptions): Promise<Exchange> {
  const identifier = takeIdentifier();
  const dynamicAuthorization = opts.code === Code.CoaRequest || opts.code === Code.DisconnectRequest;
  const { packet, authenticator } = encodeRequest({
    code: opts.code,
    identifier,
    secret: peer.secret,
    attributes:
      dynamicAuthorization && !opts.attributes.some((a) => a.type === Attr.EventTimestamp)
        ? [...opts.attributes, eventTimestamp()]
        : opts.attributes,
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  });
  const where = `${peer.host}:${peer.port}`;
  const request = codeName(opts.code);
  const maxTries = 1 + Math.max(0, opts.retransmits);

  return new Promise<Exchange>((resolve, reject) => {
    const socket: Socket = createSocket(isIPv6(peer.host) ? 'udp6' : 'udp4');
    const refused: string[] = [];
    const unsigned: string[] = [];
    const socketErrors: string[] = [];
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    let done = false;

    const finish = (err: Error | undefined, value?: Exchange) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      try {
        socket.close();
      } catch {
        // already closed
      }
      if (err) reject(err);
      else resolve(value as Exchange);
    };
    const noReply = (aborted: boolean) =>
      finish(new RadiusNoReplyError(where, request, tries, refused, unsigned, socketErrors, aborted));
    const onAbort = () => noReply(true);

    const send = () => {
      if (done) return;
      if (tries >= maxTries) {
        noReply(false);
        return;
      }
      tries++;
      socket.send(packet, (err) => {
        if (err) socketErrors.push((err as NodeJS.ErrnoException).code ?? err.message);
      });
      timer = setTimeout(send, opts.timeoutMs);
    };

    socket.on('message', (msg) => {
      const result = verifyReply(msg, { identifier, authenticator }, peer.secret, {
        requireMessageAuthenticator: peer.requireMessageAuthenticator,
      });
      if (!result.ok) {
        if (result.reason !== 'reply to another request (identifier)') refused.push(result.reason);
        if (result.unsigned) unsigned.push(result.reason);
        return;
      }
      finish(undefined, { reply: result.packet, messageAuthenticator: result.messageAuthenticator, tries });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // On a connected UDP socket, ICMP port unreachable arrives as ECONNREFUSED: keep
      // retransmitting (the NAS may be restarting), but remember why.
      socketErrors.push(err.code === 'ECONNREFUSED' ? 'port unreachable' : (err.code ?? err.message));
    });

    if (opts.signal?.aborted) {
      noReply(true);
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    socket.connect(peer.port, peer.host, (err?: Error) => {
      if (err) {
        socketErrors.push((err as NodeJS.ErrnoException).code ?? err.message);
        noReply(false);
        return;
      }
      send();
    });
  });
}

export type AccessResult = 'accept' | 'reject' | 'challenge';

/**
 * A PAP Access-Request with Message-Authenticator; tells whether the server accepts
 * the user's password. Used by tests and operators to check a RADIUS server end to end.
 * The reply's Response Authenticator always verifies; Message-Authenticator is required only
 * when asked (many servers, FreeRADIUS up to 3.2.1 among them, do not sign Access replies).
 */
export async function accessRequest(
  peer: Omit<RadiusPeer, 'requireMessageAuthenticator'> & { requireMessageAuthenticator?: boolean },
  username: string,
  password: string,
  opts: { timeoutMs?: number; retransmits?: number; signal?: AbortSignal } = {},
): Promise<{ result: AccessResult; exchange: Exchange }> {
  const exchange = await radiusExchange(
    { ...peer, requireMessageAuthenticator: peer.requireMessageAuthenticator ?? false },
    {
      code: Code.AccessRequest,
      attributes: [{ type: Attr.UserName, value: Buffer.from(username, 'utf8') }],
      password,
      timeoutMs: opts.timeoutMs ?? 2000,
      retransmits: opts.retransmits ?? 2,
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
  );
  const code = exchange.reply.code;
  const result: AccessResult | undefined =
    code === Code.AccessAccept
      ? 'accept'
      : code === Code.AccessReject
        ? 'reject'
        : code === Code.AccessChallenge
          ? 'challenge'
          : undefined;
  if (!result) throw new Error(`unexpected ${codeName(code)} in reply to Access-Request`);
  return { result, exchange };
}
