import { keycloakSource } from './keycloak/index.js';
import { ldapWatchSource } from './ldap-watch/index.js';
import { oktaSource } from './okta/index.js';
import { ssfSource } from './ssf/index.js';
import type { SourceKind } from './types.js';

/**
 * Every source kind, by name. Adding one is its own folder plus one line here; the `satisfies`
 * clause makes a key that differs from its kind's `kind` a compile error.
 */
export const sourceKinds = {
  okta: oktaSource,
  keycloak: keycloakSource,
  ssf: ssfSource,
  'ldap-watch': ldapWatchSource,
  // biome-ignore lint/suspicious/noExplicitAny: each kind has its own settings type
} satisfies { [K in string]: SourceKind<K, any> };

export type SourceKindName = keyof typeof sourceKinds;

export function sourceKindOf(kind: string): SourceKind | undefined {
  return (sourceKinds as Record<string, SourceKind>)[kind];
}
