import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { LdapSettings } from '../../workers/ldap/index.js';
import { fieldIssues } from '../api/refusal.js';
import type { AppConfig } from '../config/types.js';
import { RippleError } from '../errors.js';
import { sameUserKey, username as usernameSchema } from '../events/event.js';
import { type IngestAnswer, submitEvent } from '../ingest/ingest.js';
import { REQUEST_REDIS_TIMEOUT_MS } from '../redis/connections.js';
import { wakeWaiters } from '../runtime/delivery.js';
import type { Engine } from '../runtime/engine.js';
import type { SelfServiceConfig } from './config.js';
import { Directory, type DirectoryUser } from './directory.js';
import { type Attempt, Lockout, usernameDigest } from './lockout.js';
import { Authenticators, type CodeCheck, OTP_FORMAT, SECRET_FORMAT } from './mfa.js';
import { StatusTokens } from './status-tokens.js';
import { userTimeline } from './timeline.js';
import type {
  ChangeAccepted,
  Client,
  PasswordChangeRequest,
  SelfService,
  SelfServiceRefusal,
  SignedIn,
} from './types.js';

/** What the directory row says: the user wrote it themselves, so Ripple does not write it again. */
export const DIRECTORY_DETAIL = 'changed by the user in self-service';

/** The fields of a password change, as the desktop-app API takes them (the portal fills the same). */
export const passwordChangeFields = z
  .strictObject({
    username: usernameSchema,
    currentPassword: z.string().min(1, 'is required').max(1024, 'at most 1024 characters'),
    newPassword: z.string().min(1, 'is required').max(1024, 'at most 1024 characters'),
    otp: z.string().regex(OTP_FORMAT, 'must be the 6-digit code of your authenticator app').optional(),
    deviceId: z.string().min(1).max(128).optional(),
    deviceToken: z.string().min(1).max(1024).optional(),
  })
  .superRefine((body, ctx) => {
    if ((body.deviceId === undefined) !== (body.deviceToken === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [body.deviceId === undefined ? 'deviceId' : 'deviceToken'],
        message: 'deviceId and deviceToken go together (an enrolled computer sends both)',
      });
    }
  });

export interface SelfServiceOptions {
  /**
   * Whether `token` is the device token of enrolled computer `deviceId`, which belongs to
   * `username` (kind device). Defaults to asking `engine.services.devices` (the device kind's store).
   */
  verifyDevice?: (deviceId: string, token: string, username: string) => Promise<boolean>;
  /** How long the 202 waits for the planner to write the rows it shows (else it shows the plan). */
  planWaitMs?: number;
}

/** Who a log line is about: the directory's name for an authenticated user, else a digest of the typed name. */
type Who = { username: string } | { usernameDigest: string };
const known = (username: string): Who => ({ username });
const typed = (username: unknown): Who => ({ usernameDigest: usernameDigest(String(username).slice(0, 256)) });

/**
 * Every refused sign-in or change is answered no sooner than this after the request began (plus
 * up to REFUSAL_JITTER_MS), so that an unknown user, a wrong password (for which slapd's ppolicy
 * writes pwdFailureTime) and a locked-out user cannot be told apart by timing.
 */
export const REFUSAL_FLOOR_MS = 150;
const REFUSAL_JITTER_MS = 20;

/** How long a change waits for a delivery to the directory already in flight for the same user. */
const LOCK_WAIT_MS = 5_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const refuse = (
  status: SelfServiceRefusal['status'],
  code: SelfServiceRefusal['code'],
  message: string,
  extra: { field?: string; retryAfter?: number } = {},
): SelfServiceRefusal => ({ refused: true, status, code, message, ...extra });

const INVALID_CREDENTIALS = refuse(401, 'invalid_credentials', 'The username or password is incorrect.');
const MFA_REQUIRED = refuse(401, 'mfa_required', 'Enter the code from your authenticator app.', { field: 'otp' });
const MFA_NOT_ENROLLED = refuse(
  401,
  'mfa_not_enrolled',
  'Your organisation requires an authenticator app to change your password: set one up in the portal (Security → Authenticator app) first.',
);

