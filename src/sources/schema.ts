import { z } from 'zod';
import { APP_ID } from '../config/schema.js';
import type { SchemaContext } from '../config/schema-context.js';
import type { SourceKind } from './types.js';

/** The schema of one source file of the given kind: common keys plus the `<kind>:` block. */
export function sourceSchemaFor(kind: SourceKind, ctx: SchemaContext) {
  return z.strictObject({
    id: z.string().regex(APP_ID, 'use lowercase letters, digits and -').max(63),
    kind: z.literal(kind.kind),
    enabled: z.boolean().default(true),
    enrich: z
      .strictObject({
        /** An ldap app (it may be `enabled: false`): the user is found with its userDN or search. */
        directory: z.string().regex(APP_ID, 'the id of an ldap app'),
        emailAttribute: z.string().min(1).default('mail'),
        /** Group names from this attribute of the user's entry (DNs: the first value is the name)… */
        groupsAttribute: z.string().min(1).default('memberOf'),
        /** …or from a search for the groups that list the user (`{dn}`, `{username}` are filled in). */
        groupSearch: z
          .strictObject({
            base: z.string().min(1),
            filter: z.string().min(1).default('(member={dn})'),
            nameAttribute: z.string().min(1).default('cn'),
          })
          .optional(),
      })
      .optional(),
    [kind.kind]: kind.settings(ctx),
  });
}
