import type { Timeline, TimelineApp } from '../selfservice/types.js';
import { type Html, html } from './html.js';

/** What every page shares: the product name, the signed-in user and the session's form token. */
export interface PageContext {
  product: string;
  csrf: string;
  /** Set when signed in: the header shows the user and a Sign out button. */
  username?: string | undefined;
  flash?: string | undefined;
}

/** Errors by field name (`username`, `newPassword`, …); `form` is about the whole form. */
export type FieldErrors = Partial<Record<string, string>>;

const csrfField = (ctx: PageContext) => html`<input type="hidden" name="_csrf" value="${ctx.csrf}">`;

export function layout(ctx: PageContext, title: string, main: Html): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title} · ${ctx.product}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/portal/assets/portal.css">
<script src="/portal/assets/portal.js" defer></script>
</head>
<body>
<header class="topbar">
  <a class="brand" href="/portal/"><span class="logo" aria-hidden="true"></span>${ctx.product}<span class="brand-sub">Account</span></a>
  ${
    ctx.username
      ? html`<nav aria-label="Account">
    <a href="/portal/security">Security</a>
    <span class="who" title="Signed in as ${ctx.username}">${ctx.username}</span>
    <form method="post" action="/portal/sign-out">${csrfField(ctx)}<button class="link" type="submit">Sign out</button></form>
  </nav>`
      : ''
  }
</header>
<main id="main">
${ctx.flash ? html`<p class="flash" role="status">${ctx.flash}</p>` : ''}
${main}
</main>
<footer class="footer">Protected by ${ctx.product}. Never share your password or authentication codes.</footer>
</body>
</html>
`;
}

/** A labelled input with its error beside it (aria-describedby, aria-invalid). */
function field(opts: {
  name: string;
  label: string;
  type?: string;
  autocomplete: string;
  value?: string | undefined;
  error?: string | undefined;
  hint?: string;
  extra?: Html;
}): Html {
  const errorId = `${opts.name}-error`;
  const hintId = `${opts.name}-hint`;
  const describedBy = [opts.hint ? hintId : '', opts.error ? errorId : ''].filter(Boolean).join(' ');
  return html`<div class="field${opts.error ? ' invalid' : ''}">
  <label for="${opts.name}">${opts.label}</label>
  <input id="${opts.name}" name="${opts.name}" type="${opts.type ?? 'text'}" autocomplete="${opts.autocomplete}"${
    opts.value !== undefined ? html` value="${opts.value}"` : ''
  }${describedBy ? html` aria-describedby="${describedBy}"` : ''}${opts.error ? html` aria-invalid="true"` : ''} required${opts.extra ?? ''}>
  ${opts.hint ? html`<p class="hint" id="${hintId}">${opts.hint}</p>` : ''}
  ${opts.error ? html`<p class="field-error" id="${errorId}">${opts.error}</p>` : ''}
