import { readFileSync } from 'node:fs';
import fastifyCookie from '@fastify/cookie';
import fastifyFormbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import QRCode from 'qrcode';
import { refusal } from '../api/refusal.js';
import { DeliveryError } from '../errors.js';
import type { Engine } from '../runtime/engine.js';
import type { SelfServiceConfig } from '../selfservice/config.js';
import { unavailable } from '../selfservice/routes.js';
import type { Client, SelfService, SelfServiceRefusal } from '../selfservice/types.js';
import type { Html } from './html.js';
import { type LoadedSession, type PortalSession, PortalSessions } from './session.js';
import {
  authenticatorPage,
  changesPage,
  codePage,
  type FieldErrors,
  messagePage,
  type PageContext,
  passwordPage,
  securityPage,
  signInPage,
  timelineList,
} from './templates.js';

export interface PortalOptions {
  selfService: SelfService;
  sessions: PortalSessions;
  /** Shown in the header and titles (the `selfService.mfa.issuer`). */
  product: string;
  /** `selfService.mfa.enforce`: the security page says the authenticator is required. */
  enforceMfa: boolean;
  /** Ripple's public URL (`issuer`): an https one makes the cookie Secure and `__Host-`. */
  issuer?: string | undefined;
}

/** The portal's options from the engine: its Redis, vault and `selfService` settings. */
export function portalOptions(engine: Engine, selfService: SelfService): PortalOptions {
  const config = engine.config.service.selfService as SelfServiceConfig;
  return {
    selfService,
    sessions: new PortalSessions(engine.redis, engine.prefix, engine.vault, config.session.ttl),
    product: config.mfa.issuer,
    enforceMfa: config.mfa.enforce,
    issuer: engine.config.service.issuer,
  };
}

/** The headers of every portal response: nothing from elsewhere runs, frames or receives a referrer. */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const ASSETS: Record<string, string> = {
  'portal.css': 'text/css; charset=utf-8',
  'portal.js': 'text/javascript; charset=utf-8',
};

const DIRECTORY_DOWN = 'Signing in is not possible right now (the directory does not answer). Try again in a moment.';

/** Undefined for a directory that failed (unreachable, timed out) rather than answered; rethrows anything else. */
function directoryDown(err: unknown): undefined {
  if (err instanceof DeliveryError) return undefined;
  throw err;
}

/** How long a Save waits for another password change of the same session (a double click) to end. */
const CHANGE_WAIT_MS = 30_000;

/** Changes this session may watch: the latest few it made. */
const WATCHED_EVENTS = 10;

/**
 * The user portal (`/portal/`): sign-in (with the authenticator code step), Reset Password with
 * "What happens next", and the authenticator app. Server-rendered; every form carries the
 * session's CSRF token and is refused when it comes from another site.
 */