function codeRefusal(check: Exclude<CodeCheck, 'ok'>): SelfServiceRefusal {
  return refuse(
    401,
    'mfa_invalid',
    check === 'replayed'
      ? 'This code was already used. Wait for the next code in your authenticator app.'
      : 'The code is not valid. Enter the current code from your authenticator app.',
    { field: 'otp' },
  );
}

function tooMany(retryAfter: number): SelfServiceRefusal {
  const minutes = Math.ceil(retryAfter / 60);
  return refuse(
    429,
    'too_many_attempts',
    `Too many failed attempts. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`,
    { retryAfter },
  );
}

function invalid(error: z.ZodError): SelfServiceRefusal {
  const issues = fieldIssues(error);
  const first = issues[0] ?? { field: '(body)', message: 'is invalid' };
  return refuse(400, 'invalid_request', issues.map((i) => `${i.field}: ${i.message}`).join('; '), {
    field: first.field,
  });
}

/**
 * The self-service core behind the desktop-app API and the portal: sign-in and password change
 * against the directory AS THE USER, TOTP authenticators, lockout, and "what happens next".
 * A change is recorded (and propagated to every other app) only once the directory took it.
 */
export function createSelfService(engine: Engine, opts: SelfServiceOptions = {}): SelfService {
  const config = engine.config.service.selfService as SelfServiceConfig | undefined;
  if (!config) throw new RippleError('SELF_SERVICE_OFF', 'selfService is not configured in ripple.yaml');
  const app = engine.apps.get(config.directory);
  if (app?.kind !== 'ldap') {
    // The loader refuses this; a hand-built engine may not have gone through it.
    throw new RippleError('SELF_SERVICE_OFF', `selfService.directory "${config.directory}" is not an enabled ldap app`);
  }
  const directory = new Directory(app as AppConfig<LdapSettings>, {
    redis: engine.redis,
    prefix: engine.prefix,
    warn: (err, dn) =>
      engine.log.warn(
        { err, dn },
        "could not record this self-service password write as Ripple's own (an ldap-watch source may report it)",
      ),
  });
  const lockout = new Lockout(engine.redis, engine.prefix, config.lockout);
  const mfa = new Authenticators(engine.redis, engine.prefix, engine.vault, config.mfa.issuer);
  const tokens = new StatusTokens(engine.redis, engine.prefix, config.session.ttl);
  const devices = engine.services.devices;
  const verifyDevice =
    opts.verifyDevice ??
    (devices
      ? async (deviceId: string, token: string, username: string) => {
          const device = await devices.verify(deviceId, token);
          return device !== undefined && sameUserKey(device.username) === sameUserKey(username);
        }
      : undefined);
  const planWaitMs = opts.planWaitMs ?? 2_000;
  const log = engine.log.child({ component: 'self-service' });

  /**
   * Every refusal is logged (never a password or code), with who asked and from where. Who: the
   * directory's name once it authenticated the user, else only a digest of what was typed (it
   * may be a password typed into the username field).
   */
  const refused = (
    what: string,
    who: Who,
    client: Client,
    refusal: SelfServiceRefusal,
    extra: object = {},
  ): SelfServiceRefusal => {
    log.warn(
      { ...who, client: client.address, refusal: refusal.code, status: refusal.status, ...extra },
      `self-service ${what} refused: ${refusal.code}`,
    );
    return refusal;
  };

  /** The TOTP step of a request by a user whose password was right: a refusal, or undefined to go on. */
  const checkCode = async (
    username: string,
    otp: string | undefined,
    attempt: { succeed(): Promise<void> },
  ): Promise<SelfServiceRefusal | undefined> => {
    if (otp === undefined) {
      // Not a guess: the app asks for the code now.
      await attempt.succeed();
      return MFA_REQUIRED;
    }
    const check = await mfa.check(username, otp);
    return check === 'ok' ? undefined : codeRefusal(check);
  };

  /** Records the change for every other app; the same id makes a repeat after a 503 harmless. */
  const record = async (
    input: PasswordChangeRequest,
    user: DirectoryUser,
    originDevice: string | undefined,
  ): Promise<string> => {
    const id = `ss_${randomUUID()}`;
    const occurredAt = new Date().toISOString();
    const event = {
      id,
      occurredAt,
      source: input.source,
      initiator: 'user' as const,
      ...(originDevice ? { originDevice } : {}),
      user: { id: user.id, username: user.username, ...(user.email ? { email: user.email } : {}), groups: user.groups },
      password: input.newPassword,
      bodyHash: createHash('sha256')
        .update(JSON.stringify([id, occurredAt, input.source, user.username, originDevice ?? '']))
        .digest('hex'),
      alreadyDone: [{ app: config.directory, detail: DIRECTORY_DETAIL }],
    };
    let answer: IngestAnswer | undefined;
    let failure: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        answer = await submitEvent(engine, event, new Date(), undefined, performance.now() + REQUEST_REDIS_TIMEOUT_MS);
        if (answer.status === 202) return id;
      } catch (err) {
        failure = err;
      }
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
    log.error(
      { eventId: id, username: user.username, answer: answer?.body, err: failure },
      'self-service: the directory took the new password but Ripple could not record the change for the other apps',
    );
    throw new RippleError(
      'SELF_SERVICE_NOT_RECORDED',
      `your password was changed in the directory, but Ripple could not record the change for your other apps (${String(answer?.body.message ?? failure)}); tell your administrator (event ${id})`,
    );
  };

  /** Whether the planner has written the event's rows, waiting a moment for it. */
  const planned = async (eventId: string): Promise<boolean> => {
    const until = performance.now() + planWaitMs;
    for (;;) {
      if ((await engine.store.getEvent(eventId))?.meta.planned) return true;
      if (performance.now() >= until) return false;
      await sleep(25);
    }
  };

  /**
   * The directory app's user+app lock (the one its deliveries take), keyed by the directory's
   * own name for the user (never the typed spelling), taken once the directory has authenticated
   * them and held until the change is planned. A delivery of an older change still in
   * flight is waited for (it must not land after the user's); one that would start meanwhile
   * waits, and once this change is planned it finds itself superseded. Undefined when busy.
   */
  const lockTtl = directory.longestMs + 5_000;
  const holdDirectory = async (username: string): Promise<{ token: string; waited: boolean } | undefined> => {
    const key = engine.store.lockKey(config.directory, username);
    const token = `self-service:${randomUUID()}#0`;
    const until = performance.now() + LOCK_WAIT_MS;
    for (let waited = false; ; waited = true) {
      if ((await engine.redis.set(key, token, 'PX', lockTtl, 'NX')) === 'OK') return { token, waited };
      if (performance.now() >= until) return undefined;
      await sleep(50);
    }
  };
  const letGo = async (username: string, token: string, eventId = '-') => {
    const out = await engine.store.finish({
      eventId,
      app: config.directory,
      username,
      token,
      attempt: 0,
      lock: 'release',
    });
    await wakeWaiters(engine, app.kind, out.waiters);
  };

  /** The directory lock a change holds: taken once the directory named the user, let go in the end. */
  interface Held {
    username: string;
    token: string;
  }

  /** The change itself: the directory lock is taken once the directory has named the user. */
  const changeAsUser = async (
    input: PasswordChangeRequest,
    attempt: Attempt,
    held: (lock: Held) => void,
    recorded: (eventId: string) => void,
  ): Promise<ChangeAccepted | SelfServiceRefusal> => {
    const { client } = input;
    let originDevice: string | undefined;
    const written = await directory.changePassword(
      input.username,
      input.currentPassword,
      input.newPassword,
      async (user, stillBinds): Promise<SelfServiceRefusal | undefined> => {
        // From here on the user is the directory's entry (user.username), never the typed spelling.
        const lock = await holdDirectory(user.username);
        if (lock === undefined) {
          throw new RippleError(
            'SELF_SERVICE_BUSY',
            'another change of your password is being applied to the directory right now; try again in a minute',
          );
        }
        held({ username: user.username, token: lock.token });
        // A delivery it waited for (an admin reset) may have changed the password: then it is wrong now.
        if (lock.waited && !(await stillBinds())) return INVALID_CREDENTIALS;
        // Only once the password is right: no code check, and no hint, for a stranger.
        if (input.deviceId !== undefined && input.deviceToken !== undefined) {
          const ok = verifyDevice ? await verifyDevice(input.deviceId, input.deviceToken, user.username) : false;
          if (!ok) {
            return refuse(401, 'invalid_credentials', 'This computer is not enrolled for your account.', {
              field: 'deviceToken',
            });
          }
          originDevice = input.deviceId;
        }
        if (!(await mfa.enrolled(user.username))) {
          if (!config.mfa.enforce) return undefined;
          await attempt.succeed();
          return MFA_NOT_ENROLLED;
        }
        if (input.mfaVerified === true) return undefined;
        return checkCode(user.username, input.otp, attempt);
      },
      LOCK_WAIT_MS,
    );
    const source = { source: input.source };
    if (written.outcome === 'invalid_credentials') {
      return refused('password change', typed(input.username), client, INVALID_CREDENTIALS, source);
    }
    if (written.outcome === 'stopped') {
      return refused('password change', known(written.user.username), client, written.why, source);
    }
    if (written.outcome === 'policy') {
      await attempt.succeed();
      return refused(
        'password change',
        known(written.user.username),
        client,
        refuse(422, 'password_policy', written.reason, { field: 'newPassword' }),
        { ...source, reason: written.reason },
      );
    }
    // The directory has the new password: from here on, nothing may answer as if it had not.
    const { user } = written;
    const quietly = <T>(what: string, step: Promise<T>, fallback: T): Promise<T> =>
      step.catch((err: unknown) => {
        log.warn({ err, username: user.username }, `self-service: ${what} failed after the directory took the change`);
        return fallback;
      });
    await quietly('giving back the lockout attempt', attempt.succeed(), undefined);
    const eventId = await record(input, user, originDevice);
    recorded(eventId);
    // Without a token the user cannot follow the change; it is recorded and propagates anyway.
    const statusToken = await quietly('issuing the status token', tokens.issue(user.username, eventId), '');
    log.info(
      { eventId, username: user.username, client: client.address, source: input.source, originDevice },
      'self-service password change: written to the directory as the user, recorded for the other apps',
    );
    await quietly('waiting for the plan', planned(eventId), false);
    const timeline = await quietly('reading the plan', userTimeline(engine, eventId, user.username), undefined);
    return { eventId, apps: timeline?.apps ?? [], statusToken };
  };

  /** Answers a refusal no sooner than the common floor after `started` (see REFUSAL_FLOOR_MS). */
  const padded = async <T extends object>(started: number, outcome: T): Promise<T> => {
    if ('refused' in outcome && outcome.refused === true) {
      const due = started + REFUSAL_FLOOR_MS + Math.random() * REFUSAL_JITTER_MS;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
    }
    return outcome;
  };

  const mfaApi: SelfService['mfa'] = {
    enrolled: (username) => mfa.enrolled(username),
    async begin(username) {
      return mfa.newSecret(username);
    },
    async confirm(username, secret, code, client) {
      if (!SECRET_FORMAT.test(secret)) {
        return refused(
          'authenticator enrolment',
          known(username),
          client,
          refuse(400, 'invalid_request', 'secret: not a secret Ripple handed out', { field: 'secret' }),
        );
      }
      if (await mfa.enrolled(username)) {
        return refused(
          'authenticator enrolment',
          known(username),
          client,
          refuse(400, 'mfa_already_enrolled', 'An authenticator app is already set up; turn it off first.'),
        );
      }
      const attempt = await lockout.begin(username, client.address);
      if ('retryAfter' in attempt)
        return refused('authenticator enrolment', known(username), client, tooMany(attempt.retryAfter));
      const check = await mfa.check(username, code, secret);
      if (check !== 'ok') return refused('authenticator enrolment', known(username), client, codeRefusal(check));
      await attempt.succeed();
      await mfa.enrol(username, secret);
      log.info({ username, client: client.address }, 'self-service: authenticator app enrolled');
      return true;
    },
    async disable(username, code, client) {
      if (!(await mfa.enrolled(username))) {
        return refused(
          'authenticator removal',
          known(username),
          client,
          refuse(400, 'mfa_not_enrolled', 'No authenticator app is set up.'),
        );
      }
      const attempt = await lockout.begin(username, client.address);
      if ('retryAfter' in attempt)
        return refused('authenticator removal', known(username), client, tooMany(attempt.retryAfter));
      const check = await mfa.check(username, code);
      if (check !== 'ok') return refused('authenticator removal', known(username), client, codeRefusal(check));
      await attempt.succeed();
      await mfa.remove(username);
      log.info({ username, client: client.address }, 'self-service: authenticator app turned off');
      return true;
    },
  };
  const signIn: SelfService['signIn'] = async (input) => {
    const { username, password, otp, client } = input;
    if (!usernameSchema.safeParse(username).success || password.length === 0 || password.length > 1024) {
      return refused('sign-in', typed(username), client, INVALID_CREDENTIALS);
    }
    const attempt = await lockout.begin(username, client.address);
    if ('retryAfter' in attempt) return refused('sign-in', typed(username), client, tooMany(attempt.retryAfter));
    const user = await directory.authenticate(username, password).catch(async (err: unknown) => {
      await attempt.succeed().catch(() => {});
      throw err;
    });
    if (!user) return refused('sign-in', typed(username), client, INVALID_CREDENTIALS);
    // From here on the user is the directory's entry (user.username), never the typed spelling.
    const hasMfa = await mfa.enrolled(user.username);
    if (hasMfa) {
      const stop = await checkCode(user.username, otp, attempt);
      if (stop) return refused('sign-in', known(user.username), client, stop);
    }
    await attempt.succeed();
    log.info({ username: user.username, client: client.address, mfa: hasMfa }, 'self-service sign-in');
    return { username: user.username, mfa: hasMfa } satisfies SignedIn;
  };

  const changePassword: SelfService['changePassword'] = async (input) => {
    const { client } = input;
    const parsed = passwordChangeFields.safeParse({
      username: input.username,
      currentPassword: input.currentPassword,
      newPassword: input.newPassword,
      otp: input.otp,
      deviceId: input.deviceId,
      deviceToken: input.deviceToken,
    });
    if (!parsed.success) return refused('password change', typed(input.username), client, invalid(parsed.error));
    const attempt = await lockout.begin(input.username, client.address);
    if ('retryAfter' in attempt) {
      return refused('password change', typed(input.username), client, tooMany(attempt.retryAfter));
    }
    let lock: Held | undefined;
    let eventId: string | undefined;
    try {
      return await changeAsUser(
        input,
        attempt,
        (held) => {
          lock = held;
        },
        (id) => {
          eventId = id;
        },
      );
    } catch (err) {
      // The directory or Redis failed, or the directory lock is busy: no guess was judged, so it does not count.
      await attempt.succeed().catch(() => {});
      throw err;
    } finally {
      // Once planned, an older change finds itself superseded: let its delivery go. Not yet
      // planned (the planner is slow or down): the lock stays until its TTL, so none lands first.
      const settled = eventId === undefined || (await engine.store.getEvent(eventId))?.meta.planned === true;
      // Redis failing now must not hide the answer: the lock then ends with its TTL.
      if (lock && settled)
        await letGo(lock.username, lock.token, eventId).catch((err: unknown) =>
          log.warn({ err }, 'could not let go of the directory lock; it ends with its TTL'),
        );
    }
  };

  const service: SelfService = {
    async signIn(input) {
      const started = performance.now();
      return padded(started, await signIn(input));
    },

    async changePassword(input) {
      const started = performance.now();
      return padded(started, await changePassword(input));
    },

    async latestChange(username) {
      const { latest } = await engine.store.latestForUser(username);
      const event = latest === undefined ? undefined : await engine.store.getEvent(latest);
      return event ? { eventId: latest as string, occurredAt: event.meta.occurredAt } : undefined;
    },

    timeline: (eventId, username) => userTimeline(engine, eventId, username),

    statusTokenUser: (token, eventId) => tokens.user(token, eventId),

    mfa: mfaApi,
  };

  return service;
}
