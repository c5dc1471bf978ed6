export { type SessionRoutesOptions, sessionRoutes } from './routes.js';
export { type SessionInput, type SessionRecord, SessionStore, type SessionStoreOptions } from './store.js';
