/**
 * Escaping of user-controlled values placed into LDAP DNs (RFC 4514) and search filters
 * (RFC 4515), and the `{username}` / `{email}` / `{id}` templates that use them.
 */

const hex = (ch: string): string =>
  [...Buffer.from(ch, 'utf8')].map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('');

/**
 * RFC 4514 §2.4: an attribute value inside a DN. Escapes the specials `" + , ; < > \ =`,
 * a leading `#` or space, a trailing space, NUL and other control characters.
 */
export function escapeDnValue(value: string): string {
  let out = '';
  const chars = [...value];
  chars.forEach((ch, i) => {
    const code = ch.codePointAt(0) as number;
    if (code < 0x20 || code === 0x7f) out += hex(ch);
    else if ('"+,;<>\\='.includes(ch)) out += `\\${ch}`;
    else if (i === 0 && (ch === '#' || ch === ' ')) out += `\\${ch}`;
    else if (i === chars.length - 1 && ch === ' ') out += '\\ ';
    else out += ch;
  });
  return out;
}

/**
 * RFC 4515 §3: an assertion value inside a filter. `*`, `(`, `)`, `\` and NUL become
 * `\2a`, `\28`, `\29`, `\5c`, `\00`, so a value can never add wildcards or filter terms.
 */
export function escapeFilterValue(value: string): string {
  let out = '';
  for (const ch of value) {
    const code = ch.codePointAt(0) as number;
    if (ch === '*' || ch === '(' || ch === ')' || ch === '\\' || code === 0 || code < 0x20 || code === 0x7f) {
      out += hex(ch);
    } else out += ch;
  }
  return out;
}

export const TEMPLATE_FIELDS = ['username', 'email', 'id'] as const;
export type TemplateField = (typeof TEMPLATE_FIELDS)[number];
export type TemplateValues = Partial<Record<TemplateField, string | undefined>>;

const PLACEHOLDER = /\{([^{}]*)\}/g;

/** Placeholders a template uses that are not `{username}`, `{email}` or `{id}`. */
export function unknownPlaceholders(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)]
    .map((m) => m[1] as string)
    .filter((name) => !(TEMPLATE_FIELDS as readonly string[]).includes(name));
}

export function placeholders(template: string): TemplateField[] {
  return [...template.matchAll(PLACEHOLDER)].map((m) => m[1] as TemplateField);
}

/**
 * Fills a template with escaped values. Returns `{ missing }` when the template needs a
 * value the user does not have (e.g. `{email}` for a user without one).
 */
export function renderTemplate(
  template: string,
  values: TemplateValues,
  escapeValue: (value: string) => string,
): { text: string } | { missing: TemplateField } {
  for (const field of placeholders(template)) {
    const value = values[field];
    if (value === undefined || value === '') return { missing: field };
  }
  return { text: template.replace(PLACEHOLDER, (_, name: TemplateField) => escapeValue(values[name] as string)) };
}
