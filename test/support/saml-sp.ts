import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import * as xmllint from '@authenio/samlify-node-xmllint';
import * as samlify from 'samlify';
import { selfSignedCertificate } from '../../src/signing/x509.js';
import { freePort } from '../../src/util/server-process.js';
import { NS, parseXml, readSoap, STATUS, soapEnvelope, soapFault } from '../../workers/saml/xml.js';

samlify.setSchemaValidator(xmllint);

/**
 * The schema validator is xmllint compiled to WebAssembly: its first call compiles the module,
 * which takes 5–11 s on these machines and blocks the event loop (the SP, and a Ripple in the same
 * test process, stop answering). Done once, when this module is loaded, before any test starts a
 * Ripple: never inside a delivery's timeout.
 */
await xmllint
  .validate(
    `<samlp:LogoutResponse xmlns:samlp="${NS.protocol}" ID="_w" Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><samlp:Status><samlp:StatusCode Value="${STATUS.success}"/></samlp:Status></samlp:LogoutResponse>`,
  )
  .catch(() => undefined);

export interface ReceivedLogout {
  id: string;
  issuer: string;
  nameId: string;
  nameIdFormat: string;
  sessionIndexes: string[];
  reason: string | null;
  notOnOrAfter: string | null;
  /** The signed LogoutRequest exactly as received (for xmlsec1). */
  xml: string;
}

/**
 * A SAML service provider (samlify) behind a small node http server. It fetches Ripple's
 * IdP metadata from `/saml/metadata`, verifies every LogoutRequest's XML signature
 * against it (samlify, real RSA check), ends the matching local sessions and answers a
 * SOAP 1.1 LogoutResponse, signed with its own key when `signResponses`.
 * `mode` makes it answer an error status, a partial logout or an HTTP 500; on its HTTP-POST
 * endpoint, `loginPage` and `loginRedirect` play an SP whose SLO endpoint wants a browser session:
 * it ends nothing and answers with its login page (200) or a 302 to it (carrying
 * `SP_LOGIN_TOKEN`, as some SPs put a session token in the login URL).
 */
export interface TestSp {
  entityID: string;
  sloUrl: string;
  metadata: string;
  certificatePem: string;
  /** Local sessions: SessionIndex → NameID. */
  sessions: Map<string, string>;
  received: ReceivedLogout[];
  refused: string[];
  mode: 'ok' | 'requester' | 'responder' | 'partial' | 'http500' | 'wrongInResponseTo' | 'loginPage' | 'loginRedirect';
  stop(): Promise<void>;
}

/** The token a `loginRedirect` SP puts in its login URL: it must not show in any status row. */
export const SP_LOGIN_TOKEN = 'st-8c1d9e2f7a6b40e1';

