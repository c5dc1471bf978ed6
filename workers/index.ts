import type { TargetAdapter } from '../src/targets/adapter.js';
import { deviceAdapter } from './device/index.js';
import { gtrAdapter } from './gtr/index.js';
import { ldapAdapter } from './ldap/index.js';
import { oidcAdapter } from './oidc/index.js';
import { radiusAdapter } from './radius/index.js';
import { samlAdapter } from './saml/index.js';
import { ssfAdapter } from './ssf/index.js';
import { webhookAdapter } from './webhook/index.js';

/**
 * Every target kind, by name. Adding a kind is its own folder plus one line here;
 * the `satisfies` clause makes a key that differs from its adapter's `kind` a compile error.
 */
export const targetKinds = {
  webhook: webhookAdapter,
  ldap: ldapAdapter,
  radius: radiusAdapter,
  saml: samlAdapter,
  oidc: oidcAdapter,
  device: deviceAdapter,
  ssf: ssfAdapter,
  gtr: gtrAdapter,
  // biome-ignore lint/suspicious/noExplicitAny: each adapter has its own settings type
} satisfies { [K in string]: TargetAdapter<K, any> };

export type TargetKind = keyof typeof targetKinds;
