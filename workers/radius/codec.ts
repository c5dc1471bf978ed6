import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIPv4 } from 'node:net';

/**
 * A small RADIUS codec (RFC 2865, RFC 2866 accounting-style authenticators, RFC 3579
 * Message-Authenticator, RFC 5176 Dynamic Authorization, RFC 5997 Status-Server).
 * Only what Ripple sends and reads; checked against FreeRADIUS's radiusd and radclient.
 */

export const Code = {
  AccessRequest: 1,
  AccessAccept: 2,
  AccessReject: 3,
  AccountingRequest: 4,
  AccountingResponse: 5,
  AccessChallenge: 11,
  StatusServer: 12,
  DisconnectRequest: 40,
  DisconnectAck: 41,
  DisconnectNak: 42,
  CoaRequest: 43,
  CoaAck: 44,
  CoaNak: 45,
} as const;

export const CODE_NAMES: Record<number, string> = {
  1: 'Access-Request',
  2: 'Access-Accept',
  3: 'Access-Reject',
  4: 'Accounting-Request',
  5: 'Accounting-Response',
  11: 'Access-Challenge',
  12: 'Status-Server',
  40: 'Disconnect-Request',
  41: 'Disconnect-ACK',
  42: 'Disconnect-NAK',
  43: 'CoA-Request',
  44: 'CoA-ACK',
  45: 'CoA-NAK',
};

export const codeName = (code: number): string => CODE_NAMES[code] ?? `code ${code}`;

export const Attr = {
  UserName: 1,
  UserPassword: 2,
  NasIpAddress: 4,
  ReplyMessage: 18,
  State: 24,
  Class: 25,
  SessionTimeout: 27,
  IdleTimeout: 28,
  AcctSessionId: 44,
  EventTimestamp: 55,
  NasIdentifier: 32,
  ProxyState: 33,
  MessageAuthenticator: 80,
  ErrorCause: 101,
} as const;

export type AttrFormat = 'string' | 'octets' | 'integer' | 'ipaddr';

/** Attributes that can be named in config (`coaAttributes`). */
export const DICTIONARY: Record<string, { type: number; format: AttrFormat }> = {
  'User-Name': { type: 1, format: 'string' },
  'NAS-IP-Address': { type: 4, format: 'ipaddr' },
  'NAS-Port': { type: 5, format: 'integer' },
  'Service-Type': { type: 6, format: 'integer' },
  'Framed-IP-Address': { type: 8, format: 'ipaddr' },
  'Filter-Id': { type: 11, format: 'string' },
  'Reply-Message': { type: 18, format: 'string' },
  State: { type: 24, format: 'octets' },
  Class: { type: 25, format: 'octets' },
  'Session-Timeout': { type: 27, format: 'integer' },
  'Idle-Timeout': { type: 28, format: 'integer' },
  'Termination-Action': { type: 29, format: 'integer' },
  'Called-Station-Id': { type: 30, format: 'string' },
  'Calling-Station-Id': { type: 31, format: 'string' },
  'NAS-Identifier': { type: 32, format: 'string' },
  'Acct-Session-Id': { type: 44, format: 'string' },
  'Acct-Interim-Interval': { type: 85, format: 'integer' },
  'NAS-Port-Id': { type: 87, format: 'string' },
  'Chargeable-User-Identity': { type: 89, format: 'octets' },
  'NAS-Filter-Rule': { type: 92, format: 'string' },
};

/** RFC 5176 §3.6 Error-Cause values. */
export const ERROR_CAUSES: Record<number, string> = {
  201: 'Residual-Session-Context-Removed',
  202: 'Invalid-EAP-Packet',
  401: 'Unsupported-Attribute',
  402: 'Missing-Attribute',
  403: 'NAS-Identification-Mismatch',
  404: 'Invalid-Request',
  405: 'Unsupported-Service',
  406: 'Unsupported-Extension',
  407: 'Invalid-Attribute-Value',
  501: 'Administratively-Prohibited',
  502: 'Request-Not-Routable',
  503: 'Session-Context-Not-Found',
  504: 'Session-Context-Not-Removable',
  505: 'Other-Proxy-Processing-Error',
  506: 'Resources-Unavailable',
  507: 'Request-Initiated',
  508: 'Multiple-Session-Selection-Unsupported',
};

export const errorCauseName = (cause: number): string => ERROR_CAUSES[cause] ?? `Error-Cause ${cause}`;

export interface RadiusAttribute {
  type: number;
  value: Buffer;
}

export interface RadiusPacket {
  code: number;
  identifier: number;
  authenticator: Buffer;
  attributes: RadiusAttribute[];
}

export class RadiusCodecError extends Error {}

const HEADER = 20;
const MAX_PACKET = 4096;

