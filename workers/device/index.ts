import { z } from 'zod';
import type { DeviceSettings } from '../../src/devices/store.js';
import type { AwaitedParty } from '../../src/status/store.js';
import type { TargetAdapter } from '../../src/targets/adapter.js';

const settings = z.strictObject({
  /** Bearer tokens agents enroll computers with (`POST /v1/devices`); list several to rotate. */
  enrollmentTokens: z
    .array(z.string().min(16, 'each enrollment token must be at least 16 characters'))
    .min(1, 'at least one enrollment token is required'),
}) satisfies z.ZodType<DeviceSettings>;

/**
 * `kind: device` — the user's computers catch up at their next login. A pulled kind: when the
 * app's delay has passed, each of the user's computers enrolled through this app (but the one the
 * change was made on) is asked to catch up, and the row is parked `awaiting` — holding no worker
 * and no lock — until every computer has answered through `POST /v1/devices/:id/pending/:eventId`.
 */
export const deviceAdapter: TargetAdapter<'device', DeviceSettings> = {
  kind: 'device',
  category: 'computer',
  actions: ['refresh'],
  defaultAction: 'refresh',
  // The computer asks the user for the old and the new password; Ripple never sends it one.
  needsCredential: false,
  honoursRetryAfter: false,
  concurrency: 20,
  settings: () => settings,
  // An agent's enrollment token says which app its computer belongs to: one token, one app.
  checkApps(apps) {
    const firstUse = new Map<string, string>();
    const problems: { file: string; key: string; reason: string }[] = [];
    for (const app of apps) {
      app.settings.enrollmentTokens.forEach((token, i) => {
        const other = firstUse.get(token);
        if (other && other !== app.id) {
          problems.push({
            file: app.file,
            key: `device.enrollmentTokens[${i}]`,
            reason: `also an enrollment token of app "${other}": a computer enrolled with it would belong to both (give each app its own)`,
          });
        } else firstUse.set(token, app.id);
      });
    }
    return problems;
  },
  create(app, services) {
    const { devices } = services;
    if (!devices) throw new Error('kind device needs the device store (EngineServices.devices)');
    return {
      async deliver({ event }) {
        const computers = await devices.forUser(app.id, event.user.username);
        if (computers.length === 0)
          return { outcome: 'skipped', detail: `no computer enrolled for ${event.user.username}` };
        // The computer the change was made on (its desktop app) is synced there already.
        const origin = computers.find((c) => c.id === event.originDevice);
        const others = computers.filter((c) => c !== origin);
        if (!origin && event.originDevice) {
          // Named by self-service after checking the device token; not one of this app's computers.
          services.log.debug({ eventId: event.id, app: app.id }, 'origin device is not enrolled in this app');
        }
        if (others.length === 0 && origin) return { outcome: 'done', detail: `changed on ${origin.hostname}` };
        const parties: AwaitedParty[] = [
          ...(origin
            ? [{ id: origin.id, label: origin.hostname, state: 'done' as const, note: `changed on ${origin.hostname}` }]
            : []),
          ...others.map((c) => ({ id: c.id, label: c.hostname, state: 'pending' as const })),
        ];
        const asked = await devices.askToCatchUp(app.id, event.id, event.user.username, parties);
        const names = others.filter((c) => asked.includes(c.id)).map((c) => c.hostname);
        if (names.length === 0) return { outcome: 'awaiting', detail: 'every computer has caught up' };
        return {
          outcome: 'awaiting',
          detail: `waiting for ${names.join(', ')} to catch up at the next login${origin ? ` (changed on ${origin.hostname})` : ''}`,
        };
      },
      async probe() {
        return {
          ok: true,
          detail: 'computers fetch their changes from Ripple (GET /v1/devices/:id/pending): nothing to reach',
        };
      },
    };
  },
};
