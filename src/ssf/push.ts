import { PermanentDeliveryError } from '../errors.js';
import { excerpt, fetchTarget, httpStatusError, isRedirect, redirectRefusal } from '../targets/http.js';
import { redactSecrets } from '../util/redact.js';
import { SET_MEDIA_TYPE } from './set.js';

/**
 * Pushes one signed SET (RFC 8935): `202` (any 2xx) is accepted; `400` with an `err` is the
 * receiver refusing this SET for good, named in the error; 408, 429 and 5xx are retried by the
 * shared HTTP failure mapping (honouring `Retry-After`), other statuses refused. `what` names the
 * setting an operator would fix (e.g. `ssf.endpoint`).
 */
export async function pushSet(opts: {
  endpoint: string;
  authorization?: string | undefined;
  token: string;
  signal: AbortSignal;
  what: string;
}): Promise<number> {
  const headers: Record<string, string> = { 'content-type': SET_MEDIA_TYPE, accept: 'application/json' };
  if (opts.authorization) headers.authorization = opts.authorization;
  const res = await fetchTarget(
    opts.endpoint,
    { method: 'POST', body: opts.token, headers, redirect: 'manual', signal: opts.signal },
    'SSF_UNREACHABLE',
  );
  if (res.ok) {
    await res.body?.cancel().catch(() => {});
    return res.status;
  }
  if (isRedirect(res)) {
    await res.body?.cancel().catch(() => {});
    throw redirectRefusal(res, 'SSF_REFUSED', opts.what);
  }
  const body = await res.text().catch(() => '');
  if (res.status === 400) {
    let refusal: { err?: unknown; description?: unknown } = {};
    try {
      refusal = JSON.parse(body) as typeof refusal;
    } catch {}
    if (typeof refusal.err === 'string') {
      const description = typeof refusal.description === 'string' ? `: ${excerpt(refusal.description, res)}` : '';
      throw new PermanentDeliveryError(
        'SSF_REFUSED',
        redactSecrets(`the receiver refused the SET: ${excerpt(refusal.err, res)}${description}`),
      );
    }
  }
  const text = excerpt(body, res);
  throw httpStatusError(res, `SET push: HTTP ${res.status}${text ? `: ${text}` : ''}`, {
    retryable: 'SSF_HTTP_STATUS',
    permanent: 'SSF_REFUSED',
  });
}