/** Encodes a config value for a dictionary attribute. */
export function encodeValue(format: AttrFormat, value: string | number): Buffer {
  switch (format) {
    case 'string':
      return Buffer.from(String(value), 'utf8');
    case 'octets': {
      const text = String(value);
      return text.startsWith('0x') ? Buffer.from(text.slice(2), 'hex') : Buffer.from(text, 'utf8');
    }
    case 'integer': {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
        throw new RadiusCodecError(`${value} is not a 32-bit integer`);
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    }
    case 'ipaddr': {
      const text = String(value);
      if (!isIPv4(text)) throw new RadiusCodecError(`${text} is not an IPv4 address`);
      return Buffer.from(text.split('.').map(Number));
    }
  }
}

/** RFC 2865 §5.2: User-Password hidden with the shared secret and the Request Authenticator. */
export function hidePassword(password: string, secret: string, authenticator: Buffer): Buffer {
  const plain = Buffer.from(password, 'utf8');
  if (plain.length > 128) throw new RadiusCodecError('User-Password longer than 128 bytes');
  const padded = Buffer.alloc(Math.max(16, Math.ceil(plain.length / 16) * 16));
  plain.copy(padded);
  const out = Buffer.alloc(padded.length);
  let prev = authenticator;
  for (let i = 0; i < padded.length; i += 16) {
    const b = createHash('md5').update(secret).update(prev).digest();
    for (let j = 0; j < 16; j++) out[i + j] = (padded[i + j] as number) ^ (b[j] as number);
    prev = out.subarray(i, i + 16);
  }
  return out;
}

function encodeAttributes(attributes: RadiusAttribute[]): Buffer {
  const parts: Buffer[] = [];
  for (const { type, value } of attributes) {
    if (value.length > 253) throw new RadiusCodecError(`attribute ${type} is longer than 253 bytes`);
    parts.push(Buffer.from([type, value.length + 2]), value);
  }
  return Buffer.concat(parts);
}

function hmac(secret: string, data: Buffer): Buffer {
  return createHmac('md5', secret).update(data).digest();
}

/** Whether the code's Request Authenticator is an MD5 over the packet (RFC 2866/5176) rather than random. */
const hashedRequest = (code: number) =>
  code === Code.AccountingRequest || code === Code.DisconnectRequest || code === Code.CoaRequest;

export interface EncodedRequest {
  packet: Buffer;
  /** The Request Authenticator, needed to verify the reply. */
  authenticator: Buffer;
}

/**
 * Builds a request. Message-Authenticator is always added, as the first attribute (the
 * Blast-RADIUS recommendation); a `password` becomes a hidden User-Password.
 */
export function encodeRequest(opts: {
  code: number;
  identifier: number;
  secret: string;
  attributes: RadiusAttribute[];
  password?: string;
  /** For Access-Request / Status-Server: a given Request Authenticator instead of a random one (tests). */
  authenticator?: Buffer;
}): EncodedRequest {
  const { code, identifier, secret } = opts;
  const hashed = hashedRequest(code);
  const authenticator = hashed ? Buffer.alloc(16) : (opts.authenticator ?? randomBytes(16));
  const attrs: RadiusAttribute[] = [{ type: Attr.MessageAuthenticator, value: Buffer.alloc(16) }, ...opts.attributes];
  if (opts.password !== undefined) {
    if (code !== Code.AccessRequest) throw new RadiusCodecError('User-Password only goes in an Access-Request');
    attrs.push({ type: Attr.UserPassword, value: hidePassword(opts.password, secret, authenticator) });
  }
  const body = encodeAttributes(attrs);
  const length = HEADER + body.length;
  if (length > MAX_PACKET) throw new RadiusCodecError(`packet of ${length} bytes exceeds ${MAX_PACKET}`);
  const packet = Buffer.alloc(length);
  packet[0] = code;
  packet[1] = identifier & 0xff;
  packet.writeUInt16BE(length, 2);
  authenticator.copy(packet, 4);
  body.copy(packet, HEADER);
  // Message-Authenticator: HMAC-MD5 over the packet with itself zeroed and, for hashed
  // requests, the authenticator zeroed (RFC 5176 §3.5); it is the first attribute.
  const maOffset = HEADER + 2;
  hmac(secret, packet).copy(packet, maOffset);
  if (hashed) {
    const auth = createHash('md5').update(packet).update(secret).digest();
    auth.copy(packet, 4);
    return { packet, authenticator: auth };
  }
  return { packet, authenticator };
}