export async function startTestSp(opts: {
  idpMetadataUrl: string;
  signResponses?: boolean;
  /** Listen here (when the SP's URLs must be known before it starts). */
  port?: number;
}): Promise<TestSp> {
  const port = opts.port ?? (await freePort());
  const base = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const certificatePem = selfSignedCertificate(privateKey, 'test sp');
  const sp = samlify.ServiceProvider({
    entityID: `${base}/sp`,
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    signingCert: certificatePem,
    requestSignatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    wantLogoutRequestSigned: true,
    singleLogoutService: [
      { Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:SOAP', Location: `${base}/slo` },
      { Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', Location: `${base}/slo-post` },
    ],
    assertionConsumerService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', Location: `${base}/acs` }],
  });
  let idp: ReturnType<typeof samlify.IdentityProvider> | undefined;
  const loadIdp = async () => {
    const res = await fetch(opts.idpMetadataUrl);
    if (!res.ok) throw new Error(`IdP metadata: HTTP ${res.status}`);
    idp = samlify.IdentityProvider({
      metadata: await res.text(),
      wantLogoutResponseSigned: opts.signResponses ?? false,
    });
    return idp;
  };

  const state: TestSp = {
    entityID: `${base}/sp`,
    sloUrl: `${base}/slo`,
    metadata: sp.getMetadata(),
    certificatePem,
    sessions: new Map(),
    received: [],
    refused: [],
    mode: 'ok',
    stop: async () => {},
  };

  const handle = async (requestXml: string): Promise<{ status: number; body: string }> => {
    const from = idp ?? (await loadIdp());
    let info: Awaited<ReturnType<typeof sp.parseLogoutRequest>>;
    try {
      info = await sp.parseLogoutRequest(from, 'post', {
        body: { SAMLRequest: Buffer.from(requestXml).toString('base64') },
      });
    } catch (err) {
      state.refused.push(String((err as Error)?.message ?? err));
      return {
        status: 500,
        body: soapFault('Client', `LogoutRequest refused: ${String((err as Error)?.message ?? err)}`),
      };
    }
    const doc = parseXml(requestXml);
    const root = doc.documentElement as unknown as Element;
    const nameIdEl = root.getElementsByTagNameNS(NS.assertion, 'NameID').item(0);
    const indexes = Array.from(
      { length: root.getElementsByTagNameNS(NS.protocol, 'SessionIndex').length },
      (_, i) => root.getElementsByTagNameNS(NS.protocol, 'SessionIndex').item(i)?.textContent ?? '',
    );
    const received: ReceivedLogout = {
      id: root.getAttribute('ID') ?? '',
      issuer: root.getElementsByTagNameNS(NS.assertion, 'Issuer').item(0)?.textContent ?? '',
      nameId: nameIdEl?.textContent ?? '',
      nameIdFormat: nameIdEl?.getAttribute('Format') ?? '',
      sessionIndexes: indexes,
      reason: root.getAttribute('Reason'),
      notOnOrAfter: root.getAttribute('NotOnOrAfter'),
      xml: requestXml,
    };
    state.received.push(received);
    if (state.mode === 'http500') return { status: 500, body: 'internal error' };
    const ok = state.mode === 'ok' || state.mode === 'wrongInResponseTo' || state.mode === 'partial';
    if (ok) {
      for (const [index, nameId] of state.sessions) {
        if (nameId === received.nameId && (indexes.length === 0 || indexes.includes(index)))
          state.sessions.delete(index);
      }
    }
    const status =
      state.mode === 'requester'
        ? `<samlp:StatusCode Value="${STATUS.requester}"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal"/></samlp:StatusCode><samlp:StatusMessage>no such user here</samlp:StatusMessage>`
        : state.mode === 'responder'
          ? `<samlp:StatusCode Value="${STATUS.responder}"/>`
          : state.mode === 'partial'
            ? `<samlp:StatusCode Value="${STATUS.success}"><samlp:StatusCode Value="${STATUS.partialLogout}"/></samlp:StatusCode>`
            : `<samlp:StatusCode Value="${STATUS.success}"/>`;
    const inResponseTo = state.mode === 'wrongInResponseTo' ? '_someone-else' : received.id;
    const response = sp.createLogoutResponse(
      from,
      info as unknown as Parameters<typeof sp.createLogoutResponse>[1],
      'post',
      {
        customTagReplacement: () => {
          const id = `_r${Date.now()}${Math.random().toString(16).slice(2)}`;
          return {
            id,
            context:
              `<samlp:LogoutResponse xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" ID="${id}" Version="2.0"` +
              ` IssueInstant="${new Date().toISOString()}" Destination="${received.issuer}/saml/slo" InResponseTo="${inResponseTo}">` +
              `<saml:Issuer>${state.entityID}</saml:Issuer><samlp:Status>${status}</samlp:Status></samlp:LogoutResponse>`,
          };
        },
      },
    );
    return { status: 200, body: soapEnvelope(Buffer.from(response.context, 'base64').toString('utf8')) };
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const send = (status: number, body: string) => {
        res.writeHead(status, { 'content-type': 'text/xml; charset=utf-8' });
        res.end(body);
      };
      try {
        if (req.method === 'POST' && req.url === '/slo-post') {
          if (state.mode === 'loginPage') {
            res.writeHead(200, { 'content-type': 'text/html' });
            return res.end(
              '<html><body><form method="post" action="/login">Sign in <input name="user"/></form></body></html>',
            );
          }
          if (state.mode === 'loginRedirect') {
            res.writeHead(302, { location: `${base}/login?next=%2Fslo-post&session_token=${SP_LOGIN_TOKEN}` });
            return res.end();
          }
          // HTTP-POST binding: answer with the auto-submitting form a browser would get.
          const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
          const answer = await handle(Buffer.from(form.get('SAMLRequest') ?? '', 'base64').toString('utf8'));
          const inner = readSoap(answer.body, 'LogoutResponse');
          if (inner.kind !== 'message') return send(400, 'refused');
          res.writeHead(200, { 'content-type': 'text/html' });
          return res.end(
            `<html><body onload="document.forms[0].submit()"><form method="post" action="${state.received.at(-1)?.issuer}/saml/slo">` +
              `<input type="hidden" name="SAMLResponse" value="${Buffer.from(inner.xml).toString('base64')}"/></form></body></html>`,
          );
        }
        if (req.method !== 'POST' || req.url !== '/slo') return send(404, '');
        let content: ReturnType<typeof readSoap>;
        try {
          content = readSoap(Buffer.concat(chunks).toString('utf8'), 'LogoutRequest');
        } catch (err) {
          return send(500, soapFault('Client', (err as Error).message));
        }
        if (content.kind === 'fault') return send(500, soapFault('Client', 'unexpected Fault'));
        const answer = await handle(content.xml);
        send(answer.status, answer.body);
      } catch (err) {
        send(500, soapFault('Server', String(err)));
      }
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  state.stop = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
