import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DOMParser } from '@xmldom/xmldom';

/**
 * A SAML service provider whose XML security is xmlsec1 alone, independent of samlify
 * and of Ripple's code: it verifies each SOAP LogoutRequest with `xmlsec1 --verify`
 * against the certificate in Ripple's `/saml/metadata`, ends the matching local sessions
 * and answers a LogoutResponse signed with `xmlsec1 --sign` (a template with an empty
 * `ds:Signature` after `saml:Issuer`, as SERVERS.md describes), under a key openssl made.
 *
 * `mode` plays what Ripple must cope with:
 * - `success` / `responder`: a genuine signed answer with that status;
 * - `tampered`: the signed Responder answer with its status changed to Success afterwards;
 * - `wrapped`: an attacker's rewrap of the genuine signed Responder answer: an unsigned
 *   Success root carrying the signed response inside `samlp:Extensions`;
 * - `signatureMoved`: the same, with the genuine Signature moved up to the unsigned root
 *   (it still references, and verifies over, the Responder response in Extensions);
 * - `duplicateId`: as `signatureMoved`, the root also taking the signed response's ID.
 * In all but `success` the SP itself answered Responder and ended nothing.
 */
export type XmlsecSpMode = 'success' | 'responder' | 'tampered' | 'wrapped' | 'signatureMoved' | 'duplicateId';

export interface VerifiedLogoutRequest {
  id: string;
  issuer: string;
  nameId: string;
  sessionIndexes: string[];
  notOnOrAfter: string;
}

export interface XmlsecSp {
  entityID: string;
  sloUrl: string;
  certificatePem: string;
  certificatePath: string;
  /** Local sessions: SessionIndex → NameID. */
  sessions: Map<string, string>;
  /** Requests whose signature xmlsec1 verified (and that were acted on). */
  verified: VerifiedLogoutRequest[];
  refused: string[];
  /** The last LogoutResponse it answered, as sent. */
  lastResponse: string;
  mode: XmlsecSpMode;
  /** The response signature: RSA-SHA256 (digest SHA-256) or the legacy RSA-SHA1 (digest SHA-1). */
  algorithm: 'rsa-sha256' | 'rsa-sha1';
  stop(): Promise<void>;
}

const NS = {
  soap: 'http://schemas.xmlsoap.org/soap/envelope/',
  protocol: 'urn:oasis:names:tc:SAML:2.0:protocol',
  assertion: 'urn:oasis:names:tc:SAML:2.0:assertion',
  dsig: 'http://www.w3.org/2000/09/xmldsig#',
};
const STATUS = {
  success: 'urn:oasis:names:tc:SAML:2.0:status:Success',
  responder: 'urn:oasis:names:tc:SAML:2.0:status:Responder',
};
const ALGORITHMS = {
  'rsa-sha256': {
    signature: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    digest: 'http://www.w3.org/2001/04/xmlenc#sha256',
  },
  'rsa-sha1': {
    signature: 'http://www.w3.org/2000/09/xmldsig#rsa-sha1',
    digest: 'http://www.w3.org/2000/09/xmldsig#sha1',
  },
};

const run = promisify(execFile);

