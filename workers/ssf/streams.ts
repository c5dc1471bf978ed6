import type { AppConfig } from '../../src/config/types.js';
import { changeSets, userSubject } from '../../src/ssf/caep.js';
import { enqueueStreamSets, streamQueue } from '../../src/ssf/delivery.js';
import { opaqueSubject } from '../../src/ssf/set.js';
import { StreamStore } from '../../src/ssf/streams.js';
import type { EngineServices, Target } from '../../src/targets/adapter.js';
import { Vault } from '../../src/vault/vault.js';
import type { SsfSettings } from './index.js';

/**
 * The streams app: one configured `kind: ssf` app that stands for every stream receivers create
 * at run time. Its row says how many streams the change was queued for; each (stream, SET) is
 * then its own delayed job in the `ssf-streams` queue (src/ssf/delivery.ts), due at the change's
 * arrival plus the stream's receiver delay. Streams have no session registry entries of their
 * own, so `revoke` sends a user-wide session-revoked.
 */
export function streamsTarget(app: AppConfig<SsfSettings>, services: EngineServices, issuer: string): Target {
  const streams = app.settings.streams as NonNullable<SsfSettings['streams']>;
  const store = new StreamStore(
    services.redis,
    services.prefix,
    new Vault(services.redis, services.prefix, services.config.vault),
  );
  let queue: ReturnType<typeof streamQueue> | undefined;
  const jobs = () => {
    queue ??= streamQueue(services.redis, services.prefix);
    return queue;
  };
  return {
    async deliver(ctx) {
      const { event } = ctx;
      const all = streams.defaultSubjects === 'ALL';
      let queued = 0;
      const names: string[] = [];
      for (const stream of await store.list()) {
        if (stream.status === 'disabled') continue;
        if (!(await store.covers(stream.stream_id, event.user, issuer, all))) continue;
        const receiver = await store.receiver(stream.receiver);
        const user = event.user.email
          ? userSubject(app.settings.subject, event.user, issuer)
          : opaqueSubject(event.user.id);
        const sets = changeSets({
          event,
          action: ctx.action,
          scope: `stream:${stream.stream_id}`,
          user,
          sessions: [],
          userWide: ctx.action === 'revoke',
        }).filter((set) => stream.events_requested.includes(set.type));
        if (sets.length === 0) continue;
        const dueAt = Date.parse(event.receivedAt) + (receiver?.delay ?? 0);
        const added = await enqueueStreamSets(
          store,
          jobs(),
          stream.stream_id,
          sets.map(({ type, subject, payload, jti }) => ({ type, subject, payload, jti, txn: event.id })),
          dueAt,
        );
        // -1: disabled or deleted meanwhile; 0: a retry of this delivery, queued already.
        if (added < 0) continue;
        queued += sets.length;
        names.push(`${stream.receiver}/${stream.stream_id.slice(0, 8)}`);
      }
      if (names.length === 0) return { outcome: 'skipped', detail: 'no stream covers this user' };
      return { outcome: 'done', detail: `${queued} SET(s) queued for ${names.length} stream(s): ${names.join(', ')}` };
    },
    async probe() {
      const list = await store.list();
      return {
        ok: true,
        detail: `${list.length} stream(s): ${list.map((s) => `${s.receiver} ${s.status}`).join(', ') || 'none yet'}`,
      };
    },
    async close() {
      await queue?.close();
    },
  };
}
