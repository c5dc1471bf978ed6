/** The optional fields of a recorded session, each meaningful to one protocol. */
export type SessionField = 'sid' | 'sessionIndex' | 'nameId' | 'refreshToken';

/** For one app, each optional field: `true` when the app uses it, or why it is refused. */
export type SessionFieldRules = Record<SessionField, true | string>;

/** A configured app as the session routes need to know it. */
export interface SessionApp {
  id: string;
  kind: string;
  settings: unknown;
}

/**
 * What a session app can use. An OIDC app uses `sid`, and a refresh token only when it has
 * `oidc.revocation` (otherwise Ripple would hold a token it can never revoke, and forget it
 * while it stays valid). A SAML app uses `sessionIndex` and `nameId`. A field the app cannot
 * use is refused rather than stored and silently ignored. Undefined for other kinds: every
 * field is accepted.
 */
export function sessionFieldRules(app: SessionApp): SessionFieldRules | undefined {
  if (app.kind === 'oidc') {
    const canRevoke = Boolean((app.settings as { revocation?: unknown } | undefined)?.revocation);
    const samlField = `a SAML field; app "${app.id}" is kind oidc (record its sid)`;
    return {
      sid: true,
      refreshToken:
        canRevoke ||
        `app "${app.id}" has no oidc.revocation, so Ripple could never revoke this token and it would stay valid at the OP after a password change: configure oidc.revocation, or record the session without refreshToken`,
      sessionIndex: samlField,
      nameId: samlField,
    };
  }
  if (app.kind === 'saml') {
    return {
      sid: `an OIDC field; app "${app.id}" is kind saml (record its sessionIndex)`,
      refreshToken: `app "${app.id}" is kind saml: SAML Single Logout has no refresh token to revoke`,
      sessionIndex: true,
      nameId: true,
    };
  }
  return undefined;
}
