import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { RadiusNoReplyError, radiusExchange } from '../../workers/radius/client.js';
import {
  Attr,
  Code,
  decodePacket,
  encodeRequest,
  encodeValue,
  hidePassword,
  verifyReply,
} from '../../workers/radius/codec.js';

const SECRET = 'codec-secret-123';

/**
 * Has FreeRADIUS's radclient send a packet to a UDP socket of ours and returns the bytes,
 * so our encoder is compared with an independent implementation, not with itself.
 */
async function captureRadclient(type: 'auth' | 'disconnect' | 'coa' | 'status', input: string): Promise<Buffer> {
  const socket: Socket = createSocket('udp4');
  await new Promise<void>((res) => socket.bind(0, '127.0.0.1', () => res()));
  const port = socket.address().port;
  try {
    const packet = new Promise<Buffer>((res) => socket.once('message', (msg) => res(msg)));
    const child = spawn('radclient', ['-r', '1', '-t', '1', `127.0.0.1:${port}`, type, SECRET], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    const failed = new Promise<never>((_, rej) =>
      child.once('error', (err: NodeJS.ErrnoException) =>
        rej(
          err.code === 'ENOENT'
            ? new Error('radclient not found. Install it: apt-get install -y freeradius-utils')
            : err,
        ),
      ),
    );
    child.stdin.end(input);
    const result = await Promise.race([packet, failed]);
    child.kill();
    return result;
  } finally {
    socket.close();
  }
}

describe('RADIUS codec, checked against radclient (FreeRADIUS)', () => {
  it('encodes a Disconnect-Request byte for byte like radclient, Message-Authenticator first', async () => {
    const theirs = await captureRadclient('disconnect', 'Message-Authenticator=0x00,User-Name="alice"');
    const mine = encodeRequest({
      code: Code.DisconnectRequest,
      identifier: theirs[1] as number,
      secret: SECRET,
      attributes: [{ type: Attr.UserName, value: Buffer.from('alice') }],
    });
    expect(mine.packet.toString('hex')).toBe(theirs.toString('hex'));
  });

  it('encodes a CoA-Request with integer and string attributes like radclient', async () => {
    const theirs = await captureRadclient(
      'coa',
      'Message-Authenticator=0x00,User-Name="bob@example.org",Session-Timeout=1,Filter-Id="guest"',
    );
    const mine = encodeRequest({
      code: Code.CoaRequest,
      identifier: theirs[1] as number,
      secret: SECRET,
      attributes: [
        { type: Attr.UserName, value: Buffer.from('bob@example.org') },
        { type: Attr.SessionTimeout, value: encodeValue('integer', 1) },
        { type: 11, value: encodeValue('string', 'guest') },
      ],
    });
    expect(mine.packet.toString('hex')).toBe(theirs.toString('hex'));
  });

  it('hides User-Password and signs an Access-Request exactly like radclient (long password too)', async () => {
    for (const password of ['s3cret', 'a password that is longer than sixteen bytes, ünïcode']) {
      const theirs = await captureRadclient(
        'auth',
        `Message-Authenticator=0x00,User-Name="alice",User-Password="${password}"`,
      );
      const mine = encodeRequest({
        code: Code.AccessRequest,
        identifier: theirs[1] as number,
        authenticator: theirs.subarray(4, 20),
        secret: SECRET,
        attributes: [{ type: Attr.UserName, value: Buffer.from('alice') }],
        password,
      });
      expect(mine.packet.toString('hex')).toBe(theirs.toString('hex'));
    }
  });

  it('encodes Status-Server with Message-Authenticator like radclient', async () => {
    const theirs = await captureRadclient('status', 'Message-Authenticator=0x00');
    const mine = encodeRequest({
      code: Code.StatusServer,
      identifier: theirs[1] as number,
      authenticator: theirs.subarray(4, 20),
      secret: SECRET,
      attributes: [],
    });
    expect(mine.packet.toString('hex')).toBe(theirs.toString('hex'));
  });
});

describe('RADIUS codec, structure and reply verification', () => {
  it('pads User-Password to 16-byte blocks', () => {
    expect(hidePassword('x', SECRET, Buffer.alloc(16)).length).toBe(16);
    expect(hidePassword('x'.repeat(17), SECRET, Buffer.alloc(16)).length).toBe(32);
    expect(() => hidePassword('x'.repeat(129), SECRET, Buffer.alloc(16))).toThrow(/128/);
  });

  it('refuses malformed packets', () => {
    expect(() => decodePacket(Buffer.alloc(10))).toThrow(/shorter/);
    const bad = Buffer.alloc(24);
    bad.writeUInt16BE(24, 2);
    bad[20] = 1;
    bad[21] = 9; // attribute runs past the end
    expect(() => decodePacket(bad)).toThrow(/bad length/);
  });

  it('encodeValue checks types', () => {
    expect(encodeValue('integer', 3799).readUInt32BE(0)).toBe(3799);
    expect([...encodeValue('ipaddr', '10.0.0.1')]).toEqual([10, 0, 0, 1]);
    expect(() => encodeValue('integer', 'abc')).toThrow(/integer/);
    expect(() => encodeValue('ipaddr', 'example.org')).toThrow(/IPv4/);
  });

  it('ignores a reply for another identifier and reports tampering', () => {
    // A reply verified against a request it does not answer: identifiers differ.
    const reply = Buffer.alloc(20);
    reply[0] = Code.DisconnectAck;
    reply[1] = 5;
    reply.writeUInt16BE(20, 2);
    const r = verifyReply(reply, { identifier: 6, authenticator: Buffer.alloc(16) }, SECRET, {
      requireMessageAuthenticator: false,
    });
    expect(r).toEqual({ ok: false, reason: 'reply to another request (identifier)' });
    const forged = verifyReply(reply, { identifier: 5, authenticator: Buffer.alloc(16) }, SECRET, {
      requireMessageAuthenticator: false,
    });
    expect(forged.ok).toBe(false);
    expect(!forged.ok && forged.reason).toMatch(/Response Authenticator does not match/);
  });

  it('a Message-Authenticator is verified when present, required or not; a missing one is refused only when required', () => {
    const request = { identifier: 9, authenticator: Buffer.alloc(16, 3) };
    /** A Disconnect-ACK whose Response Authenticator verifies, carrying `attrs`. */
    const reply = (attrs: Buffer) => {
      const out = Buffer.alloc(20 + attrs.length);
      out[0] = Code.DisconnectAck;
      out[1] = request.identifier;
      out.writeUInt16BE(out.length, 2);
      attrs.copy(out, 20);
      const hash = createHash('md5').update(out.subarray(0, 4)).update(request.authenticator);
      hash.update(attrs).update(SECRET).digest().copy(out, 4);
      return out;
    };
    const unsigned = reply(Buffer.alloc(0));
    const badlySigned = reply(Buffer.concat([Buffer.from([Attr.MessageAuthenticator, 18]), Buffer.alloc(16, 1)]));
    for (const requireMessageAuthenticator of [false, true]) {
      const bad = verifyReply(badlySigned, request, SECRET, { requireMessageAuthenticator });
      expect(bad).toMatchObject({ ok: false, reason: expect.stringMatching(/Message-Authenticator does not match/) });
    }
    expect(verifyReply(unsigned, request, SECRET, { requireMessageAuthenticator: false })).toMatchObject({
      ok: true,
      messageAuthenticator: 'absent',
    });
    expect(verifyReply(unsigned, request, SECRET, { requireMessageAuthenticator: true })).toEqual({
      ok: false,
      reason: 'Disconnect-ACK without Message-Authenticator',
      unsigned: true,
    });
  });

  it('a Disconnect-Request carries Event-Timestamp; retransmits repeat it byte for byte, the next request differs', async () => {
    // A NAS that never answers: we see every try.
    const socket: Socket = createSocket('udp4');
    await new Promise<void>((res) => socket.bind(0, '127.0.0.1', () => res()));
    const seen: Buffer[] = [];
    socket.on('message', (msg) => seen.push(msg));
    const send = () =>
      radiusExchange(
        { host: '127.0.0.1', port: socket.address().port, secret: SECRET, requireMessageAuthenticator: true },
        {
          code: Code.DisconnectRequest,
          attributes: [{ type: Attr.UserName, value: Buffer.from('alice') }],
          timeoutMs: 30,
          retransmits: 2,
        },
      ).catch((err: unknown) => err);
    try {
      const before = Math.floor(Date.now() / 1000);
      expect(await send()).toBeInstanceOf(RadiusNoReplyError);
      expect(await send()).toBeInstanceOf(RadiusNoReplyError);
      const after = Math.floor(Date.now() / 1000);
      expect(seen).toHaveLength(6);
      const [a, b, c, d] = seen as [Buffer, Buffer, Buffer, Buffer];
      expect(b.equals(a) && c.equals(a)).toBe(true);
      expect(d.equals(a)).toBe(false);
      const timestamp = decodePacket(a)
        .attributes.find((x) => x.type === Attr.EventTimestamp)
        ?.value.readUInt32BE(0);
      expect(timestamp).toBeGreaterThanOrEqual(before);
      expect(timestamp).toBeLessThanOrEqual(after);
    } finally {
      socket.close();
    }
  });
});
