/**
 * The contract between the self-service core (`src/selfservice/`: directory sign-in, MFA, lockout,
 * the password change) and the two front ends that use it: the desktop-app API (`/v1/password`)
 * and the portal (`/portal/`). Both speak to users only through this.
 */

/** Why a self-service request was refused. `message` is safe to show the user; never holds a password. */
export interface SelfServiceRefusal {
  refused: true;
  status: 400 | 401 | 422 | 429;
  code:
    | 'invalid_request'
    | 'invalid_credentials'
    | 'mfa_required'
    | 'mfa_invalid'
    | 'password_policy'
    | 'too_many_attempts'
    | 'mfa_not_enrolled'
    | 'mfa_already_enrolled';
  /** The input field at fault (`newPassword`, `otp`, …), for showing the error beside it. */
  field?: string;
  message: string;
  /** Seconds, with `too_many_attempts`. */
  retryAfter?: number;
}

/** Where the request came from: lockout counts per username and per client address. */
export interface Client {
  address: string;
}

export interface SignedIn {
  refused?: false;
  /** As the directory spells it. */
  username: string;
  /** Whether the user has an authenticator enrolled. */
  mfa: boolean;
}

/** One line of "what happens next". */
export interface TimelineApp {
  app: string;
  name: string;
  kind: string;
  state: string;
  /** When the app acts (ISO 8601); for session apps, when it asks the user to sign in again. */
  dueAt?: string | undefined;
  /** Whether acting means the user signs in again there (session kinds). */
  asksToSignIn: boolean;
  /** For computers: the hostnames that will ask for the old and new password at next login. */
  hostnames?: string[] | undefined;
  detail?: string | undefined;
}

export interface Timeline {
  eventId: string;
  occurredAt: string;
  /** Every app is in a final state. */
  final: boolean;
  apps: TimelineApp[];
}

export interface ChangeAccepted {
  refused?: false;
  eventId: string;
  apps: TimelineApp[];
  /** Bearer token for `GET /v1/password/changes/:eventId` (this user, this event; expires). */
  statusToken: string;
}

export interface PasswordChangeRequest {
  username: string;
  currentPassword: string;
  newPassword: string;
  otp?: string | undefined;
  /** An enrolled computer's id (desktop app), checked against `deviceToken`. */
  deviceId?: string | undefined;
  deviceToken?: string | undefined;
  source: 'desktop-app' | 'user-portal';
  /** The portal checked the code at sign-in (its session says so): no code is asked again. */
  mfaVerified?: boolean;
  client: Client;
}

export interface SelfService {
  /** Username and password against the directory (as the user), then the code when the user has MFA. */
  signIn(input: {
    username: string;
    password: string;
    otp?: string | undefined;
    client: Client;
  }): Promise<SignedIn | SelfServiceRefusal>;
  /** Writes the directory as the user (RFC 3062, old password), then records and propagates the change. */
  changePassword(input: PasswordChangeRequest): Promise<ChangeAccepted | SelfServiceRefusal>;
  /**
   * The user's newest change Ripple knows of (from any input), by its `occurredAt`: the portal
   * ends sessions signed in before it.
   */
  latestChange(username: string): Promise<{ eventId: string; occurredAt: string } | undefined>;
  /** That user's view of one change; undefined when the event is not theirs. */
  timeline(eventId: string, username: string): Promise<Timeline | undefined>;
  /** Checks a status token; the username it was issued to, or undefined. */
  statusTokenUser(token: string, eventId: string): Promise<string | undefined>;
  mfa: {
    enrolled(username: string): Promise<boolean>;
    /** A new secret (base32) and its otpauth:// URI; nothing is stored until confirmed. */
    begin(username: string): Promise<{ secret: string; uri: string }>;
    confirm(username: string, secret: string, code: string, client: Client): Promise<true | SelfServiceRefusal>;
    disable(username: string, code: string, client: Client): Promise<true | SelfServiceRefusal>;
  };
}
