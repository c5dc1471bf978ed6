// Minimal types for the parts of oidc-provider 9 the tests use (the package ships none).
declare module 'oidc-provider' {
  import type { Server } from 'node:http';

  export interface ProviderClient {
    clientId: string;
  }
  export interface ProviderToken {
    clientId: string;
  }

  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    listen(port: number, host: string, callback?: () => void): Server;
    on(event: string, listener: (...args: unknown[]) => void): this;
    proxy: boolean;
  }
}
