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

/** The first element with this namespace and local name, in document order. */
export function firstElement(root: Document | Element, ns: string, local: string): Element | undefined {
  const list = root.getElementsByTagNameNS(ns, local);
  return list.length > 0 ? (list.item(0) ?? undefined) : undefined;
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

/** The SAML message (by local name) or the Fault inside a SOAP 1.1 Body. */
export function readSoap(text: string, messageName: 'LogoutRequest' | 'LogoutResponse'): SoapContent {
  const doc = parseXml(text);
  const envelope = doc.documentElement;
  if (!envelope || envelope.namespaceURI !== NS.soap || envelope.localName !== 'Envelope') {
    throw new Error('not a SOAP 1.1 envelope');
  }
  const body = firstElement(envelope, NS.soap, 'Body');
  if (!body) throw new Error('SOAP envelope without Body');
  const fault = firstElement(body, NS.soap, 'Fault');
  if (fault) {
    const child = (name: string) => {
      const el = fault.getElementsByTagName(name).item(0);
      return el?.textContent?.trim() ?? '';
    };
    return { kind: 'fault', code: child('faultcode'), text: child('faultstring') };
  }
  const element = firstElement(body, NS.protocol, messageName);
  if (!element) throw new Error(`SOAP Body holds no ${messageName}`);
  return { kind: 'message', xml: serialize(element), element };
}
