import { createHash, createPublicKey, type KeyObject, sign, X509Certificate } from 'node:crypto';

/**
 * A minimal DER writer, enough for one self-signed X.509 v3 certificate. Node can parse
 * certificates but not make them; SAML metadata needs one to carry the signing key.
 */
function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

const tlv = (tag: number, content: Buffer) => Buffer.concat([Buffer.from([tag]), length(content.length), content]);
const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
const set = (...parts: Buffer[]) => tlv(0x31, Buffer.concat(parts));

function integer(value: Buffer): Buffer {
  let i = 0;
  while (i < value.length - 1 && value[i] === 0) i++;
  let v = value.subarray(i);
  if ((v[0] ?? 0) & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return tlv(0x02, v);
}

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const n of rest) {
    const chunk: number[] = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

const name = (cn: string) => seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn, 'utf8')))));

const RSA_SHA256 = seq(oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00]));
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/**
 * A self-signed certificate for `privateKey` (RSA or EC), as PEM. The serial number and
 * validity are fixed functions of the key, so for RSA (deterministic PKCS#1 v1.5
 * signatures) the same key gives the same certificate on every start: SPs that pinned
 * the certificate from our metadata keep working across restarts.
 */
export function selfSignedCertificate(privateKey: KeyObject, commonName: string): string {
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const serial = createHash('sha256').update(spki).digest().subarray(0, 16);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  const isRsa = privateKey.asymmetricKeyType === 'rsa';
  if (!isRsa && privateKey.asymmetricKeyType !== 'ec') {
    throw new Error(`cannot make a certificate for a ${privateKey.asymmetricKeyType} key (use RSA or EC)`);
  }
  const alg = isRsa ? RSA_SHA256 : ECDSA_SHA256;
  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))),
    integer(serial),
    alg,
    name(commonName),
    seq(time(new Date(Date.UTC(2024, 0, 1))), time(new Date(Date.UTC(2074, 0, 1)))),
    name(commonName),
    spki,
  );
  const signature = sign('sha256', tbs, isRsa ? privateKey : { key: privateKey, dsaEncoding: 'der' });
  const der = seq(tbs, alg, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
  // Round-trip through Node's parser so a bug here fails at start-up, not at an SP.
  new X509Certificate(der);
  const b64 = der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trimEnd();
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}
