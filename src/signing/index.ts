export {
  type JwsAlg,
  loadSigningKeys,
  type SamlSigner,
  type SigningConfig,
  type SigningKey,
  type SigningKeys,
  signingSchema,
} from './keys.js';
export { NAMEID_FORMATS, rippleIdentityProvider, SAML_BINDING, samlEndpoints } from './metadata.js';
export { type SigningRoutesOptions, signingRoutes } from './routes.js';
export { selfSignedCertificate } from './x509.js';