</div>`;
}

const codeAttrs = html` inputmode="numeric" pattern="[0-9]{6}" maxlength="6"`;

function formError(error: string | undefined): Html {
  return error ? html`<p class="form-error" role="alert">${error}</p>` : html``;
}

/** The one-field form every authenticator step uses: "Authentication code" and a button. */
function codeForm(ctx: PageContext, action: string, errors: FieldErrors, button: Html): Html {
  return html`${formError(errors.form)}
  <form method="post" action="${action}" novalidate>
    ${csrfField(ctx)}
    ${field({ name: 'otp', label: 'Authentication code', autocomplete: 'one-time-code', error: errors.otp, extra: codeAttrs })}
    ${button}
  </form>`;
}

export function signInPage(ctx: PageContext, opts: { username?: string; errors?: FieldErrors } = {}): Html {
  const errors = opts.errors ?? {};
  return layout(
    ctx,
    'Sign in',
    html`<section class="card narrow" aria-labelledby="title">
  <h1 id="title">Sign in</h1>
  <p class="lead">Use your ${ctx.product} username and password.</p>
  ${formError(errors.form)}
  <form method="post" action="/portal/sign-in" novalidate>
    ${csrfField(ctx)}
    ${field({ name: 'username', label: 'Username', autocomplete: 'username', value: opts.username, error: errors.username, extra: html` autocapitalize="none" spellcheck="false"` })}
    ${field({ name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', error: errors.password })}
    <button class="primary" type="submit">Sign in</button>
  </form>
</section>`,
  );
}

export function codePage(ctx: PageContext, opts: { username: string; errors?: FieldErrors }): Html {
  const errors = opts.errors ?? {};
  return layout(
    ctx,
    'Authentication code',
    html`<section class="card narrow" aria-labelledby="title">
  <h1 id="title">Two-step verification</h1>
  <p class="lead">Signing in as <strong>${opts.username}</strong>. Open your authenticator app and enter the 6-digit code it shows for ${ctx.product}.</p>
  ${codeForm(ctx, '/portal/sign-in/code', errors, html`<button class="primary" type="submit">Sign in</button>`)}
  <form method="post" action="/portal/sign-out" class="secondary-action">${csrfField(ctx)}<button class="link" type="submit">Use a different account</button></form>
</section>`,
  );
}

const svgIcon = (path: string) =>
  html`<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" focusable="false"><path d="${path}"/></svg>`;
const ICON_KEY = svgIcon(
  'M15 7a3 3 0 1 1-3 3M21 2l-9.6 9.6M15.5 7.5l3 3L22 7l-3-3M7.5 22a5.5 5.5 0 1 0 0-11 5.5 5.5 0 0 0 0 11z',
);
const ICON_PHONE = svgIcon('M7 2h10a2 2 0 0 1 2 2v16a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zM12 18h.01');

export function securityPage(ctx: PageContext, opts: { mfa: boolean; enforce: boolean }): Html {
  return layout(
    ctx,
    'Security',
    html`<h1 class="page-title">Security</h1>
<p class="lead">Manage how you sign in to ${ctx.product} and every app connected to it.</p>
<div class="tiles">
  <a class="card tile" href="/portal/security/password">
    <span class="tile-icon" aria-hidden="true">${ICON_KEY}</span>
    <span class="tile-title">Reset Password</span>
    <span class="tile-text">Change your password for your computer and all your other services.</span>
  </a>
  <a class="card tile" href="/portal/security/authenticator">
    <span class="tile-icon" aria-hidden="true">${ICON_PHONE}</span>
    <span class="tile-title">Authenticator app</span>
    <span class="tile-text">${opts.mfa ? 'On: a code from your app is asked at sign-in.' : opts.enforce ? 'Required to change your password: set it up now.' : 'Off: add a second step to your sign-in.'}</span>
    <span class="badge ${opts.mfa ? 'ok' : 'muted'}">${opts.mfa ? 'On' : 'Off'}</span>
  </a>
</div>`,
  );
}

export function passwordPage(ctx: PageContext, opts: { errors?: FieldErrors } = {}): Html {
  const errors = opts.errors ?? {};
  return layout(
    ctx,
    'Reset Password',
    html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/portal/security">Security</a> <span aria-hidden="true">›</span> Reset Password</nav>
<section class="card narrow" aria-labelledby="title">
  <h1 id="title">Reset Password</h1>
  <p class="lead">Your new password is set for your computer and all your other services. Apps you are signed in to may ask you to sign in again.</p>
  ${formError(errors.form)}
  <form method="post" action="/portal/security/password" novalidate>
    ${csrfField(ctx)}
    <input type="text" name="username" autocomplete="username" value="${ctx.username}" hidden>
    ${field({ name: 'newPassword', label: 'New password', type: 'password', autocomplete: 'new-password', error: errors.newPassword, hint: 'Your organisation’s password rules apply.' })}
    ${field({ name: 'confirmPassword', label: 'Confirm new password', type: 'password', autocomplete: 'new-password', error: errors.confirmPassword })}
    <button class="primary" type="submit">Save</button>
  </form>
</section>`,
  );
}

const STATE_LABEL: Record<string, [string, string]> = {
  scheduled: ['Scheduled', 'info'],
  waiting: ['Waiting', 'info'],
  active: ['Updating', 'info'],
  retrying: ['Retrying', 'warn'],
  done: ['Done', 'ok'],
  failed: ['Failed', 'bad'],
  superseded: ['Replaced by a newer change', 'muted'],
  skipped: ['Not needed', 'muted'],
};

const FINAL = new Set(['done', 'failed', 'superseded', 'skipped']);

/** A time the browser rewrites in its local time zone (portal.js); UTC until it does. */
function localTime(iso: string): Html {
  const d = new Date(iso);
  const utc = Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  return html`<time datetime="${iso}" data-local-time>${utc}</time>`;
}

function appLine(app: TimelineApp): Html {
  const hostnames = app.hostnames ?? [];
  if (hostnames.length > 0 && !FINAL.has(app.state)) {
    return html`${hostnames.map(
      (h) =>
        html`<span class="line">You'll be asked for your old and new password the next time you log in to <strong>${h}</strong>.</span>`,
    )}`;
  }
  if (app.asksToSignIn && app.dueAt && (app.state === 'done' || !FINAL.has(app.state))) {
    return app.state === 'done'
      ? html`<span class="line">Asked you to sign in again at ${localTime(app.dueAt)}.</span>`
      : html`<span class="line">Will ask you to sign in again at ${localTime(app.dueAt)}.</span>`;
  }
  if (app.state === 'done') return html`<span class="line">Your new password works here.</span>`;
  if (!FINAL.has(app.state)) {
    return app.dueAt && new Date(app.dueAt).getTime() > Date.now() + 5_000
      ? html`<span class="line">Updates at ${localTime(app.dueAt)}.</span>`
      : html`<span class="line">Updating now…</span>`;
  }
  return html``;
}

function summary(timeline: Timeline): string {
  if (!timeline.final) return 'Updating… this page follows along by itself.';
  const failed = timeline.apps.filter((a) => a.state === 'failed').length;
  if (failed > 0) {
    return `Finished, but ${failed === 1 ? 'one app' : `${failed} apps`} could not be updated. Your IT team can see why and retry.`;
  }
  return 'All done. Everything has your new password.';
}

/** The live part of "What happens next": re-rendered by the JSON endpoint the page polls. */
export function timelineList(timeline: Timeline): Html {
  return html`<ul class="timeline">${timeline.apps.map((app) => {
    const [label, tone] = STATE_LABEL[app.state] ?? [app.state, 'muted'];
    return html`<li class="app" data-state="${app.state}">
  <span class="app-name">${app.name}</span>
  <span class="badge ${tone}">${label}</span>
  <span class="app-text">${appLine(app)}${app.detail ? html`<span class="detail">${app.detail}</span>` : ''}</span>
</li>`;
  })}</ul>
<p class="summary${timeline.apps.some((a) => a.state === 'failed') ? ' bad' : ''}" data-final="${timeline.final ? 'true' : 'false'}">${summary(timeline)}</p>`;
}

export function changesPage(ctx: PageContext, timeline: Timeline): Html {
  return layout(
    ctx,
    'What happens next',
    html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/portal/security">Security</a> <span aria-hidden="true">›</span> Reset Password</nav>
<section class="card" aria-labelledby="title">
  <h1 id="title">What happens next</h1>
  <p class="lead">Your password was changed at ${localTime(timeline.occurredAt)}. Here is where your new password goes.</p>
  <div id="timeline" aria-live="polite" data-timeline-url="/portal/changes/${encodeURIComponent(timeline.eventId)}/status" data-final="${timeline.final ? 'true' : 'false'}">
    ${timelineList(timeline)}
  </div>
</section>`,
  );
}

export function authenticatorPage(
  ctx: PageContext,
  opts:
    | { enrolled: true; errors?: FieldErrors }
    | { enrolled: false; secret: string; qrDataUrl: string; errors?: FieldErrors },
): Html {
  const errors = opts.errors ?? {};
  const crumbs = html`<nav class="crumbs" aria-label="Breadcrumb"><a href="/portal/security">Security</a> <span aria-hidden="true">›</span> Authenticator app</nav>`;
  if (opts.enrolled) {
    return layout(
      ctx,
      'Authenticator app',
      html`${crumbs}
<section class="card narrow" aria-labelledby="title">
  <h1 id="title">Authenticator app <span class="badge ok">On</span></h1>
  <p class="lead">A code from your authenticator app is asked each time you sign in. To turn it off, enter a current code.</p>
  ${codeForm(ctx, '/portal/security/authenticator/disable', errors, html`<button class="danger" type="submit">Turn off</button>`)}
</section>`,
    );
  }
  return layout(
    ctx,
    'Authenticator app',
    html`${crumbs}
<section class="card" aria-labelledby="title">
  <h1 id="title">Set up your authenticator app</h1>
  <p class="lead">Use an authenticator app (Google Authenticator, Microsoft Authenticator, 1Password…): ${ctx.product} will ask for its code each time you sign in.</p>
  <div class="qr-step">
    <div class="qr"><img src="${opts.qrDataUrl}" alt="QR code to add ${ctx.product} to your authenticator app" width="200" height="200"></div>
    <div>
      <p><strong>1.</strong> Scan the QR code with your app.</p>
      <p>Can't scan it? Add an account by hand with this key:</p>
      <p class="secret"><span class="secret-label" id="secret-label">Secret key</span> <code aria-labelledby="secret-label" data-secret>${opts.secret}</code></p>
      <p><strong>2.</strong> Enter the 6-digit code the app shows.</p>
    </div>
  </div>
  ${codeForm(ctx, '/portal/security/authenticator', errors, html`<button class="primary" type="submit">Turn on</button>`)}
</section>`,
  );
}

export function messagePage(
  ctx: PageContext,
  title: string,
  message: string,
  link?: { href: string; text: string },
): Html {
  return layout(
    ctx,
    title,
    html`<section class="card narrow" aria-labelledby="title">
  <h1 id="title">${title}</h1>
  <p class="lead">${message}</p>
  ${link ? html`<p><a class="button" href="${link.href}">${link.text}</a></p>` : ''}
</section>`,
  );
}
