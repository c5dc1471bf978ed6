import { DOMParser, XMLSerializer } from '@xmldom/xmldom';

export const NS = {
  soap: 'http://schemas.xmlsoap.org/soap/envelope/',
  protocol: 'urn:oasis:names:tc:SAML:2.0:protocol',
  assertion: 'urn:oasis:names:tc:SAML:2.0:assertion',
  dsig: 'http://www.w3.org/2000/09/xmldsig#',
} as const;

export const STATUS = {
  success: 'urn:oasis:names:tc:SAML:2.0:status:Success',
  requester: 'urn:oasis:names:tc:SAML:2.0:status:Requester',
  responder: 'urn:oasis:names:tc:SAML:2.0:status:Responder',
  partialLogout: 'urn:oasis:names:tc:SAML:2.0:status:PartialLogout',
} as const;

export const LOGOUT_REASON_ADMIN = 'urn:oasis:names:tc:SAML:2.0:logout:admin';
export const SOAP_ACTION = 'http://www.oasis-open.org/committees/security';

export function escapeXml(value: string): string {
  return value.replace(
    /[<>&"']/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] ?? c,
  );
}

/** Parses XML, refusing a DOCTYPE (no entity expansion from a peer). Throws on malformed input. */
export function parseXml(text: string): Document {
  if (/<!DOCTYPE/i.test(text)) throw new Error('XML with a DOCTYPE is refused');
  const errors: string[] = [];
  const doc = new DOMParser({
    errorHandler: {
      error: (m: string) => errors.push(m),
      fatalError: (m: string) => errors.push(m),
      warning: () => {},
    },
  }).parseFromString(text, 'text/xml');
  if (errors.length > 0 || !doc.documentElement) throw new Error(`malformed XML: ${errors[0] ?? 'no root element'}`);
  return doc as unknown as Document;
}

export function serialize(node: Node): string {
  return new XMLSerializer().serializeToString(node as never);
}

/** A SOAP 1.1 envelope around one SAML protocol message (the message keeps its own namespaces and signature). */
export function soapEnvelope(message: string): string {
  const body = message.replace(/^\s*<\?xml[^>]*\?>\s*/, '');
  return `<?xml version="1.0" encoding="UTF-8"?><soap-env:Envelope xmlns:soap-env="${NS.soap}"><soap-env:Body>${body}</soap-env:Body></soap-env:Envelope>`;
}

/** A SOAP 1.1 Fault envelope. */
export function soapFault(code: 'Client' | 'Server', message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><soap-env:Envelope xmlns:soap-env="${NS.soap}"><soap-env:Body><soap-env:Fault><faultcode>soap-env:${code}</faultcode><faultstring>${escapeXml(message)}</faultstring></soap-env:Fault></soap-env:Body></soap-env:Envelope>`;
}

export type SoapContent =
  | { kind: 'message'; xml: string; element: Element }
  | { kind: 'fault'; code: string; text: string };

/** The SAML message (by local name) or the Fault that is the only element in a SOAP 1.1 Body. */
export function readSoap(text: string, messageName: 'LogoutRequest' | 'LogoutResponse'): SoapContent {
  const doc = parseXml(text);
  const envelope = doc.documentElement;
  if (!envelope || envelope.namespaceURI !== NS.soap || envelope.localName !== 'Envelope') {
    throw new Error('not a SOAP 1.1 envelope');
  }
  const body = childElements(envelope).find((el) => el.namespaceURI === NS.soap && el.localName === 'Body');
  if (!body) throw new Error('SOAP envelope without Body');
  const content = childElements(body);
  const [element] = content;
  if (content.length !== 1 || !element) {
    throw new Error(`the SOAP Body holds ${content.length} elements; one ${messageName} (or Fault) is expected`);
  }
  if (element.namespaceURI === NS.soap && element.localName === 'Fault') {
    const child = (name: string) => {
      const el = element.getElementsByTagName(name).item(0);
      return el?.textContent?.trim() ?? '';
    };
    return { kind: 'fault', code: child('faultcode'), text: child('faultstring') };
  }
  if (element.namespaceURI !== NS.protocol || element.localName !== messageName) {
    throw new Error(`the SOAP Body holds <${element.nodeName}>, not a ${messageName}`);
  }
  return { kind: 'message', xml: standalone(element), element };
}

function childElements(parent: Element): Element[] {
  const found: Element[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) if (n.nodeType === 1) found.push(n as Element);
  return found;
}

/**
 * The element as a document of its own, with the namespace declarations it inherits from
 * the envelope copied onto it, so that exclusive c14n (InclusiveNamespaces included) gives
 * the same bytes as it did inside the envelope and its signature still verifies.
 */
function standalone(element: Element): string {
  const copy = element.cloneNode(true) as Element;
  for (let el = element.parentNode; el && el.nodeType === 1; el = el.parentNode) {
    const attrs = (el as Element).attributes;
    for (let i = 0; i < attrs.length; i++) {
      const a = attrs.item(i);
      if (a && (a.name === 'xmlns' || a.name.startsWith('xmlns:')) && !copy.hasAttribute(a.name)) {
        copy.setAttributeNS('http://www.w3.org/2000/xmlns/', a.name, a.value);
      }
    }
  }
  return serialize(copy);
}
