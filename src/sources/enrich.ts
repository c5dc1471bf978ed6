import { attributeValues, groupName } from '../../workers/ldap/entry.js';
import { escapeFilterValue, type LdapSettings, resolveUser, step, withClient } from '../../workers/ldap/index.js';
import type { AppConfig } from '../config/types.js';
import type { EventMeta } from '../events/event.js';
import type { PasswordChange } from '../targets/adapter.js';
import type { EnrichSettings } from './types.js';

/** How long one directory lookup for an event may take. */
const LOOKUP_TIMEOUT_MS = 10_000;

/**
 * The event's user with `email` and `groups` filled from the directory where the source did not
 * carry them, so `assign: { groups }` works for every source. Undefined when there is nothing to
 * fill or the user is not in the directory; throws when the directory cannot be asked.
 *
 * Done by the planner, not while the source waits for its answer: the event is already recorded
 * (nothing is lost), Okta's 3 s are not spent on a directory, and a directory that is down delays
 * the plan (retried) instead of refusing the change.
 */
export async function enrichUser(
  app: AppConfig<LdapSettings>,
  enrich: EnrichSettings,
  user: PasswordChange['user'],
): Promise<PasswordChange['user'] | undefined> {
  if (user.email && user.groups.length > 0) return undefined;
  const s = app.settings;
  const timeouts = { connect: app.timeout, operation: app.timeout };
  return withClient(s, timeouts, AbortSignal.timeout(LOOKUP_TIMEOUT_MS), async (client) => {
    await step(`bind as ${s.bindDN}`, () => client.bind(s.bindDN, s.bindPassword));
    const found = await resolveUser(client, s, user);
    if ('skip' in found) return undefined;
    const { searchEntries } = await step(`read ${found.dn}`, () =>
      client.search(found.dn, {
        scope: 'base',
        filter: '(objectClass=*)',
        attributes: [enrich.emailAttribute, enrich.groupsAttribute],
      }),
    );
    const entry = (searchEntries[0] ?? {}) as Record<string, unknown>;
    let groups = attributeValues(entry, enrich.groupsAttribute).map(groupName);
    if (enrich.groupSearch) {
      const gs = enrich.groupSearch;
      const filter = gs.filter
        .replaceAll('{dn}', escapeFilterValue(found.dn))
        .replaceAll('{username}', escapeFilterValue(user.username));
      const result = await step(`search ${gs.base} for ${filter}`, () =>
        client.search(gs.base, { scope: 'sub', filter, attributes: [gs.nameAttribute], paged: true }),
      );
      groups = result.searchEntries.flatMap((g) =>
        attributeValues(g as Record<string, unknown>, gs.nameAttribute).slice(0, 1),
      );
    }
    const email = user.email ?? attributeValues(entry, enrich.emailAttribute)[0];
    return {
      ...user,
      ...(email ? { email } : {}),
      groups: user.groups.length > 0 ? user.groups : groups,
    };
  });
}

/** How long the planner retries a directory it cannot reach before it plans with what the source gave. */
export const ENRICH_GIVE_UP_MS = 10 * 60_000;

/** The enrichment an event from a source asks for, if any: its source's `enrich` and that ldap app. */
export function enrichmentFor(
  meta: EventMeta,
  config: {
    sources: readonly { id: string; kind: string; enrich?: EnrichSettings | undefined }[];
    apps: readonly AppConfig[];
  },
): { app: AppConfig<LdapSettings>; enrich: EnrichSettings } | undefined {
  if (!meta.sourceKind) return undefined;
  const source = config.sources.find((s) => s.id === meta.source && s.kind === meta.sourceKind);
  if (!source?.enrich) return undefined;
  const app = config.apps.find((a) => a.id === source.enrich?.directory && a.kind === 'ldap');
  return app ? { app: app as AppConfig<LdapSettings>, enrich: source.enrich } : undefined;
}
