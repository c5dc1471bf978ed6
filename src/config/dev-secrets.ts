import { isIP } from 'node:net';
import { join } from 'node:path';
import type { LoadedConfig } from './load.js';

/**
 * The development fallbacks of the example config (`${NAME:-fallback}` in `config/`): published
 * in the repository, so anyone can sign events, read the status API or open the vault with them.
 * Each names the variable the example config reads it from, and how to make a real one.
 */
export const DEV_SECRETS = [
  {
    env: 'RIPPLE_WEBHOOK_SECRET',
    value: 'whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtY2hhbmdlLW1l',
    make: 'echo "whsec_$(openssl rand -base64 32)"',
  },
  { env: 'RIPPLE_ADMIN_TOKEN', value: 'dev-admin-token-change-me', make: 'openssl rand -hex 32' },
  { env: 'RIPPLE_VAULT_KEY', value: 'ZGV2LW9ubHktdmF1bHQta2V5LTMyLWJ5dGVzLWxvbiE=', make: 'openssl rand -base64 32' },
  {
    env: 'AUDIT_WEBHOOK_SECRET',
    value: 'whsec_ZGV2LW9ubHktYXVkaXQtc2VjcmV0LWNoYW5nZS1tZQ==',
    make: 'the secret your audit receiver verifies with',
  },
  { env: 'CRM_OP_SECRET', value: 'dev-only-change-me', make: 'the client secret your OpenID Provider issued' },
] as const;

export interface DevSecretUse {
  file: string;
  /** Key path in that file, e.g. `admin.tokens[0]`. */
  key: string;
  env: string;
  make: string;
}

const byValue = new Map<string, (typeof DEV_SECRETS)[number]>(DEV_SECRETS.map((s) => [s.value, s]));

/** Every place the loaded config (ripple.yaml and enabled apps) holds a development secret. */
export function findDevSecrets(config: LoadedConfig): DevSecretUse[] {
  const found: DevSecretUse[] = [];
  const serviceFile = join(config.dir, 'ripple.yaml');
  const { ingest, admin, vault } = config.service;
  const check = (file: string, key: string, value: unknown) => {
    const known = typeof value === 'string' ? byValue.get(value) : undefined;
    if (known) found.push({ file, key, env: known.env, make: known.make });
  };
  for (const [i, secret] of ingest.secrets.entries()) check(serviceFile, `ingest.secrets[${i}]`, secret);
  for (const [i, token] of admin.tokens.entries()) check(serviceFile, `admin.tokens[${i}]`, token);
  check(serviceFile, 'vault.key', vault.key.toString('base64'));
  for (const app of config.apps) {
    if (!app.enabled) continue;
    walk(app.settings, app.kind, (key, value) => check(app.file, key, value));
  }
  return found;
}

function walk(node: unknown, at: string, visit: (key: string, value: unknown) => void): void {
  if (Array.isArray(node)) {
    for (const [i, item] of node.entries()) walk(item, `${at}[${i}]`, visit);
  } else if (node && typeof node === 'object' && !Buffer.isBuffer(node)) {
    for (const [k, v] of Object.entries(node)) walk(v, `${at}.${k}`, visit);
  } else visit(at, node);
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

/** The refusal: each key with the variable to set. */
export function devSecretsMessage(host: string, found: DevSecretUse[]): string {
  return [
    `refusing to listen on ${host} with development secrets from the example config (published with Ripple, so anyone could use them):`,
    ...found.map((f) => `  ${f.file}: ${f.key} — set ${f.env} (${f.make})`),
    'Set them in the environment, or listen on this machine only (HOST=127.0.0.1).',
  ].join('\n');
}
