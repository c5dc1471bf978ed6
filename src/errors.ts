/**
 * One error hierarchy for the whole engine. Every error has a stable string `code`
 * (for logs, API bodies and tests) and may carry a `cause`.
 */
export class RippleError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A config file is invalid: names the file, the key path and the reason. */
export class ConfigError extends RippleError {
  readonly file: string;
  readonly key: string;
  readonly reason: string;
  constructor(file: string, key: string, reason: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', `${file}: ${key || '(root)'}: ${reason}`, options);
    this.file = file;
    this.key = key;
    this.reason = reason;
  }
}

/** Several config problems at once, so an operator can fix them in one pass. */
export class ConfigErrors extends RippleError {
  readonly errors: ConfigError[];
  constructor(errors: ConfigError[]) {
    super('CONFIG_INVALID', errors.map((e) => e.message).join('\n'));
    this.errors = errors;
  }
}

/** Start-up cannot go on (no Redis, port taken, ...). The message says what to do. */
export class StartupError extends RippleError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STARTUP_FAILED', message, options);
  }
}

/**
 * A delivery to a target failed. `retryable` decides between another attempt
 * (with backoff, or `retryAfterMs` when the target said so) and the dead letter.
 */
export class DeliveryError extends RippleError {
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  constructor(code: string, message: string, options: { retryable: boolean; retryAfterMs?: number; cause?: unknown }) {
    super(code, message, { cause: options.cause });
    this.retryable = options.retryable;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** Worth another attempt: network failure, timeout, 5xx, 429, server unreachable. */
export class TransientDeliveryError extends DeliveryError {
  constructor(code: string, message: string, options?: { retryAfterMs?: number; cause?: unknown }) {
    super(code, message, { retryable: true, ...options });
  }
}

/** Retrying cannot help (bad credentials, 4xx, protocol refusal): dead-letter at once. */
export class PermanentDeliveryError extends DeliveryError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, { retryable: false, ...options });
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
