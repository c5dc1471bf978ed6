import * as samlify from 'samlify';
import type { SigningKeys } from './keys.js';

export const SAML_BINDING = {
  soap: 'urn:oasis:names:tc:SAML:2.0:bindings:SOAP',
  post: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
  redirect: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
} as const;

export const NAMEID_FORMATS = {
  emailAddress: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
  unspecified: 'urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified',
  persistent: 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
  transient: 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient',
  entity: 'urn:oasis:names:tc:SAML:2.0:nameid-format:entity',
  kerberos: 'urn:oasis:names:tc:SAML:2.0:nameid-format:kerberos',
  windowsDomainQualifiedName: 'urn:oasis:names:tc:SAML:1.1:nameid-format:WindowsDomainQualifiedName',
  x509SubjectName: 'urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName',
} as const;

/** Where Ripple's metadata says its SAML endpoints are (`<issuer>/saml/slo`, `<issuer>/saml/sso`). */
export function samlEndpoints(issuer: string) {
  const base = issuer.replace(/\/+$/, '');
  return { slo: `${base}/saml/slo`, sso: `${base}/saml/sso` };
}

/**
 * Ripple as a SAML IdP entity (samlify), signing with the first RSA key. Ripple only
 * sends LogoutRequests; the SSO endpoint is listed because samlify (and many SPs)
 * refuse IdP metadata without one.
 */
export function rippleIdentityProvider(
  keys: SigningKeys,
  issuer: string,
  extra: { wantLogoutResponseSigned?: boolean } = {},
) {
  if (!keys.saml) throw new Error('SAML needs an RSA signing key (samlify signs XML with RSA only)');
  const { slo, sso } = samlEndpoints(issuer);
  const others = keys.keys.filter((k) => k.kid !== keys.saml?.kid && k.privateKey.asymmetricKeyType === 'rsa');
  return samlify.IdentityProvider({
    ...extra,
    entityID: issuer,
    privateKey: keys.saml.privateKeyPem,
    // The active certificate first, then the ones kept for rotation: SPs accept either.
    signingCert: [keys.saml.certificatePem, ...others.map((k) => k.certificatePem)],
    requestSignatureAlgorithm: keys.saml.signatureAlgorithm,
    nameIDFormat: Object.values(NAMEID_FORMATS),
    singleSignOnService: [{ Binding: SAML_BINDING.redirect, Location: sso }],
    singleLogoutService: [
      { Binding: SAML_BINDING.soap, Location: slo },
      { Binding: SAML_BINDING.post, Location: slo },
    ],
  });
}
