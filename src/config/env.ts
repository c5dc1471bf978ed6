import { ConfigError } from '../errors.js';

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${NAME}` (and `${NAME:-fallback}`) in every string of a parsed YAML tree.
 * A missing variable without fallback is an error naming the file and key; `unresolved`
 * lists the paths of the values that still hold one (whose format cannot be checked).
 */
export function resolveEnv(
  tree: unknown,
  file: string,
  env: NodeJS.ProcessEnv,
  path: (string | number)[] = [],
): { value: unknown; errors: ConfigError[]; unresolved: (string | number)[][] } {
  const errors: ConfigError[] = [];
  const unresolved: (string | number)[][] = [];
  const walk = (node: unknown, at: (string | number)[]): unknown => {
    if (typeof node === 'string') {
      return node.replace(REFERENCE, (whole, name: string, fallback: string | undefined) => {
        const value = env[name];
        if (value !== undefined && value !== '') return value;
        if (fallback !== undefined) return fallback;
        errors.push(new ConfigError(file, formatPath(at), `environment variable ${name} is not set`));
        if (unresolved.at(-1) !== at) unresolved.push(at);
        return whole;
      });
    }
    if (Array.isArray(node)) return node.map((item, i) => walk(item, [...at, i]));
    if (node && typeof node === 'object') {
      return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, [...at, k])]));
    }
    return node;
  };
  return { value: walk(tree, path), errors, unresolved };
}

/** `apps.0.retry.attempts` style, the way the YAML reads. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
    .join('.')
    .replace(/\.\[/g, '[');
}
