/**
 * Removes secrets that travel inside URLs and form/JSON fragments from a text meant for
 * people (`lastError`, log lines, probe details), so that a target URL such as
 * `https://user:pass@host/hook?token=…` can be quoted in an error without leaking:
 *
 * - URL userinfo: `scheme://user:pass@host` → `scheme://***@host` (up to the last `@` of the
 *   authority, as a WHATWG URL parser splits it);
 * - the value of a secret-looking parameter after `?`, `&`, `#` or `;` (query strings, fragments,
 *   form bodies): any name that ends in token, secret, password, passwd, pwd, passphrase,
 *   apikey, accesskey, privatekey, signature, credential(s), assertion or authorization (ignoring case, `-` and
 *   `_`: `access_token`, `X-Amz-Signature`, `client_secret`), and the short names `sig`, `key`,
 *   `code`, `auth`, `jwt`, `pass`, `otp`, `sessionid`;
 * - the same strong names at the start of the text or after a space (`password=…` in a message),
 *   and as JSON string members (`"refresh_token":"…"`), also one whose value the text cuts off
 *   (`…"api_token":"tok_li` at the end of an excerpt);
 * - token-like URL path segments, 16+ characters of `A-Za-z0-9_-.~=+%`: with a letter and a digit
 *   and either a run of 16+ letters/digits without separator or 40+ characters in all; or 20+
 *   letters of which at least a quarter are capitals and a quarter small letters (random
 *   base62). That catches Slack/Discord/Teams-style webhook paths and hex or base64 tokens, and
 *   leaves words joined by `-`/`_`, CamelCase names (`SingleLogoutService`), dates, version
 *   numbers and UUIDs (8-4-4-4-12) alone.
 *
 * Each secret becomes `***`; the rest of the text is unchanged, and redacting twice changes
 * nothing more. Pure, linear in the text's length, no allocation when nothing matches.
 */
export function redactSecrets(text: string): string {
  if (typeof text !== 'string' || text.length === 0) return text;
  let out = text;
  if (out.includes('//')) out = out.replace(URL_IN_TEXT, redactUrl);
  if (out.includes('=')) {
    out = out.replace(PARAM, (whole, lead: string, name: string) =>
      isSecretParam(name, lead !== '' && !/\s/.test(lead)) ? `${lead}${name}=${MASK}` : whole,
    );
  }
  if (out.includes('"')) {
    out = out.replace(JSON_MEMBER, (whole, name: string, between: string, close: string | undefined) =>
      isStrongName(name) ? `"${name}"${between}"${MASK}${close ?? ''}` : whole,
    );
  }
  return out;
}

const MASK = '***';

/**
 * A URL in running text: a scheme (at most 32 characters, which keeps the scan linear) or none
 * (`//host/…`), `//`, then everything up to whitespace, a quote or an angle bracket.
 */
const URL_IN_TEXT = /(?:\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}:)?\/\/[^\s"'<>]*/g;

/**
 * `name=value` where the name follows `?`, `&`, `#`, `;`, whitespace or the start of the text,
 * and the value runs to the next separator, whitespace, quote or angle bracket (punctuation just
 * before those, as in `…?token=abc: refused`, stays outside).
 */
const PARAM = /(^|[?&#;\s])([A-Za-z0-9_.-]{1,64})=([^&#;\s"'<>]+?)(?=[:,.)]{0,3}(?:[&#;\s"'<>]|$))/g;

/**
 * `"name": "value"` in a JSON excerpt (escaped quotes inside the value included), or a value that
 * runs to the end of the text unclosed (possibly ending in half an escape). Only the last value in
 * a text can be unclosed, so the scan stays linear.
 */
const JSON_MEMBER = /"([A-Za-z0-9_.-]{1,64})"(\s*:\s*)"(?:[^"\\]|\\.)*(?:(")|\\?$)/g;

const STRONG_SUFFIXES = [
  'token',
  'secret',
  'password',
  'passwd',
  'pwd',
  'passphrase',
  'apikey',
  'accesskey',
  'privatekey',
  'signature',
  'credential',
  'credentials',
  'assertion',
  'authorization',
];
/** Names that are secrets only as URL/form parameters (in prose or JSON, `code` or `key` is often harmless). */
const PARAM_NAMES = new Set(['sig', 'key', 'code', 'auth', 'jwt', 'pass', 'otp', 'sessionid']);

const normalise = (name: string) => name.toLowerCase().replace(/[-_.]/g, '');

function isStrongName(name: string): boolean {
  const n = normalise(name);
  return STRONG_SUFFIXES.some((s) => n.endsWith(s));
}

function isSecretParam(name: string, inUrlOrForm: boolean): boolean {
  return isStrongName(name) || (inUrlOrForm && PARAM_NAMES.has(normalise(name)));
}

/** Splits one URL into authority, path and the rest, and redacts userinfo and token-like path segments. */
function redactUrl(match: string): string {
  // Punctuation that ends a sentence or a `url: reason` is not part of the URL.
  let cut = match.length;
  while (cut > 0 && ':,.;)'.includes(match.charAt(cut - 1))) cut--;
  const url = match.slice(0, cut);
  const trailing = match.slice(cut);
  const start = url.indexOf('//') + 2;
  // The authority ends at the first `/`, `?`, `#` or `\` (WHATWG URL parsing).
  let end = start;
  while (end < url.length && !'/?#\\'.includes(url.charAt(end))) end++;
  let authority = url.slice(start, end);
  const at = authority.lastIndexOf('@');
  if (at >= 0) authority = `${MASK}@${authority.slice(at + 1)}`;
  let pathEnd = end;
  while (pathEnd < url.length && !'?#'.includes(url.charAt(pathEnd))) pathEnd++;
  const path = url.slice(end, pathEnd);
  const redactedPath = path.length >= 16 ? path.split('/').map(redactSegment).join('/') : path;
  return `${url.slice(0, start)}${authority}${redactedPath}${url.slice(pathEnd)}${trailing}`;
}

const TOKEN_CHARS = /^[A-Za-z0-9_.~=+%-]+$/;
const LONG_RUN = /[A-Za-z0-9]{16}/;

function redactSegment(segment: string): string {
  if (segment.length < 16 || !TOKEN_CHARS.test(segment)) return segment;
  const hasDigit = /[0-9]/.test(segment);
  if (hasDigit && /[A-Za-z]/.test(segment)) return LONG_RUN.test(segment) || segment.length >= 40 ? MASK : segment;
  if (hasDigit || segment.length < 20 || !/^[A-Za-z]+$/.test(segment)) return segment;
  const upper = segment.replace(/[^A-Z]/g, '').length;
  const quarter = segment.length / 4;
  return upper >= quarter && segment.length - upper >= quarter ? MASK : segment;
}
