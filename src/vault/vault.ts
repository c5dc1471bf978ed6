import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RippleError } from '../errors.js';

export interface VaultOptions {
  /** 32-byte AES-256 key. */
  key: Buffer;
  /** Stored beside each ciphertext, so a later key rotation can tell which key sealed it. */
  keyId: string;
  /** Default time to live of an entry, ms. */
  ttl: number;
}

/**
 * Secrets at rest in Redis as AES-256-GCM ciphertext, each under its own key with a TTL.
 * The entry name is bound into the ciphertext (as additional data), so a ciphertext
 * copied to another entry does not decrypt.
 */
export class Vault {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly opts: VaultOptions,
  ) {}

  private key(name: string): string {
    return `${this.prefix}:vault:${name}`;
  }

  /** The entry ready to be written by a caller that stores it atomically with other data. */
  sealFor(name: string, plaintext: string): { key: string; sealed: string; ttlMs: number } {
    return { key: this.key(name), sealed: this.seal(name, plaintext), ttlMs: this.opts.ttl };
  }

  seal(name: string, plaintext: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.opts.key, iv);
    cipher.setAAD(Buffer.from(name));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [this.opts.keyId, iv.toString('base64'), cipher.getAuthTag().toString('base64'), ct.toString('base64')].join(
      '.',
    );
  }

  open(name: string, sealed: string): string {
    const [keyId, iv, tag, ct] = sealed.split('.');
    if (keyId !== this.opts.keyId || iv === undefined || tag === undefined || ct === undefined) {
      throw new RippleError(
        'VAULT_KEY_UNKNOWN',
        `vault entry ${name} was sealed with key "${keyId}", not "${this.opts.keyId}"`,
      );
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.opts.key, Buffer.from(iv, 'base64'));
      decipher.setAAD(Buffer.from(name));
      decipher.setAuthTag(Buffer.from(tag, 'base64'));
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64')), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new RippleError('VAULT_TAMPERED', `vault entry ${name} does not decrypt (wrong key or altered)`, {
        cause: err,
      });
    }
  }

  async put(name: string, plaintext: string, ttlMs = this.opts.ttl): Promise<void> {
    await this.redis.set(this.key(name), this.seal(name, plaintext), 'PX', Math.max(1, Math.round(ttlMs)));
  }

  /** The plaintext, or undefined when the entry expired or was wiped. */
  async get(name: string): Promise<string | undefined> {
    const sealed = await this.redis.get(this.key(name));
    return sealed === null ? undefined : this.open(name, sealed);
  }

  async has(name: string): Promise<boolean> {
    return (await this.redis.exists(this.key(name))) === 1;
  }

  async delete(name: string): Promise<void> {
    await this.redis.del(this.key(name));
  }
}
