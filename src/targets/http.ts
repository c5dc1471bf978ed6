import { type DeliveryError, errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../errors.js';

/** How much of a refusing peer's body goes into `lastError`. */
export const EXCERPT = 200;

/** `Retry-After` as delta-seconds or an HTTP date → milliseconds from now (undefined if absent/invalid). */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** A short reason for a failed fetch (the network error's code), without secrets. */
export function describeFetchError(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  if (err instanceof Error && err.name === 'AbortError') return 'aborted (timeout or shutdown)';
  const cause = err instanceof Error ? (err.cause as { code?: string; message?: string } | undefined) : undefined;
  return cause?.code ?? cause?.message ?? errorMessage(err);
}

/** The start of a response body, on one line, for an error message. */
export function excerpt(text: string): string {
  return text.slice(0, EXCERPT).replace(/\s+/g, ' ').trim();
}

/** A fetch whose network failure (refused, reset, timed out) is a retryable delivery error named `code`. */
export async function fetchTarget(url: string, init: RequestInit, code: string): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw new TransientDeliveryError(code, `${init.method ?? 'GET'} ${url}: ${describeFetchError(err)}`, {
      cause: err,
    });
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
    return new TransientDeliveryError(codes.retryable, message, {
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after')),
    });
  }
  return new PermanentDeliveryError(codes.permanent, message);
}
