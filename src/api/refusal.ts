import type { z } from 'zod';
import { formatPath } from '../config/env.js';

/** One field's problem in a refused request body or query. */
export interface FieldIssue {
  field: string;
  message: string;
}

/**
 * The one shape of every 4xx Ripple answers: a stable `error` code, a `message` a person can
 * read, and `issues[]` (field + message) when the request's body or query was invalid.
 */
export interface Refusal {
  error: string;
  message: string;
  issues?: FieldIssue[];
}

export function refusal(error: string, message: string, issues?: FieldIssue[]): Refusal {
  return issues && issues.length > 0 ? { error, message, issues } : { error, message };
}

/** Zod issues as `issues[]`, with the messages users should read (unknown keys, missing fields). */
export function fieldIssues(error: z.ZodError, whole = '(body)'): FieldIssue[] {
  return error.issues.map((issue) => ({
    field: formatPath(issue.path) || whole,
    message:
      issue.code === 'unrecognized_keys'
        ? `unknown field(s): ${issue.keys.join(', ')}`
        : issue.code === 'invalid_type' && issue.input === undefined
          ? 'is required'
          : issue.message,
  }));
}

/** A refusal of an invalid body or query: the message lists every `field: reason`. */
export function invalidRequest(error: string, zodError: z.ZodError, whole?: string): Refusal {
  const issues = fieldIssues(zodError, whole);
  return refusal(error, issues.map((i) => `${i.field}: ${i.message}`).join('; '), issues);
}
