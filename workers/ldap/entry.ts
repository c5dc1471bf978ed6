import type { Entry } from 'ldapts';

/** An entry's values of `attr` as text (attribute names compare without case, as in LDAP). */
export function attributeValues(entry: Entry | Record<string, unknown>, attr: string): string[] {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === attr.toLowerCase());
  const v = key ? (entry as Record<string, unknown>)[key] : undefined;
  return (Array.isArray(v) ? v : v === undefined ? [] : [v]).map((x) =>
    Buffer.isBuffer(x) ? x.toString() : String(x),
  );
}

/** A DN's first value (`cn=eng,ou=groups,…` → `eng`; an escaped `\,` stays in it): how memberOf names a group. */
export function groupName(dn: string): string {
  return dn.replace(/^[^=]+=((?:[^,\\]|\\.)*).*$/s, '$1').trim();
}
