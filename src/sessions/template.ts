import { z } from 'zod';
import { PermanentDeliveryError } from '../errors.js';
import type { PasswordChange } from '../targets/adapter.js';

const FIELDS = ['id', 'username', 'email'] as const;
const PLACEHOLDER = /\{([^{}]*)\}/g;

/**
 * A subject template such as `{email}`, `{id}` or `{username}@corp.example`: how the
 * app knows the user (OIDC `sub`, SAML NameID). Unknown placeholders fail at config load.
 */
export const subjectTemplate = () =>
  z
    .string()
    .min(1, 'must not be empty')
    .superRefine((value, ctx) => {
      for (const [, name] of value.matchAll(PLACEHOLDER)) {
        if (!FIELDS.includes(name as (typeof FIELDS)[number])) {
          ctx.addIssue({
            code: 'custom',
            message: `unknown placeholder {${name}} (use ${FIELDS.map((f) => `{${f}}`).join(', ')})`,
          });
        }
      }
    });

/** Fills a subject template from the event's user; a missing value is a permanent failure for this app. */
export function renderSubject(template: string, user: PasswordChange['user']): string {
  return template.replace(PLACEHOLDER, (_whole, name: (typeof FIELDS)[number]) => {
    const value = user[name];
    if (value === undefined || value === '') {
      throw new PermanentDeliveryError('SUBJECT_UNKNOWN', `the event's user has no ${name}, needed for "${template}"`);
    }
    return value;
  });
}