export async function portalRoutes(app: FastifyInstance, opts: PortalOptions): Promise<void> {
  const { selfService, sessions, product } = opts;
  const secure = opts.issuer?.startsWith('https:') ?? false;
  // `__Host-` makes the browser refuse the cookie unless Secure, Path=/ and host-only.
  const cookieName = secure ? '__Host-ripple-portal' : 'ripple-portal';
  const cookiePath = secure ? '/' : '/portal';
  const issuerOrigin = opts.issuer ? new URL(opts.issuer).origin : undefined;
  const assets = new Map(
    Object.entries(ASSETS).map(([name, type]) => [
      name,
      { type, body: readFileSync(new URL(`./assets/${name}`, import.meta.url)) },
    ]),
  );

  await app.register(fastifyCookie);
  await app.register(fastifyFormbody, { bodyLimit: 16_384 });

  app.addHook('onRequest', async (_req, reply) => {
    reply.headers(SECURITY_HEADERS);
    reply.header('cache-control', 'no-store');
  });

  const client = (req: FastifyRequest): Client => ({ address: req.ip });
  const setCookie = (reply: FastifyReply, session: LoadedSession) =>
    reply.setCookie(cookieName, session.id, { path: cookiePath, httpOnly: true, sameSite: 'strict', secure });
  const context = (session: LoadedSession): PageContext => ({
    product,
    csrf: session.data.csrf,
    username: session.data.stage === 'signed-in' ? session.data.username : undefined,
    flash: session.data.flash,
  });
  const send = (reply: FastifyReply, page: Html, status = 200) =>
    reply.code(status).type('text/html; charset=utf-8').send(page.text);
  const signedIn = (s: LoadedSession | undefined): s is LoadedSession & { data: { username: string } } =>
    s?.data.stage === 'signed-in' && typeof s.data.username === 'string';

  /**
   * Whether a signed-in session holds a password that no longer works: the user's password was
   * changed (from any input) after this session signed in, and not by this session (whose own
   * change is in `events`, or still being recorded while its change lock is held).
   */
  async function outdated(session: LoadedSession & { data: { username: string } }): Promise<boolean> {
    const latest = await selfService.latestChange(session.data.username);
    if (!latest || (session.data.events ?? []).includes(latest.eventId)) return false;
    if (Date.parse(latest.occurredAt) <= (session.data.signedInAt ?? 0)) return false;
    if (await sessions.isChanging(session.id)) return false;
    // This request read the session before this session's own change may have finished (another
    // tab's Save): its change lock is free now, so a fresh read holds that change if it was ours.
    const fresh = await sessions.load(session.id);
    return !(fresh?.data.events ?? []).includes(latest.eventId);
  }

  /** The browser's session; a signed-in one that a later password change outdated is ended (undefined). */
  async function load(req: FastifyRequest): Promise<LoadedSession | undefined> {
    const session = await sessions.load(req.cookies[cookieName]);
    if (!signedIn(session) || !(await outdated(session))) return session;
    req.log.info(
      { username: session.data.username, client: req.ip },
      'portal session ended: the password was changed after it signed in',
    );
    await sessions.destroy(session.id);
    return undefined;
  }

  /** The browser's session, or a new anonymous one (so the sign-in form has a token too). */
  async function sessionFor(req: FastifyRequest, reply: FastifyReply): Promise<LoadedSession> {
    const found = await load(req);
    if (found) return found;
    const created = await sessions.create();
    setCookie(reply, created);
    return created;
  }

  /** Shows a page and drops the one-time message it carried. */
  async function show(reply: FastifyReply, session: LoadedSession, page: (ctx: PageContext) => Html, status = 200) {
    const ctx = context(session);
    if (session.data.flash !== undefined) delete session.data.flash;
    await sessions.save(session);
    return send(reply, page(ctx), status);
  }

  async function redirect(reply: FastifyReply, to: string) {
    return reply.code(303).header('location', to).send();
  }

  /** A signed-in page: anyone else goes to the sign-in page. */
  async function requireUser(req: FastifyRequest, reply: FastifyReply) {
    const session = await load(req);
    if (signedIn(session)) return session;
    const fresh =
      session ?? (await sessions.create({ stage: 'anonymous', flash: 'Your session ended. Sign in again.' }));
    if (!session) setCookie(reply, fresh);
    await redirect(reply, '/portal/');
    return undefined;
  }

  /**
   * Why a form post is refused as cross-site: a browser's own `Sec-Fetch-Site` and `Origin`
   * (when sent) must say this site, and the body must carry this session's token.
   */
  function crossSite(req: FastifyRequest, session: LoadedSession | undefined): string | undefined {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site is ${site}`;
    const origin = req.headers.origin;
    // With Referrer-Policy no-referrer a browser sends `Origin: null` on its own form posts, so
    // null decides nothing (a sandboxed frame elsewhere is caught by Sec-Fetch-Site and the token).
    if (origin !== undefined && origin !== 'null') {
      // With an issuer, users reach the portal there (a TLS proxy in front makes req.protocol http).
      const own = issuerOrigin ?? `${req.protocol}://${req.headers.host ?? ''}`;
      if (origin !== own) return `Origin ${origin} is not this site`;
    }
    if (!session) return 'no session';
    const token = (req.body as Record<string, unknown> | undefined)?._csrf;
    if (!PortalSessions.csrfMatches(session, token)) return token === undefined ? 'no form token' : 'wrong form token';
    return undefined;
  }

  /** Loads the session of a form post and checks it came from this site; refuses (403) otherwise. */
  async function formSession(req: FastifyRequest, reply: FastifyReply): Promise<LoadedSession | undefined> {
    const session = await load(req);
    const why = crossSite(req, session);
    if (!why) return session;
    req.log.warn({ url: req.url, reason: why, client: req.ip }, 'portal form refused as cross-site');
    const ctx: PageContext = { product, csrf: session?.data.csrf ?? '' };
    await send(
      reply,
      messagePage(
        ctx,
        'This form could not be accepted',
        'It expired, or it was sent from another site. Nothing was changed. Open the portal and try again.',
        { href: '/portal/', text: 'Open the portal' },
      ),
      403,
    );
    return undefined;
  }

  const field = (body: unknown, name: string): string => {
    const value = (body as Record<string, unknown> | undefined)?.[name];
    return typeof value === 'string' ? value : '';
  };

  /** A refusal of the self-service core as the errors beside the fields. */
  function errorsOf(r: SelfServiceRefusal, reply: FastifyReply): FieldErrors {
    switch (r.code) {
      case 'too_many_attempts': {
        const seconds = Math.max(1, Math.ceil(r.retryAfter ?? 60));
        reply.header('retry-after', String(seconds));
        const wait = seconds < 90 ? `${seconds} seconds` : `${Math.ceil(seconds / 60)} minutes`;
        return { form: `Too many attempts. For your security, wait ${wait} and try again.` };
      }
      case 'mfa_required':
        // Only when this session never checked a code (the authenticator was set up elsewhere since).
        return { form: 'For your security, sign out and sign in again with your authenticator code first.' };
      default:
        // The core's words (the desktop app shows the same), or the directory's own for
        // password_policy, beside the field at fault.
        return { [r.field ?? 'form']: r.message };
    }
  }

  app.get('/portal', (_req, reply) => redirect(reply, '/portal/'));

  app.get<{ Params: { name: string } }>('/portal/assets/:name', async (req, reply) => {
    const asset = assets.get(req.params.name);
    if (!asset) return reply.code(404).send(refusal('not_found', `no portal asset ${req.params.name}`));
    return reply.header('cache-control', 'no-cache').type(asset.type).send(asset.body);
  });

  app.get('/portal/', async (req, reply) => {
    const session = await sessionFor(req, reply);
    if (signedIn(session)) return redirect(reply, '/portal/security');
    if (session.data.stage === 'code' && session.data.username) {
      const username = session.data.username;
      return show(reply, session, (ctx) => codePage(ctx, { username }));
    }
    return show(reply, session, (ctx) => signInPage(ctx));
  });

  const formOptions = { bodyLimit: 16_384 };

  app.post('/portal/sign-in', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    const username = field(req.body, 'username');
    const password = field(req.body, 'password');
    const missing: FieldErrors = {};
    if (!username) missing.username = 'Enter your username.';
    if (!password) missing.password = 'Enter your password.';
    if (missing.username || missing.password) {
      return show(reply, session, (ctx) => signInPage(ctx, { username, errors: missing }), 400);
    }
    const result = await selfService.signIn({ username, password, client: client(req) }).catch(directoryDown);
    if (!result) {
      const errors = { form: DIRECTORY_DOWN };
      return show(reply, session, (ctx) => signInPage(ctx, { username, errors }), 503);
    }
    if (result.refused && result.code === 'mfa_required') {
      // Right password, code still to come: the password waits sealed in a fresh session.
      const next = await sessions.rotate(session, { stage: 'code', username });
      sessions.seal(next, 'password', password);
      await sessions.save(next);
      setCookie(reply, next);
      return redirect(reply, '/portal/');
    }
    if (result.refused) {
      const errors = errorsOf(result, reply);
      return show(reply, session, (ctx) => signInPage(ctx, { username, errors }), result.status);
    }
    return completeSignIn(reply, session, result.username, result.mfa, password);
  });

  async function completeSignIn(
    reply: FastifyReply,
    session: LoadedSession,
    username: string,
    mfa: boolean,
    password: string,
  ) {
    const data: Omit<PortalSession, 'csrf'> = {
      stage: 'signed-in',
      username,
      mfa,
      mfaVerified: mfa,
      signedInAt: Date.now(),
    };
    const next = await sessions.rotate(session, data);
    sessions.seal(next, 'password', password);
    await sessions.save(next);
    setCookie(reply, next);
    return redirect(reply, '/portal/security');
  }

  app.post('/portal/sign-in/code', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    const username = session.data.username;
    const password = sessions.open(session, 'password');
    if (session.data.stage !== 'code' || !username || password === undefined) return redirect(reply, '/portal/');
    const otp = field(req.body, 'otp').replace(/\s/g, '');
    if (!otp) {
      return show(reply, session, (ctx) => codePage(ctx, { username, errors: { otp: 'Enter the code.' } }), 400);
    }
    const result = await selfService.signIn({ username, password, otp, client: client(req) }).catch(directoryDown);
    if (!result) {
      return show(reply, session, (ctx) => codePage(ctx, { username, errors: { form: DIRECTORY_DOWN } }), 503);
    }
    if (result.refused) {
      const errors = errorsOf(result, reply);
      if (result.code === 'invalid_credentials') {
        // The password changed since the first step: start over.
        await sessions.destroy(session.id);
        const fresh = await sessions.create({ stage: 'anonymous', flash: errors.form });
        setCookie(reply, fresh);
        return redirect(reply, '/portal/');
      }
      return show(reply, session, (ctx) => codePage(ctx, { username, errors }), result.status);
    }
    return completeSignIn(reply, session, result.username, true, password);
  });

  app.post('/portal/sign-out', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    await sessions.destroy(session.id);
    reply.clearCookie(cookieName, { path: cookiePath, httpOnly: true, sameSite: 'strict', secure });
    return redirect(reply, '/portal/');
  });

  app.get('/portal/security', async (req, reply) => {
    const session = await requireUser(req, reply);
    if (!session) return;
    session.data.mfa = await selfService.mfa.enrolled(session.data.username);
    const mfa = session.data.mfa;
    return show(reply, session, (ctx) => securityPage(ctx, { mfa, enforce: opts.enforceMfa }));
  });

  app.get('/portal/security/password', async (req, reply) => {
    const session = await requireUser(req, reply);
    if (!session) return;
    return show(reply, session, (ctx) => passwordPage(ctx));
  });

  app.post('/portal/security/password', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    if (!signedIn(session)) return redirect(reply, '/portal/');
    const newPassword = field(req.body, 'newPassword');
    const confirm = field(req.body, 'confirmPassword');
    const errors: FieldErrors = {};
    if (!newPassword) errors.newPassword = 'Enter a new password.';
    else if (confirm !== newPassword) errors.confirmPassword = 'This is not the same as the new password.';
    if (errors.newPassword || errors.confirmPassword) {
      return show(reply, session, (ctx) => passwordPage(ctx, { errors }), 400);
    }
    // One change at a time per session: a second Save (a double click, another tab) waits for
    // the first and then starts from the session as the first left it.
    const done = await sessions.changing(session, CHANGE_WAIT_MS, () => changeOnce(req, reply, newPassword));
    if (done === undefined) {
      return show(
        reply,
        session,
        (ctx) =>
          messagePage(
            ctx,
            'Nothing was changed',
            'Another change of your password is still being saved. Try again in a moment.',
          ),
        503,
      );
    }
    return done;
  });

  /** The password change of one Save, under the session's change lock, from the session as it is now. */
  async function changeOnce(req: FastifyRequest, reply: FastifyReply, newPassword: string) {
    const session = await load(req);
    if (!signedIn(session)) return redirect(reply, '/portal/');
    const currentPassword = sessions.open(session, 'password');
    if (currentPassword === undefined) return signOutWith(reply, session, 'Sign in again to change your password.');
    const last = session.data.events?.[0];
    if (currentPassword === newPassword && last !== undefined) {
      // The same Save again (a double click): this session already made this change; show it.
      return redirect(reply, `/portal/changes/${encodeURIComponent(last)}`);
    }
    let result: Awaited<ReturnType<SelfService['changePassword']>>;
    try {
      result = await selfService.changePassword({
        username: session.data.username,
        currentPassword,
        newPassword,
        source: 'user-portal',
        mfaVerified: session.data.mfaVerified === true,
        client: client(req),
      });
    } catch (err) {
      // The directory or Ripple failed (not refused): the desktop API's words, as a page.
      const answer = unavailable(err);
      if (!answer) throw err;
      req.log.error({ err, username: session.data.username }, 'portal password change failed');
      // Not recorded means the directory has the new password: the next change starts from it.
      if (answer.error === 'not_recorded') sessions.seal(session, 'password', newPassword);
      const title = answer.error === 'not_recorded' ? 'Your password was only partly changed' : 'Nothing was changed';
      return show(reply, session, (ctx) => messagePage(ctx, title, answer.message), 503);
    }
    if (result.refused) {
      if (result.code === 'invalid_credentials') {
        return signOutWith(reply, session, 'Your password was changed somewhere else. Sign in with your new password.');
      }
      const refused = errorsOf(result, reply);
      return show(reply, session, (ctx) => passwordPage(ctx, { errors: refused }), result.status);
    }
    // The new password is now the one the next change starts from.
    sessions.seal(session, 'password', newPassword);
    session.data.events = [result.eventId, ...(session.data.events ?? [])].slice(0, WATCHED_EVENTS);
    await sessions.save(session);
    return redirect(reply, `/portal/changes/${encodeURIComponent(result.eventId)}`);
  }

  async function signOutWith(reply: FastifyReply, session: LoadedSession, message: string) {
    await sessions.destroy(session.id);
    const fresh = await sessions.create({ stage: 'anonymous', flash: message });
    setCookie(reply, fresh);
    return redirect(reply, '/portal/');
  }

  /** The user's view of a change this session made; undefined (after answering 404) otherwise. */
  async function watchedTimeline(session: LoadedSession & { data: { username: string } }, eventId: string) {
    if (!(session.data.events ?? []).includes(eventId)) return undefined;
    return selfService.timeline(eventId, session.data.username);
  }

  app.get<{ Params: { eventId: string } }>('/portal/changes/:eventId', async (req, reply) => {
    const session = await requireUser(req, reply);
    if (!session) return;
    const timeline = await watchedTimeline(session, req.params.eventId);
    if (!timeline) {
      return show(
        reply,
        session,
        (ctx) => messagePage(ctx, 'Change not found', 'There is no change of yours with that link.'),
        404,
      );
    }
    return show(reply, session, (ctx) => changesPage(ctx, timeline));
  });

  // Polled by portal.js about once a second until `final`.
  app.get<{ Params: { eventId: string } }>('/portal/changes/:eventId/status', async (req, reply) => {
    const session = await load(req);
    if (!signedIn(session)) return reply.code(401).send(refusal('signed_out', 'sign in to the portal again'));
    const timeline = await watchedTimeline(session, req.params.eventId);
    if (!timeline) return reply.code(404).send(refusal('not_found', 'no change of yours with that id'));
    await sessions.save(session);
    return reply.send({ final: timeline.final, timeline, html: timelineList(timeline).text });
  });

  async function enrolment(session: LoadedSession & { data: { username: string } }) {
    const sealed = sessions.open(session, 'enrolSecret');
    const pending = sealed
      ? (JSON.parse(sealed) as { secret: string; uri: string })
      : await selfService.mfa.begin(session.data.username);
    if (!sealed) sessions.seal(session, 'enrolSecret', JSON.stringify(pending));
    const svg = await QRCode.toString(pending.uri, { type: 'svg', margin: 1, errorCorrectionLevel: 'M' });
    return { secret: pending.secret, qrDataUrl: `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}` };
  }

  async function authenticator(reply: FastifyReply, session: LoadedSession, errors?: FieldErrors, status = 200) {
    if (!signedIn(session)) return redirect(reply, '/portal/');
    session.data.mfa = await selfService.mfa.enrolled(session.data.username);
    if (session.data.mfa) {
      delete session.data.enrolSecret;
      return show(reply, session, (ctx) => authenticatorPage(ctx, { enrolled: true, errors }), status);
    }
    const pending = await enrolment(session);
    return show(reply, session, (ctx) => authenticatorPage(ctx, { enrolled: false, ...pending, errors }), status);
  }

  app.get('/portal/security/authenticator', async (req, reply) => {
    const session = await requireUser(req, reply);
    if (!session) return;
    return authenticator(reply, session);
  });

  app.post('/portal/security/authenticator', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    if (!signedIn(session)) return redirect(reply, '/portal/');
    const pending = sessions.open(session, 'enrolSecret');
    if (!pending) return redirect(reply, '/portal/security/authenticator');
    const otp = field(req.body, 'otp').replace(/\s/g, '');
    if (!otp) return authenticator(reply, session, { otp: 'Enter the code your app shows.' }, 400);
    const { secret } = JSON.parse(pending) as { secret: string };
    const result = await selfService.mfa.confirm(session.data.username, secret, otp, client(req));
    if (result !== true) return authenticator(reply, session, errorsOf(result, reply), result.status);
    delete session.data.enrolSecret;
    Object.assign(session.data, { mfa: true, mfaVerified: true, flash: 'Your authenticator app is on.' });
    await sessions.save(session);
    return redirect(reply, '/portal/security');
  });

  app.post('/portal/security/authenticator/disable', formOptions, async (req, reply) => {
    const session = await formSession(req, reply);
    if (!session) return;
    if (!signedIn(session)) return redirect(reply, '/portal/');
    const otp = field(req.body, 'otp').replace(/\s/g, '');
    if (!otp) return authenticator(reply, session, { otp: 'Enter the code your app shows.' }, 400);
    const result = await selfService.mfa.disable(session.data.username, otp, client(req));
    if (result !== true) return authenticator(reply, session, errorsOf(result, reply), result.status);
    Object.assign(session.data, { mfa: false, flash: 'Your authenticator app is off.' });
    await sessions.save(session);
    return redirect(reply, '/portal/security');
  });
}
