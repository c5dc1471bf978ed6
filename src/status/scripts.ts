import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const DIR = join(import.meta.dirname, 'lua');
const INCLUDE = /^--- @include "([a-z-]+)"$/m;

export interface LuaScript {
  /** The file name without its key count: `begin-delivery`. */
  name: string;
  numberOfKeys: number;
  lua: string;
}

/**
 * Ripple's Redis scripts, one per file in `lua/` (named `<what-it-does>-<key count>.lua`, KEYS
 * and ARGV documented at the top, shared helpers in `lua/includes/` pulled in with
 * `--- @include "name"`), read once when this module loads.
 */
export const SCRIPTS: ReadonlyMap<string, LuaScript> = new Map(
  readdirSync(DIR)
    .filter((f) => f.endsWith('.lua'))
    .map((file) => {
      const match = /^(.+)-(\d+)\.lua$/.exec(file);
      if (!match) throw new Error(`${join(DIR, file)}: name it <what-it-does>-<key count>.lua`);
      const [, name, keys] = match as unknown as [string, string, string];
      const lua = readFileSync(join(DIR, file), 'utf8').replace(INCLUDE, (_line, inc: string) =>
        readFileSync(join(DIR, 'includes', `${inc}.lua`), 'utf8'),
      );
      return [name, { name, numberOfKeys: Number(keys), lua }] as const;
    }),
);
