import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { sameUserKey } from '../events/event.js';
import type { AwaitedParty, StatusStore } from '../status/store.js';

/** The settings of a `kind: device` app that the device routes read. */
export interface DeviceSettings {
  /** Bearer tokens an agent enrolls a computer with; several while rotating. */
  enrollmentTokens: string[];
}

/** An enrolled computer. Its token is never stored, only its SHA-256. */
export interface Device {
  id: string;
  /** The `kind: device` app whose enrollment token enrolled it: that app's changes are its to catch up with. */
  app: string;
  /** As it was enrolled (compared as directories compare usernames). */
  username: string;
  hostname: string;
  enrolledAt: string;
}

/** One change a computer has not caught up with, as its agent sees it. */
export interface PendingItem {
  eventId: string;
  occurredAt: string;
  source: string;
  /** What the computer asks at its next login. */
  prompt: 'old-and-new-password';
}

/** The kind whose rows computers answer for. */
const KIND = 'device';

const sha256 = (s: string) => createHash('sha256').update(s).digest();
/** Compared against when the device is unknown, so an unknown id costs what a wrong token costs. */
const NO_DEVICE = sha256('no such device');

/**
 * Enrolled computers and what each must catch up with, in Redis:
 * `device:<id>` (hash: app, username, hostname, tokenHash, enrolledAt, and `pending`: the newest
 * change it was asked about) and, per app and user, `devices:<app>:<user>` (hostname, lowercased ->
 * device id), so one computer is one entry. Whether a computer still has to answer for a change
 * is its entry in the status store's answers of that change's row (`StatusStore.expectAnswers`).
 */
export class DeviceStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly status: StatusStore,
  ) {}

  // One hash tag for every computer: a change asks several at once, in one pipeline (Redis Cluster).
  private deviceKey(id: string): string {
    return `${this.prefix}:{devices}:device:${id}`;
  }
  private indexKey(app: string, username: string): string {
    return `${this.prefix}:{devices}:devices:${app}:${sameUserKey(username)}`;
  }

  /**
   * Enrolls a computer for a user and returns its id and a new token (shown once). The same
   * hostname again for the same user and app (hostnames compare without case) replaces the
   * token — the previous one stops working at once — and keeps the id and what the computer
   * still has to catch up with: a reinstalled agent goes on where the old one stopped.
   */
  async enroll(
    app: string,
    username: string,
    hostname: string,
  ): Promise<{ deviceId: string; token: string; replaced: boolean }> {
    const token = `rdt_${randomBytes(32).toString('base64url')}`;
    const fields = {
      app,
      username,
      hostname,
      tokenHash: sha256(token).toString('hex'),
      enrolledAt: new Date().toISOString(),
    };
    const index = this.indexKey(app, username);
    const hostKey = hostname.toLowerCase();
    for (;;) {
      const existing = await this.redis.hget(index, hostKey);
      if (existing) {
        await this.redis.hset(this.deviceKey(existing), fields);
        return { deviceId: existing, token, replaced: true };
      }
      const id = `dev_${randomBytes(16).toString('base64url')}`;
      await this.redis.hset(this.deviceKey(id), fields);
      if (await this.redis.hsetnx(index, hostKey, id)) return { deviceId: id, token, replaced: false };
      // Enrolled at the same moment by another request: that entry is the one; replace its token.
      await this.redis.del(this.deviceKey(id));
    }
  }

  /** The enrolled computer `deviceId`, if `token` is its token (compared in constant time). */
  async verify(deviceId: string, token: string): Promise<Device | undefined> {
    const all = await this.redis.hgetall(this.deviceKey(deviceId));
    const stored = all.tokenHash ? Buffer.from(all.tokenHash, 'hex') : NO_DEVICE;
    const match = stored.length === 32 && timingSafeEqual(sha256(token), stored);
    if (!match || !all.tokenHash) return undefined;
    return toDevice(deviceId, all);
  }

  async get(deviceId: string): Promise<Device | undefined> {
    const all = await this.redis.hgetall(this.deviceKey(deviceId));
    return all.tokenHash ? toDevice(deviceId, all) : undefined;
  }

  /** The user's computers enrolled through `app`, by hostname. */
  async forUser(app: string, username: string): Promise<Device[]> {
    const ids = Object.values(await this.redis.hgetall(this.indexKey(app, username)));
    const devices = await Promise.all(ids.map((id) => this.get(id)));
    return devices.filter((d): d is Device => d !== undefined).sort((a, b) => a.hostname.localeCompare(b.hostname));
  }

  /**
   * Asks `parties` to catch up with change `eventId` of `app` (parties already `done` stay so):
   * each computer still to answer gets it as its pending change, replacing an older one, since
   * only the newest change is asked about. Returns the ids of those still to answer.
   */
  async askToCatchUp(app: string, eventId: string, username: string, parties: AwaitedParty[]): Promise<string[]> {
    const pending = await this.status.expectAnswers(eventId, app, username, parties);
    if (pending.length > 0) {
      const batch = this.redis.pipeline();
      for (const id of pending) batch.hset(this.deviceKey(id), 'pending', eventId);
      await batch.exec();
    }
    return pending;
  }

  /**
   * What the computer has not caught up with: its newest change, while it has not answered for
   * it and no newer change has superseded it. At most one item, since a newer change replaces an
   * older one on every computer.
   */
  async pending(device: Device): Promise<PendingItem[]> {
    const eventId = await this.redis.hget(this.deviceKey(device.id), 'pending');
    if (!eventId) return [];
    const [answers, ev] = await Promise.all([
      this.status.answers(eventId, device.app, device.username),
      this.status.getEvent(eventId),
    ]);
    const row = ev?.rows[device.app];
    if (!ev || !row || answers[device.id]?.state !== 'pending') return [];
    if (row.state === 'superseded' || row.state === 'skipped') return [];
    return [{ eventId, occurredAt: ev.meta.occurredAt, source: ev.meta.source, prompt: 'old-and-new-password' }];
  }

  /**
   * For a user's view of one change ("what happens next"): per `kind: device` app of the change,
   * the hostnames that will ask for the old and the new password at their next login — those
   * still to answer once the app has acted, the user's computers other than the one the change
   * was made on before it has. Empty for an app that is finished. `{}` when the change is not
   * this user's.
   */
  async hostnamesToPrompt(username: string, eventId: string): Promise<Record<string, string[]>> {
    const ev = await this.status.getEvent(eventId);
    if (!ev || sameUserKey(ev.meta.user.username) !== sameUserKey(username)) return {};
    const out: Record<string, string[]> = {};
    for (const [app, row] of Object.entries(ev.rows)) {
      if (row.kind !== KIND) continue;
      if (row.state === 'done' || row.state === 'skipped' || row.state === 'superseded') {
        out[app] = [];
        continue;
      }
      const answers = Object.values(await this.status.answers(eventId, app, username));
      out[app] =
        answers.length > 0
          ? answers.filter((a) => a.state === 'pending').map((a) => a.label)
          : (await this.forUser(app, username)).filter((d) => d.id !== ev.meta.originDevice).map((d) => d.hostname);
      out[app].sort((a, b) => a.localeCompare(b));
    }
    return out;
  }
}

function toDevice(id: string, all: Record<string, string>): Device {
  return {
    id,
    app: all.app ?? '',
    username: all.username ?? '',
    hostname: all.hostname ?? '',
    enrolledAt: all.enrolledAt ?? '',
  };
}