async function tool(command: string, args: string[], pkg: string): Promise<string> {
  try {
    return (await run(command, args)).stdout;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${command} is not installed (apt-get install ${pkg})`);
    }
    throw new Error(`${command} ${args[0]} failed: ${(err as { stderr?: string }).stderr ?? String(err)}`);
  }
}

const xmlText = (v: string) =>
  v.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] ?? c);
const newId = () => `_${randomBytes(16).toString('hex')}`;
const withoutDeclaration = (xml: string) => xml.replace(/^\s*<\?xml[^>]*\?>\s*/, '').trim();

export async function startXmlsecSp(opts: { idpMetadataUrl: string; port?: number }): Promise<XmlsecSp> {
  const dir = mkdtempSync(join(tmpdir(), 'xmlsec-sp-'));
  const keyPath = join(dir, 'sp.key');
  const certificatePath = join(dir, 'sp.crt');
  await tool(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certificatePath].concat([
      '-days',
      '2',
      '-subj',
      '/CN=xmlsec test sp',
    ]),
    'openssl',
  );

  let idp: { entityID: string; certPath: string } | undefined;
  const loadIdp = async () => {
    if (idp) return idp;
    const xml = await (await fetch(opts.idpMetadataUrl)).text();
    const entityID = /entityID="([^"]+)"/.exec(xml)?.[1];
    const b64 = /<(?:\w+:)?X509Certificate>([^<]+)</.exec(xml)?.[1]?.replace(/\s+/g, '');
    if (!entityID || !b64) throw new Error(`no entityID or certificate in ${opts.idpMetadataUrl}`);
    const certPath = join(dir, 'idp.crt');
    writeFileSync(
      certPath,
      `-----BEGIN CERTIFICATE-----\n${b64.replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`,
    );
    idp = { entityID, certPath };
    return idp;
  };

  const server = createServer();
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', r));
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;

  const state: XmlsecSp = {
    entityID: `${base}/xmlsec-sp`,
    sloUrl: `${base}/slo`,
    certificatePem: readFileSync(certificatePath, 'utf8'),
    certificatePath,
    sessions: new Map(),
    verified: [],
    refused: [],
    lastResponse: '',
    mode: 'success',
    algorithm: 'rsa-sha256',
    stop: async () => {},
  };

  /** A LogoutResponse signed by xmlsec1 (enveloped, exc-c14n, Reference to the root's ID). */
  async function signedResponse(id: string, inResponseTo: string, status: string, idpEntityID: string) {
    const alg = ALGORITHMS[state.algorithm];
    const template =
      `<samlp:LogoutResponse xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" ID="${id}" Version="2.0"` +
      ` IssueInstant="${new Date().toISOString()}" Destination="${xmlText(idpEntityID)}/saml/slo" InResponseTo="${xmlText(inResponseTo)}">` +
      `<saml:Issuer>${xmlText(state.entityID)}</saml:Issuer>` +
      `<ds:Signature xmlns:ds="${NS.dsig}"><ds:SignedInfo>` +
      '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>' +
      `<ds:SignatureMethod Algorithm="${alg.signature}"/>` +
      `<ds:Reference URI="#${id}"><ds:Transforms>` +
      '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>' +
      '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>' +
      `</ds:Transforms><ds:DigestMethod Algorithm="${alg.digest}"/><ds:DigestValue/></ds:Reference>` +
      '</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>' +
      `<samlp:Status><samlp:StatusCode Value="${status}"/></samlp:Status></samlp:LogoutResponse>`;
    const tmpl = join(dir, `${id}.tmpl.xml`);
    const out = join(dir, `${id}.xml`);
    writeFileSync(tmpl, template);
    await tool(
      'xmlsec1',
      [
        '--sign',
        '--privkey-pem',
        `${keyPath},${certificatePath}`,
        '--id-attr:ID',
        `${NS.protocol}:LogoutResponse`,
      ].concat(['--output', out, tmpl]),
      'xmlsec1',
    );
    const signed = withoutDeclaration(readFileSync(out, 'utf8'));
    rmSync(tmpl, { force: true });
    rmSync(out, { force: true });
    return signed;
  }

  /** Verifies a LogoutRequest (byte-exact from the SOAP body) the way a careful SP would. */
  async function verifyRequest(requestXml: string): Promise<VerifiedLogoutRequest> {
    const from = await loadIdp();
    const file = join(dir, `req-${randomBytes(8).toString('hex')}.xml`);
    writeFileSync(file, requestXml);
    try {
      await tool(
        'xmlsec1',
        ['--verify', '--pubkey-cert-pem', from.certPath, '--id-attr:ID', `${NS.protocol}:LogoutRequest`, file],
        'xmlsec1',
      );
    } finally {
      rmSync(file, { force: true });
    }
    const root = new DOMParser().parseFromString(requestXml, 'text/xml').documentElement;
    if (!root || root.namespaceURI !== NS.protocol || root.localName !== 'LogoutRequest') {
      throw new Error('not a LogoutRequest');
    }
    const id = root.getAttribute('ID') ?? '';
    const children = Array.from({ length: root.childNodes.length }, (_, i) => root.childNodes.item(i)).filter(
      (n): n is Element => n?.nodeType === 1,
    );
    const child = (ns: string, name: string) => children.filter((c) => c.namespaceURI === ns && c.localName === name);
    // What xmlsec1 verified must be this root, not an element elsewhere.
    const [signature] = child(NS.dsig, 'Signature');
    const reference = signature?.getElementsByTagNameNS(NS.dsig, 'Reference').item(0);
    if (!signature || reference?.getAttribute('URI') !== `#${id}`)
      throw new Error('the signature is not over the root');
    const issuer = child(NS.assertion, 'Issuer')[0]?.textContent ?? '';
    if (issuer !== from.entityID) throw new Error(`Issuer ${issuer} is not the IdP ${from.entityID}`);
    if (root.getAttribute('Destination') !== state.sloUrl) throw new Error('wrong Destination');
    const notOnOrAfter = root.getAttribute('NotOnOrAfter') ?? '';
    if (!(Date.parse(notOnOrAfter) > Date.now())) throw new Error(`expired (NotOnOrAfter ${notOnOrAfter})`);
    return {
      id,
      issuer,
      nameId: child(NS.assertion, 'NameID')[0]?.textContent ?? '',
      sessionIndexes: child(NS.protocol, 'SessionIndex').map((s) => s.textContent ?? ''),
      notOnOrAfter,
    };
  }

  async function answer(request: VerifiedLogoutRequest): Promise<string> {
    const from = await loadIdp();
    if (state.mode === 'success' || state.mode === 'responder') {
      if (state.mode === 'success') {
        for (const [index, nameId] of state.sessions) {
          const listed = request.sessionIndexes.length === 0 || request.sessionIndexes.includes(index);
          if (nameId === request.nameId && listed) state.sessions.delete(index);
        }
      }
      const status = state.mode === 'success' ? STATUS.success : STATUS.responder;
      return signedResponse(newId(), request.id, status, from.entityID);
    }
    // The genuine answer is a signed Responder; what reaches Ripple is an alteration of it.
    const genuineId = newId();
    const genuine = await signedResponse(genuineId, request.id, STATUS.responder, from.entityID);
    if (state.mode === 'tampered') return genuine.replace(STATUS.responder, STATUS.success);
    const signature = /<ds:Signature[\s\S]*<\/ds:Signature>/.exec(genuine)?.[0] ?? '';
    const rootId = state.mode === 'duplicateId' ? genuineId : newId();
    const open =
      `<samlp:LogoutResponse xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" ID="${rootId}" Version="2.0"` +
      ` IssueInstant="${new Date().toISOString()}" Destination="${xmlText(from.entityID)}/saml/slo" InResponseTo="${xmlText(request.id)}">` +
      `<saml:Issuer>${xmlText(state.entityID)}</saml:Issuer>`;
    const success = `<samlp:Status><samlp:StatusCode Value="${STATUS.success}"/></samlp:Status></samlp:LogoutResponse>`;
    if (state.mode === 'wrapped') return `${open}<samlp:Extensions>${genuine}</samlp:Extensions>${success}`;
    return `${open}${signature}<samlp:Extensions>${genuine.replace(signature, '')}</samlp:Extensions>${success}`;
  }

  const fault = (message: string) =>
    `<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="${NS.soap}"><soap:Body><soap:Fault>` +
    `<faultcode>soap:Client</faultcode><faultstring>${xmlText(message)}</faultstring></soap:Fault></soap:Body></soap:Envelope>`;

  server.on('request', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const send = (status: number, body: string) => {
        res.writeHead(status, { 'content-type': 'text/xml; charset=utf-8' });
        res.end(body);
      };
      if (req.method !== 'POST' || req.url !== '/slo') return send(404, '');
      const body = Buffer.concat(chunks).toString('utf8');
      // The LogoutRequest exactly as sent: re-serialising it could break its signature.
      const requestXml = /<([A-Za-z_][\w.-]*:)?LogoutRequest[\s>][\s\S]*<\/\1LogoutRequest>/.exec(body)?.[0];
      if (!requestXml) return send(500, fault('no LogoutRequest in the SOAP Body'));
      let request: VerifiedLogoutRequest;
      try {
        request = await verifyRequest(requestXml);
      } catch (err) {
        state.refused.push((err as Error).message);
        return send(500, fault(`LogoutRequest refused: ${(err as Error).message}`));
      }
      state.verified.push(request);
      try {
        const response = await answer(request);
        state.lastResponse = response;
        send(
          200,
          `<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="${NS.soap}"><soap:Body>${response}</soap:Body></soap:Envelope>`,
        );
      } catch (err) {
        send(500, fault(String(err)).replace('soap:Client', 'soap:Server'));
      }
    });
  });

  state.stop = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => {
        rmSync(dir, { recursive: true, force: true });
        r();
      });
    });
  return state;
}