/** Parses a packet's structure (no authentication). Throws RadiusCodecError on malformed input. */
export function decodePacket(buf: Buffer): RadiusPacket {
  if (buf.length < HEADER) throw new RadiusCodecError(`packet of ${buf.length} bytes is shorter than a header`);
  const length = buf.readUInt16BE(2);
  if (length < HEADER || length > MAX_PACKET || length > buf.length) {
    throw new RadiusCodecError(`bad packet length ${length} (received ${buf.length} bytes)`);
  }
  const attributes: RadiusAttribute[] = [];
  let offset = HEADER;
  while (offset < length) {
    if (offset + 2 > length) throw new RadiusCodecError('truncated attribute header');
    const type = buf[offset] as number;
    const len = buf[offset + 1] as number;
    if (len < 2 || offset + len > length) throw new RadiusCodecError(`bad length ${len} for attribute ${type}`);
    attributes.push({ type, value: Buffer.from(buf.subarray(offset + 2, offset + len)) });
    offset += len;
  }
  return {
    code: buf[0] as number,
    identifier: buf[1] as number,
    authenticator: Buffer.from(buf.subarray(4, 20)),
    attributes,
  };
}

/**
 * How a verified reply's Message-Authenticator checked out: `valid` (RFC 3579/5176),
 * `legacy` (a CoA/Disconnect reply signed over a zeroed authenticator, as FreeRADIUS up to
 * 3.2.x does; still keyed with the secret, and the Response Authenticator binds the reply to
 * our request), or `absent` (only accepted when not required).
 */
export type MessageAuthenticatorCheck = 'valid' | 'legacy' | 'absent';

export type Verification =
  | { ok: true; packet: RadiusPacket; messageAuthenticator: MessageAuthenticatorCheck }
  /** `unsigned`: the reply verified but for the Message-Authenticator it was required to carry. */
  | { ok: false; reason: string; unsigned?: true };

/**
 * Verifies a reply against the request it answers: the Response Authenticator
 * (MD5 over the reply with the Request Authenticator, and the secret) always, and
 * Message-Authenticator (HMAC-MD5 with the Request Authenticator in place) whenever present.
 * With `requireMessageAuthenticator` a reply without one is refused (Blast-RADIUS, CVE-2024-3596).
 */
export function verifyReply(
  reply: Buffer,
  request: { identifier: number; authenticator: Buffer },
  secret: string,
  opts: { requireMessageAuthenticator: boolean },
): Verification {
  let packet: RadiusPacket;
  try {
    packet = decodePacket(reply);
  } catch (err) {
    return { ok: false, reason: `malformed reply: ${(err as Error).message}` };
  }
  if (packet.identifier !== request.identifier) return { ok: false, reason: 'reply to another request (identifier)' };
  const length = reply.readUInt16BE(2);
  const bytes = Buffer.from(reply.subarray(0, length));
  const expected = createHash('md5')
    .update(bytes.subarray(0, 4))
    .update(request.authenticator)
    .update(bytes.subarray(HEADER))
    .update(secret)
    .digest();
  if (!timingSafeEqual(expected, packet.authenticator)) {
    return { ok: false, reason: 'Response Authenticator does not match (wrong shared secret, or a forged reply)' };
  }
  const mas = packet.attributes.filter((a) => a.type === Attr.MessageAuthenticator);
  if (mas.length > 1) return { ok: false, reason: 'more than one Message-Authenticator' };
  const ma = mas[0];
  if (!ma) {
    if (opts.requireMessageAuthenticator) {
      return { ok: false, reason: `${codeName(packet.code)} without Message-Authenticator`, unsigned: true };
    }
    return { ok: true, packet, messageAuthenticator: 'absent' };
  }
  if (ma.value.length !== 16) return { ok: false, reason: 'Message-Authenticator is not 16 bytes' };
  const copy = Buffer.from(bytes);
  request.authenticator.copy(copy, 4);
  const maOffset = findAttributeOffset(copy, Attr.MessageAuthenticator);
  copy.fill(0, maOffset + 2, maOffset + 18);
  if (timingSafeEqual(hmac(secret, copy), ma.value)) return { ok: true, packet, messageAuthenticator: 'valid' };
  if (DYNAMIC_AUTH_REPLIES.has(packet.code)) {
    copy.fill(0, 4, HEADER);
    if (timingSafeEqual(hmac(secret, copy), ma.value)) return { ok: true, packet, messageAuthenticator: 'legacy' };
  }
  return { ok: false, reason: 'Message-Authenticator does not match (wrong shared secret, or a forged reply)' };
}

const DYNAMIC_AUTH_REPLIES = new Set<number>([Code.DisconnectAck, Code.DisconnectNak, Code.CoaAck, Code.CoaNak]);

function findAttributeOffset(packet: Buffer, type: number): number {
  let offset = HEADER;
  while (offset + 2 <= packet.length) {
    if (packet[offset] === type) return offset;
    offset += packet[offset + 1] as number;
  }
  return -1;
}

export function attribute(packet: RadiusPacket, type: number): Buffer | undefined {
  return packet.attributes.find((a) => a.type === type)?.value;
}

export function integerAttribute(packet: RadiusPacket, type: number): number | undefined {
  const value = attribute(packet, type);
  return value && value.length === 4 ? value.readUInt32BE(0) : undefined;
}
