import { createHash, randomBytes } from 'node:crypto';

/** RFC 3062 LDAP Password Modify extended operation. */
export const PASSWORD_MODIFY_OID = '1.3.6.1.4.1.4203.1.11.1';

export type HashScheme = 'ssha' | 'ssha256' | 'ssha512';

const SCHEMES: Record<HashScheme, { algorithm: string; label: string }> = {
  ssha: { algorithm: 'sha1', label: 'SSHA' },
  ssha256: { algorithm: 'sha256', label: 'SSHA256' },
  ssha512: { algorithm: 'sha512', label: 'SSHA512' },
};

/**
 * `{SSHA512}base64(digest(password ‖ salt) ‖ salt)` with a random 16-byte salt: the
 * userPassword format OpenLDAP (pw-sha2 for the SHA-2 variants), 389-DS and FreeRADIUS read.
 */
export function hashPassword(scheme: HashScheme, password: string, salt: Buffer = randomBytes(16)): string {
  const { algorithm, label } = SCHEMES[scheme];
  const digest = createHash(algorithm).update(password, 'utf8').update(salt).digest();
  return `{${label}}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** BER definite length. */
function berLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n >>= 8) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), berLength(value.length), value]);
}

/**
 * PasswdModifyRequestValue ::= SEQUENCE { userIdentity [0] OCTET STRING OPTIONAL,
 * oldPasswd [1] OCTET STRING OPTIONAL, newPasswd [2] OCTET STRING OPTIONAL } (RFC 3062 §2).
 * `oldPassword` is for a user changing their own password: the server checks it and applies
 * the user's password policy (an administrator's reset leaves it out).
 */
export function passwordModifyRequest(userDN: string, newPassword: string, oldPassword?: string): Buffer {
  return tlv(
    0x30,
    Buffer.concat([
      tlv(0x80, Buffer.from(userDN, 'utf8')),
      ...(oldPassword === undefined ? [] : [tlv(0x81, Buffer.from(oldPassword, 'utf8'))]),
      tlv(0x82, Buffer.from(newPassword, 'utf8')),
    ]),
  );
}
