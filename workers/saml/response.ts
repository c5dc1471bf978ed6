import type { KeyObject } from 'node:crypto';
import { SignedXml } from 'xml-crypto';
import { errorMessage, PermanentDeliveryError } from '../../src/errors.js';
import { NS, parseXml, STATUS } from './xml.js';

/** What a LogoutResponse must match: the request it answers and the SP that sends it. */
export interface ResponseExpectation {
  requestId: string;
  spEntityID: string;
  /** The SP's signing keys (from its certificates); a KeyInfo in the response is never trusted. */
  spKeys: KeyObject[];
  requireSigned: boolean;
  /** False for an HTTP-Redirect answer, whose signature lives in the query string (not checked here). */
  signatureCheckable: boolean;
}

export interface LogoutOutcome {
  partial: boolean;
  detail: string;
}

const ALGORITHMS = {
  c14n: ['http://www.w3.org/2001/10/xml-exc-c14n#', 'http://www.w3.org/2001/10/xml-exc-c14n#WithComments'],
  enveloped: 'http://www.w3.org/2000/09/xmldsig#enveloped-signature',
  // SHA-1 is refused: chosen-prefix collisions are practical, and every current SP signs with SHA-256.
  signature: ['http://www.w3.org/2001/04/xmldsig-more#rsa-sha256', 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha512'],
  digest: ['http://www.w3.org/2001/04/xmlenc#sha256', 'http://www.w3.org/2001/04/xmlenc#sha512'],
};
/** The attribute names xml-crypto resolves a Reference URI against. */
const ID_ATTRIBUTES = new Set(['ID', 'Id', 'id']);

const refuse = (code: string, message: string): never => {
  throw new PermanentDeliveryError(code, message);
};

/**
 * Checks a LogoutResponse against the request it answers and returns its status. A response
 * carrying any `ds:Signature` is accepted only as one signed over its root (see
 * `signedRoot`), and then InResponseTo, Issuer and Status are read from the signed bytes
 * alone, so nothing outside the signature can change what the SP said.
 */
export function checkLogoutResponse(xml: string, expect: ResponseExpectation): LogoutOutcome {
  let doc: Document;
  try {
    doc = parseXml(xml);
  } catch (err) {
    return refuse('SAML_RESPONSE_INVALID', `LogoutResponse: ${errorMessage(err)}`);
  }
  const root = doc.documentElement;
  if (!isElement(root, NS.protocol, 'LogoutResponse')) {
    return refuse('SAML_RESPONSE_INVALID', 'the SP did not answer with a LogoutResponse');
  }
  const signatures = elements(doc.getElementsByTagNameNS(NS.dsig, 'Signature'));
  let message: Element = root;
  if (signatures.length > 0 || expect.requireSigned) {
    if (signatures.length === 0) refuse('SAML_RESPONSE_UNSIGNED', 'the LogoutResponse is not signed');
    if (!expect.signatureCheckable) {
      refuse('SAML_RESPONSE_UNVERIFIED', 'a redirect-binding LogoutResponse cannot be verified here');
    }
    if (expect.spKeys.length === 0) {
      refuse(
        'SAML_RESPONSE_UNVERIFIED',
        'the SP signed its LogoutResponse but no SP certificate is configured (saml.sp.metadata or saml.sp.cert)',
      );
    }
    message = signedRoot(xml, doc, root, signatures, expect.spKeys);
  }
  return readResponse(message, expect);
}

/**
 * The LogoutResponse as signed. Accepted: exactly one `ds:Signature` in the document, a
 * direct child of the root; one Reference, to `#<root ID>`, that ID carried by no other
 * element; transforms enveloped-signature then exclusive c14n; RSA-SHA256/512 with a
 * SHA-256/512 digest; and a signature that verifies with one of the SP's keys.
 */
function signedRoot(xml: string, doc: Document, root: Element, signatures: Element[], keys: KeyObject[]): Element {
  const [signature] = signatures;
  if (signatures.length > 1 || !signature) {
    refuse(
      'SAML_RESPONSE_SIGNATURE_PLACEMENT',
      `the LogoutResponse holds ${signatures.length} ds:Signature elements; only one, directly on the LogoutResponse, is accepted`,
    );
  }
  const sig = signature as Element;
  if (sig.parentNode !== root) {
    const path: string[] = [];
    for (let n = sig.parentNode; n && n !== root; n = n.parentNode) path.unshift(n.nodeName);
    refuse(
      'SAML_RESPONSE_SIGNATURE_PLACEMENT',
      `the only ds:Signature sits in ${path.join('/')}, not directly on the LogoutResponse (signature wrapping?)`,
    );
  }
  const id = root.getAttribute('ID') ?? '';
  if (!id) refuse('SAML_RESPONSE_INVALID', 'the signed LogoutResponse has no ID');
  const holders = elements(doc.getElementsByTagName('*')).filter((el) =>
    Array.from({ length: el.attributes.length }, (_, i) => el.attributes.item(i)).some(
      (a) => a !== null && ID_ATTRIBUTES.has(a.localName ?? a.name) && a.value === id,
    ),
  );
  if (holders.length > 1) {
    refuse('SAML_RESPONSE_DUPLICATE_ID', `${holders.length} elements carry the ID "${id}" (signature wrapping?)`);
  }

  // xml-crypto reads the algorithms from the first matching descendants, so nothing may precede SignedInfo.
  const parts = children(sig, '*', null).map((el) => `${el.namespaceURI === NS.dsig ? '' : '?'}${el.localName}`);
  if (!/^SignedInfo,SignatureValue(,KeyInfo)?$/.test(parts.join(','))) {
    refuse(
      'SAML_RESPONSE_INVALID',
      `the ds:Signature holds ${parts.join(', ') || 'nothing'}; SignedInfo, SignatureValue and an optional KeyInfo are expected`,
    );
  }
  const signedInfo = onlyChild(sig, 'SignedInfo');
  const algorithm = (parent: Element | undefined, name: string) =>
    (parent && onlyChild(parent, name)?.getAttribute('Algorithm')) ?? '';
  const c14n = algorithm(signedInfo, 'CanonicalizationMethod');
  const method = algorithm(signedInfo, 'SignatureMethod');
  // Counted by local name in any namespace, as xml-crypto finds them.
  const references = signedInfo ? children(signedInfo, 'Reference', null) : [];
  const [reference] = references;
  if (references.length !== 1 || !reference) {
    return refuse(
      'SAML_RESPONSE_SIGNATURE_REFERENCE',
      `the signature has ${references.length} References; one is accepted`,
    );
  }
  const uri = reference.getAttribute('URI') ?? '';
  if (uri !== `#${id}`) {
    refuse(
      'SAML_RESPONSE_SIGNATURE_REFERENCE',
      `the signature covers "${uri}", not the LogoutResponse (ID "${id}") it sits on (signature wrapping?)`,
    );
  }
  const transformsEl = onlyChild(reference, 'Transforms');
  const transforms = transformsEl ? children(transformsEl, 'Transform').map((t) => t.getAttribute('Algorithm')) : [];
  const digest = algorithm(reference, 'DigestMethod');
  const unacceptable = [
    !ALGORITHMS.c14n.includes(c14n) && `canonicalization ${c14n || '(none)'}`,
    !ALGORITHMS.signature.includes(method) && `signature ${method || '(none)'}`,
    !ALGORITHMS.digest.includes(digest) && `digest ${digest || '(none)'}`,
    !(
      transforms.length === 2 &&
      transforms[0] === ALGORITHMS.enveloped &&
      ALGORITHMS.c14n.includes(transforms[1] ?? '')
    ) && `transforms ${transforms.join(', ') || '(none)'}`,
  ].filter(Boolean);
  if (unacceptable.length > 0) {
    refuse(
      'SAML_RESPONSE_SIGNATURE_ALGORITHM',
      `the LogoutResponse signature uses ${unacceptable.join('; ')}: configure the SP to sign with RSA-SHA256 (or -512) and a SHA-256 (or -512) digest, transforms enveloped-signature + exclusive c14n`,
    );
  }

  let problem = 'does not verify with the SP certificate(s)';
  for (const key of keys) {
    // No getCertFromKeyInfo: only the configured keys count, never one the response brings.
    const verifier = new SignedXml({ publicCert: key });
    try {
      verifier.loadSignature(sig);
      if (verifier.checkSignature(xml)) {
        const signedReferences = verifier.getSignedReferences();
        const signed = signedReferences.length === 1 ? signedReferences[0] : undefined;
        const signedDoc = signed ? parseXml(signed) : undefined;
        const signedRootEl = signedDoc?.documentElement;
        if (isElement(signedRootEl, NS.protocol, 'LogoutResponse') && signedRootEl.getAttribute('ID') === id) {
          return signedRootEl;
        }
        problem = 'signed something other than the LogoutResponse';
      } else {
        problem = 'does not match what was signed (altered after signing)';
      }
    } catch (err) {
      if (/multiple|wrapping/i.test(errorMessage(err))) problem = errorMessage(err);
    }
  }
  return refuse('SAML_RESPONSE_SIGNATURE', `the LogoutResponse signature ${problem}`);
}

/** InResponseTo, Issuer and Status of `message` (the signed root, or the root of an unsigned response). */
function readResponse(message: Element, expect: ResponseExpectation): LogoutOutcome {
  const inResponseTo = message.getAttribute('InResponseTo');
  if (inResponseTo !== expect.requestId) {
    refuse(
      'SAML_RESPONSE_MISMATCH',
      `LogoutResponse InResponseTo "${inResponseTo ?? ''}" does not match our request ${expect.requestId}`,
    );
  }
  const issuer = childNS(message, NS.assertion, 'Issuer')?.textContent?.trim();
  if (issuer !== undefined && issuer !== expect.spEntityID) {
    refuse('SAML_RESPONSE_ISSUER', `LogoutResponse Issuer "${issuer}" is not the SP "${expect.spEntityID}"`);
  }
  const status = childNS(message, NS.protocol, 'Status');
  const top = status && childNS(status, NS.protocol, 'StatusCode');
  const second = top && childNS(top, NS.protocol, 'StatusCode');
  const topCode = top?.getAttribute('Value') ?? '';
  const secondCode = second?.getAttribute('Value') ?? '';
  const text = status && childNS(status, NS.protocol, 'StatusMessage')?.textContent?.trim();
  const shown = [topCode, secondCode]
    .filter(Boolean)
    .map((c) => c.split(':').pop())
    .join('/');
  if (secondCode === STATUS.partialLogout) {
    return { partial: true, detail: `PartialLogout (${shown}${text ? `: ${text}` : ''})` };
  }
  if (topCode === STATUS.success) return { partial: false, detail: 'Success' };
  return refuse('SAML_LOGOUT_FAILED', `the SP answered ${shown || 'no status'}${text ? `: ${text}` : ''}`);
}

function isElement(node: Node | null | undefined, ns: string, local: string): node is Element {
  return node?.nodeType === 1 && (node as Element).namespaceURI === ns && (node as Element).localName === local;
}

function elements(list: { length: number; item(i: number): Element | null }): Element[] {
  return Array.from({ length: list.length }, (_, i) => list.item(i)).filter((e): e is Element => e !== null);
}

function childNS(parent: Element, ns: string, local: string): Element | undefined {
  for (let n = parent.firstChild; n; n = n.nextSibling) if (isElement(n, ns, local)) return n;
  return undefined;
}

/** The ds: children of that local name (`*`: any), or of any namespace with `ns` null. */
function children(parent: Element, local: string, ns: string | null = NS.dsig): Element[] {
  const found: Element[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    const el = n as Element;
    if (n.nodeType === 1 && (local === '*' || el.localName === local) && (ns === null || el.namespaceURI === ns)) {
      found.push(el);
    }
  }
  return found;
}

/** The single ds: child of that name; undefined when absent or repeated. */
function onlyChild(parent: Element, local: string): Element | undefined {
  const found = children(parent, local);
  return found.length === 1 ? found[0] : undefined;
}
