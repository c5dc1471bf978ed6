import { BerReader, FilterParser } from 'ldapts';
import { describe, expect, it } from 'vitest';
import { escapeDnValue, escapeFilterValue, renderTemplate, unknownPlaceholders } from '../../workers/ldap/escape.js';
import { hashPassword, passwordModifyRequest } from '../../workers/ldap/password.js';

describe('RFC 4515 filter escaping', () => {
  it('turns an injection attempt into one literal equality assertion', () => {
    const filter = `(uid=${escapeFilterValue('a*)(uid=*')})`;
    expect(filter).toBe('(uid=a\\2a\\29\\28uid=\\2a)');
    // An independent parser (ldapts) sees a single equality filter with the literal value.
    const parsed = FilterParser.parseString(filter);
    expect(parsed.constructor.name).toBe('EqualityFilter');
    expect(parsed).toMatchObject({ attribute: 'uid', value: 'a*)(uid=*' });
  });

  it('escapes backslash, NUL and control characters, keeps UTF-8', () => {
    expect(escapeFilterValue('a\\b')).toBe('a\\5cb');
    expect(escapeFilterValue('x\u0000y')).toBe('x\\00y');
    expect(escapeFilterValue('zoë')).toBe('zoë');
    expect(escapeFilterValue('*')).toBe('\\2a');
  });
});

describe('RFC 4514 DN value escaping', () => {
  it('escapes specials so a value cannot add RDNs or change the base', () => {
    expect(escapeDnValue('a,ou=admins')).toBe('a\\,ou\\=admins');
    expect(escapeDnValue('x+cn=y')).toBe('x\\+cn\\=y');
    expect(escapeDnValue('"<q>;\\')).toBe('\\"\\<q\\>\\;\\\\');
  });

  it('escapes a leading # or space, a trailing space and control characters', () => {
    expect(escapeDnValue('#1')).toBe('\\#1');
    expect(escapeDnValue(' a ')).toBe('\\ a\\ ');
    expect(escapeDnValue('a#b c')).toBe('a#b c');
    expect(escapeDnValue('a\nb')).toBe('a\\0ab');
  });
});

describe('templates', () => {
  const user = { username: 'a*)(uid=*', email: 'al,ice@example.org', id: 'u-1' };

  it('fills each placeholder with the escape function of its context', () => {
    expect(renderTemplate('(&(objectClass=person)(uid={username}))', user, escapeFilterValue)).toEqual({
      text: '(&(objectClass=person)(uid=a\\2a\\29\\28uid=\\2a))',
    });
    expect(renderTemplate('mail={email},ou=people,dc=example,dc=org', user, escapeDnValue)).toEqual({
      text: 'mail=al\\,ice@example.org,ou=people,dc=example,dc=org',
    });
  });

  it('reports a value the user lacks instead of rendering an empty one', () => {
    expect(renderTemplate('(mail={email})', { username: 'bob', id: 'u-2' }, escapeFilterValue)).toEqual({
      missing: 'email',
    });
  });

  it('finds unknown placeholders', () => {
    expect(unknownPlaceholders('uid={username},ou={dept}')).toEqual(['dept']);
    expect(unknownPlaceholders('(|(uid={username})(mail={email})(employeeNumber={id}))')).toEqual([]);
  });
});

describe('password encodings', () => {
  it('builds an RFC 3062 PasswdModifyRequestValue that a BER reader decodes', () => {
    const ber = passwordModifyRequest('uid=alice,ou=people,dc=example,dc=org', 'n'.repeat(200));
    const reader = new BerReader(ber);
    expect(reader.readSequence()).toBe(0x30);
    expect(reader.readString(0x80)).toBe('uid=alice,ou=people,dc=example,dc=org');
    expect(reader.readString(0x82)).toBe('n'.repeat(200));
  });

  it('hashes {SSHA512} as digest ‖ salt', () => {
    const salt = Buffer.from('0123456789abcdef');
    const hashed = hashPassword('ssha512', 'pw', salt);
    expect(hashed.startsWith('{SSHA512}')).toBe(true);
    const raw = Buffer.from(hashed.slice('{SSHA512}'.length), 'base64');
    expect(raw.length).toBe(64 + 16);
    expect(raw.subarray(64).equals(salt)).toBe(true);
    expect(hashPassword('ssha', 'pw')).toMatch(/^\{SSHA\}/);
    expect(hashPassword('ssha', 'pw')).not.toBe(hashPassword('ssha', 'pw'));
  });
});
