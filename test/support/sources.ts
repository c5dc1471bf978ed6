import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { TestRipple } from './ripple.js';

/** Writes `sources/<id>.yaml` for each source into a config directory made by `writeConfig`. */
export function writeSources(configDir: string, sources: Record<string, unknown>[]): string {
  mkdirSync(join(configDir, 'sources'), { recursive: true });
  for (const s of sources) writeFileSync(join(configDir, 'sources', `${String(s.id)}.yaml`), stringify(s));
  return configDir;
}

/** An ldap app that is never reached: a credential app that source events must skip. */
export function unreachableLdapApp(id = 'corp-ldap', extra: Record<string, unknown> = {}) {
  return {
    id,
    kind: 'ldap',
    retry: { attempts: 1, backoff: '100ms' },
    timeout: '1s',
    settle: '1s',
    ...extra,
    ldap: {
      url: 'ldap://127.0.0.1:1',
      bindDN: 'cn=ripple,dc=example,dc=org',
      bindPassword: 'not-used-by-these-tests',
      userDN: 'uid={username},ou=people,dc=example,dc=org',
    },
  };
}

/** Sends a request to a source's route through the real HTTP stack (inject). */
export async function toSource(
  t: TestRipple,
  id: string,
  body: string | object | undefined,
  headers: Record<string, string> = {},
  method: 'POST' | 'GET' = 'POST',
) {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const res = await t.http.inject({
    method,
    url: `/v1/sources/${id}`,
    ...(payload !== undefined ? { payload } : {}),
    headers: { ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
  });
  let json: Record<string, unknown> = {};
  try {
    json = res.json();
  } catch {}
  return { status: res.statusCode, json, text: res.body };
}

/** The value of one series of a metric in Prometheus text. */
export async function metricValue(t: TestRipple, name: string, labels: Record<string, string>): Promise<number> {
  const text = await t.ripple.engine.metrics.registry.metrics();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (want.every((w) => line.includes(w))) return Number(line.split(' ').at(-1));
  }
  return 0;
}
