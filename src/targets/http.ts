import { type DeliveryError, errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../errors.js';
import { redactSecrets } from '../util/redact.js';

/** How much of a refusing peer's body goes into `lastError`. */
export const EXCERPT = 200;

/** `Retry-After` as delta-seconds or an HTTP date → milliseconds from now (undefined if absent/invalid). */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** A short reason for a failed fetch (the network error's code), with any secret in it redacted. */
export function describeFetchError(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  if (err instanceof Error && err.name === 'AbortError') return 'aborted (timeout or shutdown)';
  const cause = err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined;
  return redactSecrets(cause?.code ?? cause?.message ?? errorMessage(err));
}

/**
 * How much of a body is redacted before the excerpt is cut from it: enough that a secret starting
 * within the excerpt is seen whole, without scanning a huge body.
 */
const EXCERPT_SCAN = 16 * 1024;

/**
 * The start of a response body, on one line, with any secret it echoes redacted, for an error
 * message. Redacted before it is cut, so a secret the cut would split is recognised whole.
 */
export function excerpt(text: string, from?: Response): string {
  return redactSent(redactSecrets(text.slice(0, EXCERPT_SCAN)), from)
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, EXCERPT);
}

/**
 * The credentials each answer's request carried (its `Authorization` value, and that value
 * without its scheme), so that a peer quoting them back in an error body ("Bearer abc… is not
 * valid") does not put them in `lastError`, Redis or the logs: no pattern knows a receiver's
 * own token format, but Ripple knows exactly what it sent.
 */
const sentSecrets = new WeakMap<Response, string[]>();

/** Shorter values are not masked: they would mask ordinary words of the message. */
const MIN_SENT_SECRET = 8;

function rememberSent(res: Response, headers: HeadersInit | undefined): void {
  const authorization = new Headers(headers).get('authorization');
  if (!authorization) return;
  const credentials = authorization.replace(/^\S+\s+/, '').trim();
  const values = [authorization, credentials].filter((v) => v.length >= MIN_SENT_SECRET);
  // Longest first, so the whole header is masked before its credential part.
  if (values.length > 0)
    sentSecrets.set(
      res,
      values.sort((a, b) => b.length - a.length),
    );
}

/** `text` with every credential the request behind `from` carried replaced by `***`. */
export function redactSent(text: string, from?: Response): string {
  const values = from ? sentSecrets.get(from) : undefined;
  if (!values) return text;
  return values.reduce((out, v) => out.split(v).join('***'), text);
}

/**
 * The URL without its userinfo, and that userinfo as an HTTP Basic `authorization` value:
 * fetch refuses URLs with credentials, and users write `https://user:pass@host/…` meaning Basic auth.
 */
export function splitUrlCredentials(url: string): { url: string; authorization?: string } {
  const parsed = new URL(url);
  if (!parsed.username && !parsed.password) return { url };
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  parsed.username = '';
  parsed.password = '';
  return { url: parsed.href, authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

/**
 * A fetch whose network failure (refused, reset, timed out) is a retryable delivery error named
 * `code`. Credentials in the URL are sent as HTTP Basic auth (unless `init` has its own
 * `authorization`), and never appear in an error message.
 */
export async function fetchTarget(url: string, init: RequestInit, code: string): Promise<Response> {
  let target = url;
  let request = init;
  try {
    const split = splitUrlCredentials(url);
    if (split.authorization) {
      const headers = new Headers(init.headers);
      if (!headers.has('authorization')) headers.set('authorization', split.authorization);
      target = split.url;
      request = { ...init, headers };
    }
  } catch {
    // Not a URL: let fetch say so.
  }
  try {
    const res = await fetch(target, request);
    rememberSent(res, request.headers);
    return res;
  } catch (err) {
    throw new TransientDeliveryError(
      code,
      `${init.method ?? 'GET'} ${redactSecrets(target)}: ${describeFetchError(err)}`,
      { cause: err },
    );
  }
}

/**
 * The error for a non-success HTTP answer: 408, 429 and 5xx are worth retrying (honouring
 * `Retry-After`), any other status is a refusal that retrying cannot change.
 */
export function httpStatusError(
  res: Response,
  message: string,
  codes: { retryable: string; permanent: string },
): DeliveryError {
  if (res.status === 408 || res.status === 429 || res.status >= 500) {
    return new TransientDeliveryError(codes.retryable, redactSent(redactSecrets(message), res), {
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
    });
  }
  return new PermanentDeliveryError(codes.permanent, redactSent(redactSecrets(message), res));
}

/** True for a 3xx answer (with `redirect: 'manual'`, fetch hands it back instead of following it). */
export function isRedirect(res: Response): boolean {
  return res.status >= 300 && res.status < 400;
}

/**
 * A redirect Ripple did not follow, as a permanent failure: the same URL will keep redirecting
 * until the configuration names the final one, and following it would send a signed request to
 * a host nobody configured. `what` names the setting to fix.
 */
export function redirectRefusal(res: Response, code: string, what: string): PermanentDeliveryError {
  const location = res.headers.get('location');
  return new PermanentDeliveryError(
    code,
    redactSecrets(
      `HTTP ${res.status} redirect${location ? ` to ${location}` : ''} not followed: Ripple posts only to the configured URL; set ${what} to the final URL`,
    ),
  );
}
