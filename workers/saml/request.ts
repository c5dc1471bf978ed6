import { randomBytes } from 'node:crypto';
import { escapeXml, LOGOUT_REASON_ADMIN, NS } from './xml.js';

/** How long the SP may act on our LogoutRequest (SAML core §3.7.1 NotOnOrAfter). */
export const REQUEST_LIFETIME_MS = 5 * 60_000;

export interface LogoutRequestInput {
  issuer: string;
  destination: string;
  nameId: string;
  nameIdFormat: string;
  /** Empty: all of the NameID's sessions at the SP. */
  sessionIndexes: string[];
  now?: Date;
}

/** An unsigned SAML 2.0 LogoutRequest (signed afterwards by samlify); `id` starts with `_` as an NCName must not start with a digit. */
export function logoutRequestXml(input: LogoutRequestInput): { id: string; xml: string } {
  const now = input.now ?? new Date();
  const id = `_${randomBytes(20).toString('hex')}`;
  const notOnOrAfter = new Date(now.getTime() + REQUEST_LIFETIME_MS);
  const xml =
    `<samlp:LogoutRequest xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" ID="${id}" Version="2.0"` +
    ` IssueInstant="${now.toISOString()}" Destination="${escapeXml(input.destination)}"` +
    ` NotOnOrAfter="${notOnOrAfter.toISOString()}" Reason="${LOGOUT_REASON_ADMIN}">` +
    `<saml:Issuer>${escapeXml(input.issuer)}</saml:Issuer>` +
    `<saml:NameID Format="${escapeXml(input.nameIdFormat)}">${escapeXml(input.nameId)}</saml:NameID>` +
    input.sessionIndexes.map((s) => `<samlp:SessionIndex>${escapeXml(s)}</samlp:SessionIndex>`).join('') +
    '</samlp:LogoutRequest>';
  return { id, xml };
}
