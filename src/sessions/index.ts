export { type SessionApp, type SessionField, type SessionFieldRules, sessionFieldRules } from './fields.js';
export { type SessionRoutesOptions, sessionRoutes } from './routes.js';
export {
  MAX_SESSION_TTL_MS,
  MIN_SESSION_TTL_MS,
  type RecordedSession,
  type SessionInput,
  type SessionRecord,
  SessionStore,
  type SessionStoreOptions,
} from './store.js';
