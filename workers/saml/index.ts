import { readFileSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
// The default import: see ./settings.ts.
import samlify from 'samlify';
import { ConfigError, errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import { planSessions } from '../../src/sessions/plan.js';
import type { SessionRecord } from '../../src/sessions/store.js';
import { renderSubject } from '../../src/sessions/template.js';
import { rippleIdentityProvider, SAML_BINDING } from '../../src/signing/metadata.js';
import type { DeliveryContext, DeliveryResult, TargetAdapter } from '../../src/targets/adapter.js';
import { excerpt, fetchTarget, httpStatusError } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';
import { logoutRequestXml } from './request.js';
import { checkLogoutResponse, type LogoutOutcome } from './response.js';
import { type SamlSettings, settings, spFromMetadata } from './settings.js';
import { readSoap, SOAP_ACTION, soapEnvelope } from './xml.js';

// No samlify schema validator is set here: Ripple only builds and signs requests with
// samlify and checks responses itself (./response.ts, with xml-crypto), none of which runs
// samlify's inbound flow that needs one.

/** `kind: saml` — signed SAML 2.0 LogoutRequests to a service provider's Single Logout endpoint, server to server. */
export const samlAdapter: TargetAdapter<'saml', SamlSettings> = {
  kind: 'saml',
  category: 'session',
  actions: ['revoke', 'refresh'],
  defaultAction: 'revoke',
  needsCredential: false,
  honoursRetryAfter: true,
  concurrency: 20,
  settings,
  create(app, services) {
    const s = app.settings;
    const issuer = services.config.issuer;
    const keys = services.signing;
    if (!issuer) throw new ConfigError(app.file, 'kind', 'kind saml needs `issuer` in ripple.yaml (the IdP entityID)');
    if (!keys) throw new ConfigError(app.file, 'kind', 'kind saml needs `signing` keys in ripple.yaml');
    if (!keys.saml) throw new ConfigError(app.file, 'kind', 'kind saml needs an RSA key in ripple.yaml `signing.keys`');
    if (s.requireSignedResponse && s.sp.certificates.length === 0) {
      throw new ConfigError(
        app.file,
        'saml.requireSignedResponse',
        'needs the SP certificate (sp.metadata or sp.cert)',
      );
    }
    if (!services.sessions && !s.allowSubjectWide) {
      throw new ConfigError(
        app.file,
        'saml.allowSubjectWide',
        'no session registry is running, so set allowSubjectWide: true',
      );
    }
    const idp = rippleIdentityProvider(keys, issuer);
    const sp = s.sp.metadata
      ? samlify.ServiceProvider({ metadata: s.sp.metadata, wantLogoutRequestSigned: true })
      : samlify.ServiceProvider({
          entityID: s.sp.entityID,
          wantLogoutRequestSigned: true,
          singleLogoutService: [{ Binding: SAML_BINDING[s.sp.binding], Location: s.sp.sloUrl }],
          ...(s.sp.certificates.length > 0 ? { signingCert: s.sp.certificates } : {}),
        });

    /** The signed LogoutRequest XML: samlify signs (enveloped RSA-SHA256 signature after Issuer). */
    function signedRequest(nameId: string, sessionIndexes: string[]): { id: string; xml: string } {
      let built: { id: string; xml: string } | undefined;
      const result = idp.createLogoutRequest(
        sp,
        'post',
        { logoutNameID: nameId },
        {
          customTagReplacement: () => {
            built = logoutRequestXml({
              issuer: issuer as string,
              destination: s.sp.sloUrl,
              nameId,
              nameIdFormat: s.nameId.format,
              sessionIndexes,
            });
            return { id: built.id, context: built.xml };
          },
        },
      );
      if (!built) throw new Error('samlify did not build the LogoutRequest');
      return { id: built.id, xml: Buffer.from(result.context, 'base64').toString('utf8') };
    }

    function post(ctx: DeliveryContext, body: string, headers: Record<string, string>): Promise<Response> {
      const init = { method: 'POST', body, headers, redirect: 'manual', signal: ctx.signal } as const;
      return fetchTarget(s.sp.sloUrl, init, 'SAML_SLO_UNREACHABLE');
    }

    function httpFailure(res: Response, text: string): never {
      const body = excerpt(text);
      throw httpStatusError(res, `SLO endpoint answered HTTP ${res.status}${body ? `: ${body}` : ''}`, {
        retryable: 'SAML_SLO_HTTP_STATUS',
        permanent: 'SAML_SLO_REFUSED',
      });
    }

    /** Checks a LogoutResponse against the request it answers (./response.ts). */
    function checkResponse(xml: string, requestId: string, signatureCheckable: boolean): LogoutOutcome {
      return checkLogoutResponse(xml, {
        requestId,
        spEntityID: s.sp.entityID,
        spKeys: s.sp.keys,
        requireSigned: s.requireSignedResponse,
        signatureCheckable,
      });
    }

    async function send(ctx: DeliveryContext, nameId: string, sessionIndexes: string[]): Promise<LogoutOutcome> {
      const request = signedRequest(nameId, sessionIndexes);
      if (s.sp.binding === 'soap') {
        const res = await post(ctx, soapEnvelope(request.xml), {
          'content-type': 'text/xml; charset=utf-8',
          soapaction: `"${SOAP_ACTION}"`,
          accept: 'text/xml',
        });
        const text = await res.text().catch(() => '');
        let content: ReturnType<typeof readSoap>;
        try {
          content = readSoap(text, 'LogoutResponse');
        } catch (err) {
          if (!res.ok) httpFailure(res, text);
          throw new PermanentDeliveryError(
            'SAML_RESPONSE_INVALID',
            `SOAP answer (HTTP ${res.status}): ${errorMessage(err)}`,
          );
        }
        if (content.kind === 'fault') {
          const msg = `SOAP Fault ${content.code}: ${excerpt(content.text)}`;
          if (/Server$/.test(content.code)) throw new TransientDeliveryError('SAML_SOAP_FAULT', msg);
          throw new PermanentDeliveryError('SAML_SOAP_FAULT', msg);
        }
        if (!res.ok) httpFailure(res, text);
        return checkResponse(content.xml, request.id, true);
      }
      // HTTP-POST binding, server to server: the SP answers with an auto-submitting form
      // (or a redirect) carrying its LogoutResponse back to us.
      const res = await post(
        ctx,
        new URLSearchParams({ SAMLRequest: Buffer.from(request.xml).toString('base64') }).toString(),
        {
          'content-type': 'application/x-www-form-urlencoded',
        },
      );
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel().catch(() => {});
        const encoded = new URL(location, s.sp.sloUrl).searchParams.get('SAMLResponse');
        if (!encoded) throw noLogoutResponse(`HTTP ${res.status} redirect to ${location}`);
        return checkResponse(decode(encoded, 'redirect'), request.id, false);
      }
      const text = await res.text().catch(() => '');
      if (!res.ok) httpFailure(res, text);
      const encoded =
        /name=["']SAMLResponse["'][^>]*value=["']([^"']+)["']/i.exec(text)?.[1] ??
        /value=["']([^"']+)["'][^>]*name=["']SAMLResponse["']/i.exec(text)?.[1];
      if (!encoded) {
        const page = excerpt(text);
        throw noLogoutResponse(`HTTP ${res.status}${page ? ` (${page})` : ''}`);
      }
      return checkResponse(decode(encoded, 'post'), request.id, true);
    }

    return {
      async deliver(ctx): Promise<DeliveryResult> {
        const { event } = ctx;
        const plan = await planSessions(
          services.sessions,
          app.id,
          event.user.username,
          event.occurredAt,
          s.allowSubjectWide,
        );
        if (plan.mode === 'skip') return { outcome: 'skipped', detail: plan.detail };
        const templateNameId = () => renderSubject(s.nameId.value, event.user);

        if (plan.mode === 'subjectWide') {
          const result = await send(ctx, templateNameId(), []);
          return finish([result], 'NameID-only LogoutRequest', 0);
        }

        // One LogoutRequest per NameID, listing the SessionIndex of each session opened before the change.
        const groups = new Map<string, SessionRecord[]>();
        for (const session of plan.sessions) {
          const nameId = session.nameId ?? templateNameId();
          groups.set(nameId, [...(groups.get(nameId) ?? []), session]);
        }
        const results: LogoutOutcome[] = [];
        const warnings: string[] = [];
        let ended = 0;
        for (const [nameId, sessions] of groups) {
          const indexed = sessions.filter((x) => x.sessionIndex);
          const unindexed = sessions.filter((x) => !x.sessionIndex);
          if (indexed.length > 0) {
            results.push(
              await send(
                ctx,
                nameId,
                indexed.map((x) => x.sessionIndex as string),
              ),
            );
            for (const x of indexed) await services.sessions?.delete(x.id);
            ended += indexed.length;
          }
          if (unindexed.length > 0) {
            // Without a SessionIndex only a NameID-wide logout can end them: safe only when no later session exists.
            if (s.allowSubjectWide && plan.later === 0) {
              results.push(await send(ctx, nameId, []));
              for (const x of unindexed) await services.sessions?.delete(x.id);
              ended += unindexed.length;
            } else {
              warnings.push(`${unindexed.length} session(s) recorded without sessionIndex were not ended`);
            }
          }
        }
        return finish(results, `${ended} session(s) ended`, plan.later, warnings);
      },

      async probe(signal) {
        let metadataNote = '';
        if (s.sp.metadataPath) {
          // The SP may have rotated its certificate or moved its endpoint since start-up.
          try {
            const now = spFromMetadata(readFileSync(s.sp.metadataPath, 'utf8'), s.sp.metadataPath, s.sp.binding);
            const changed = [
              now.entityID !== s.sp.entityID && 'entityID',
              now.sloUrl !== s.sp.sloUrl && 'SLO URL',
              now.certificates.join() !== s.sp.certificates.join() && 'certificate',
            ].filter(Boolean);
            if (changed.length > 0) {
              return {
                ok: false,
                detail: `${s.sp.metadataPath} changed (${changed.join(', ')}) since start-up: restart Ripple`,
              };
            }
            metadataNote = `metadata ${s.sp.metadataPath} OK; `;
          } catch (err) {
            return { ok: false, detail: errorMessage(err) };
          }
        }
        const what = `${metadataNote}${s.sp.binding.toUpperCase()} SLO ${redactSecrets(s.sp.sloUrl)} of ${s.sp.entityID}`;
        try {
          // An empty SOAP envelope (or form): a live endpoint answers (often with a Fault or 400) without logging anyone out.
          // The same fetch as deliveries, so credentials in the URL go as HTTP Basic auth.
          const res = await fetchTarget(
            s.sp.sloUrl,
            {
              method: 'POST',
              body: s.sp.binding === 'soap' ? soapEnvelope('') : '',
              headers:
                s.sp.binding === 'soap'
                  ? { 'content-type': 'text/xml; charset=utf-8', soapaction: `"${SOAP_ACTION}"` }
                  : { 'content-type': 'application/x-www-form-urlencoded' },
              redirect: 'manual',
              signal,
            },
            'SAML_SLO_UNREACHABLE',
          );
          const text = await res.text().catch(() => '');
          let fault = false;
          try {
            fault = s.sp.binding === 'soap' && readSoap(text, 'LogoutResponse').kind === 'fault';
          } catch {}
          if (res.status === 401 || res.status === 403) {
            return {
              ok: false,
              detail: `${what} → HTTP ${res.status}: the SLO endpoint refused Ripple${s.sp.sloUrl.includes('@') ? "'s credentials (the user:password in sloUrl)" : ' (it may need credentials: https://user:password@host/… in sloUrl)'}`,
            };
          }
          const ok = res.status !== 404 && res.status !== 405 && (res.status < 500 || fault);
          return { ok, detail: `${what} → HTTP ${res.status}${fault ? ' (SOAP Fault: endpoint alive)' : ''}` };
        } catch (err) {
          return { ok: false, detail: `${what}: ${redactSecrets(errorMessage(err))}` };
        }
      },
    };
  },
};

/**
 * An HTTP-POST answer that carries no LogoutResponse (typically the SP's login page, or a redirect
 * to it: its SLO endpoint wants a browser session). Nothing says the SP ended the sessions, so
 * they stay recorded and the app fails, whether or not signed responses are required. Permanent:
 * the same request gets the same page until the SP (or the binding) is set up for server-to-server
 * logout; an operator retry sends it again then.
 */
function noLogoutResponse(answer: string): PermanentDeliveryError {
  return new PermanentDeliveryError(
    'SAML_NO_LOGOUT_RESPONSE',
    redactSecrets(
      `the SP answered ${answer} without a LogoutResponse (no SAMLResponse): logout not confirmed, the sessions stay recorded. Its SLO endpoint may want a browser session: use binding: soap if the SP offers it, or make its HTTP-POST SLO endpoint answer server-to-server requests`,
    ),
  );
}

/** The LogoutResponse XML from a SAMLResponse value: base64 (POST form) or base64 of raw DEFLATE (redirect). */
function decode(encoded: string, binding: 'post' | 'redirect'): string {
  try {
    const bytes = Buffer.from(encoded, 'base64');
    return (binding === 'redirect' ? inflateRawSync(bytes) : bytes).toString('utf8');
  } catch (err) {
    throw new PermanentDeliveryError(
      'SAML_RESPONSE_INVALID',
      `the SAMLResponse of the ${binding} answer does not decode: ${errorMessage(err)}`,
    );
  }
}

function finish(results: LogoutOutcome[], what: string, later: number, warnings: string[] = []): DeliveryResult {
  const partial = results.filter((r) => r.partial).map((r) => r.detail);
  const parts = [
    `${what}: ${results.length} LogoutRequest(s) answered ${results.map((r) => r.detail.split(' ')[0]).join(', ')}`,
  ];
  if (later > 0) parts.push(`${later} later session(s) left alone`);
  // The SP's StatusMessage goes into the row: redacted like everything else a peer says.
  const result: DeliveryResult = { outcome: 'done', detail: redactSecrets(parts.join('; ')) };
  const warning = [...partial.map((p) => `SP reported ${p}`), ...warnings];
  if (warning.length > 0) result.warning = redactSecrets(warning.join('; '));
  return result;
}
