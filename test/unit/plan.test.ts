import { describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { planPropagation } from '../../src/planner/plan.js';

const app = (id: string, extra: Partial<AppConfig> = {}): AppConfig => ({
  id,
  name: id,
  kind: 'webhook',
  category: 'notify',
  enabled: true,
  assign: 'all',
  action: 'revoke',
  delay: 0,
  jitter: 0,
  after: [],
  retry: { attempts: 3, backoff: 1000, maxBackoff: 60_000 },
  timeout: 10_000,
  settle: 30_000,
  settings: {},
  file: `${id}.yaml`,
  ...extra,
});
const alice = { username: 'alice', groups: ['eng'] };
const T = Date.parse('2026-11-27T07:00:00Z');

describe('planPropagation', () => {
  it('picks apps by assignment: all, groups, users; never disabled ones', () => {
    const plan = planPropagation(
      [
        app('everyone'),
        app('eng-only', { assign: { groups: ['eng'] } }),
        app('ops-only', { assign: { groups: ['ops'] } }),
        app('alice-only', { assign: { users: ['alice'] } }),
        app('bob-only', { assign: { users: ['bob'] } }),
        app('off', { enabled: false }),
      ],
      alice,
      T,
    );
    expect(plan.apps.map((p) => p.app.id).sort()).toEqual(['alice-only', 'eng-only', 'everyone']);
  });

  it('dues each app at base + delay, with jitter within ± jitter and never before base', () => {
    const apps = [app('later', { delay: 900_000, jitter: 30_000 }), app('now', { jitter: 5_000 })];
    for (const r of [0, 0.5, 0.999]) {
      const plan = planPropagation(apps, alice, T, () => r);
      const later = plan.apps.find((p) => p.app.id === 'later')?.dueAt ?? 0;
      expect(later - T).toBeGreaterThanOrEqual(870_000);
      expect(later - T).toBeLessThanOrEqual(930_000);
      expect(plan.apps.find((p) => p.app.id === 'now')?.dueAt).toBeGreaterThanOrEqual(T);
    }
  });

  it('orders a DAG: several waiting on one, one waiting on several, and not before its dependencies are due', () => {
    const plan = planPropagation(
      [
        app('vpn', { after: ['ldap', 'radius'] }),
        app('radius', { after: ['ldap'] }),
        app('wifi', { after: ['ldap'] }),
        app('ldap', { delay: 60_000 }),
      ],
      alice,
      T,
    );
    const order = plan.apps.map((p) => p.app.id);
    expect(order.indexOf('ldap')).toBeLessThan(order.indexOf('radius'));
    expect(order.indexOf('ldap')).toBeLessThan(order.indexOf('wifi'));
    expect(order.indexOf('radius')).toBeLessThan(order.indexOf('vpn'));
    expect(plan.apps.find((p) => p.app.id === 'vpn')).toMatchObject({ after: ['ldap', 'radius'], dueAt: T + 60_000 });
  });

  it('ignores a dependency the user is not assigned to', () => {
    const plan = planPropagation(
      [app('ops-ldap', { assign: { groups: ['ops'] } }), app('wiki', { after: ['ops-ldap'] })],
      alice,
      T,
    );
    expect(plan.apps).toEqual([expect.objectContaining({ after: [], dueAt: T })]);
  });
});
