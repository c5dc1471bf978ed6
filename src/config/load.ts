import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { targetKinds } from '../../workers/index.js';
import { ConfigError, ConfigErrors } from '../errors.js';
import { loadSigningKeys, type SigningKeys } from '../signing/keys.js';
import { sourceKindOf, sourceKinds } from '../sources/index.js';
import { sourceSchemaFor } from '../sources/schema.js';
import type { SourceConfig } from '../sources/types.js';
import type { TargetAdapter } from '../targets/adapter.js';
import { checkReach, type KindTraits, rateLimitWarnings } from './credential-lifetime.js';
import { formatPath, resolveEnv } from './env.js';
import { APP_ID, appSchemaFor, serviceSchema } from './schema.js';
import type { SchemaContext } from './schema-context.js';
import { closest } from './suggest.js';
import type { AppConfig, ServiceConfig } from './types.js';

export interface LoadedConfig {
  dir: string;
  service: ServiceConfig;
  /** Keys from `signing:` in ripple.yaml, read and checked (undefined without that block). */
  signing?: SigningKeys | undefined;
  /** Every app file, enabled or not, in id order. */
  apps: AppConfig[];
  /** Every source file (`sources/*.yaml`), enabled or not, in id order. */
  sources: SourceConfig[];
  /** What is allowed but worth an operator's attention (`config check` and start-up show them). */
  warnings: ConfigError[];
}

/**
 * The one config loader. Reads `ripple.yaml` and `apps/*.yaml` from `dir`, resolves
 * `${ENV}` references, validates everything, and throws ConfigErrors listing every
 * problem with its file, key and reason. Nothing is half-loaded.
 */
export function loadConfig(dir: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const root = resolve(dir);
  const errors: ConfigError[] = [];
  const ctx: SchemaContext = { configDir: root };

  const serviceFile = join(root, 'ripple.yaml');
  const serviceYaml = readYaml(serviceFile, env, errors);
  let service: ServiceConfig | undefined;
  let signing: SigningKeys | undefined;
  if (serviceYaml) {
    errors.push(...serviceYaml.envErrors);
    const validated = validate(serviceSchema, serviceYaml.tree, serviceFile, errors, serviceYaml.unresolved);
    if (serviceYaml.unresolved.length === 0) service = validated;
    if (service) {
      try {
        signing = loadSigningKeys(service, { configDir: root, file: serviceFile });
      } catch (err) {
        if (!(err instanceof ConfigErrors)) throw err;
        errors.push(...err.errors);
      }
    }
  }

  const apps: AppConfig[] = [];
  const appsDir = join(root, 'apps');
  const files = existsSync(appsDir)
    ? readdirSync(appsDir)
        .filter((f) => /\.ya?ml$/i.test(f))
        .sort()
    : [];
  const seen = new Map<string, string>();
  // Ids of app files with errors of their own: other files naming them get no second error.
  const broken = new Set<string>();
  // Disabled apps' unset `${VAR}`s: an error only if a source uses the app (ldap-watch, enrich).
  const unsetIn = new Map<string, ConfigError[]>();
  for (const name of files) {
    const file = join(appsDir, name);
    const yaml = readYaml(file, env, errors);
    if (!yaml) continue;
    if (isMapping(yaml.tree) && yaml.tree.enabled === false && typeof yaml.tree.id === 'string') {
      unsetIn.set(yaml.tree.id, yaml.envErrors);
    }
    const app = parseApp(yaml, file, ctx, errors);
    if (!app) {
      const id = isMapping(yaml.tree) ? yaml.tree.id : undefined;
      if (typeof id === 'string') broken.add(id);
      continue;
    }
    const first = seen.get(app.id);
    if (first) {
      errors.push(new ConfigError(file, 'id', `"${app.id}" is already used by ${first}`));
      continue;
    }
    seen.set(app.id, file);
    apps.push(app);
  }

  checkDependencies(apps, broken, errors);
  for (const adapter of Object.values(targetKinds) as TargetAdapter[]) {
    const ofKind = apps.filter((a) => a.enabled && a.kind === adapter.kind);
    for (const p of adapter.checkApps?.(ofKind) ?? []) errors.push(new ConfigError(p.file, p.key, p.reason));
  }
  const sources = loadSources(root, env, ctx, apps, errors, unsetIn);
  const warnings: ConfigError[] = [];
  if (service) {
    checkReach(apps, traitsOf, { key: 'vault.ttl', ms: service.vault.ttl }, errors);
    checkReach(apps, traitsOf, { key: 'status.retention', ms: service.status.retention }, errors);
    warnings.push(...rateLimitWarnings(apps, traitsOf, service.vault.ttl));
    const needs = (a: AppConfig, what: 'issuer' | 'signing') => {
      const adapter = (targetKinds as Record<string, TargetAdapter>)[a.kind];
      const need = adapter?.needsService?.(a.settings) ?? {
        issuer: a.category === 'session',
        signing: a.category === 'session',
      };
      return a.enabled && need[what];
    };
    const issuerApp = apps.find((a) => needs(a, 'issuer'));
    const signingApp = apps.find((a) => needs(a, 'signing'));
    if (issuerApp && !service.issuer) {
      errors.push(
        new ConfigError(
          serviceFile,
          'issuer',
          `required by ${issuerApp.kind} app "${issuerApp.id}" (Ripple's public URL)`,
        ),
      );
    }
    if (signingApp && !service.signing) {
      errors.push(
        new ConfigError(
          serviceFile,
          'signing',
          `required by ${signingApp.kind} app "${signingApp.id}" (keys to sign with)`,
        ),
      );
    }
    const directory = service.selfService?.directory;
    if (directory !== undefined) {
      const reason = directoryProblem(apps, directory, broken);
      if (reason) errors.push(new ConfigError(serviceFile, 'selfService.directory', reason));
    }
    for (const kind of Object.keys(service.workers.concurrency)) {
      if (!(kind in targetKinds)) {
        errors.push(new ConfigError(serviceFile, `workers.concurrency.${kind}`, `unknown kind (known: ${kindList()})`));
      }
    }
  }
  if (errors.length > 0 || !service) throw new ConfigErrors(errors);
  apps.sort((a, b) => a.id.localeCompare(b.id));
  return { dir: root, service, signing, apps, sources, warnings };
}

/**
 * `sources/*.yaml`: one file per input (as `apps/` are outputs), through the same reading and
 * validation as apps: errors name file, key and reason, an unknown kind gets its closest name,
 * an id used twice is refused, and an app a source names must be an ldap app.
 */
function loadSources(
  root: string,
  env: NodeJS.ProcessEnv,
  ctx: SchemaContext,
  apps: readonly AppConfig[],
  errors: ConfigError[],
  unsetIn: ReadonlyMap<string, ConfigError[]>,
): SourceConfig[] {
  const dir = join(root, 'sources');
  const files = existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => /\.ya?ml$/i.test(f))
        .sort()
    : [];
  const sources: SourceConfig[] = [];
  const seen = new Map<string, string>();
  const known = () => Object.keys(sourceKinds).join(', ');
  for (const name of files) {
    const file = join(dir, name);
    const yaml = readYaml(file, env, errors);
    if (!yaml) continue;
    const { tree, unresolved } = yaml;
    if (!isMapping(tree)) {
      errors.push(new ConfigError(file, '', 'expected a mapping of keys (id, kind, ...)'));
      continue;
    }
    const enabled = tree.enabled !== false;
    if (enabled) errors.push(...yaml.envErrors);
    const kindName = tree.kind;
    const kind = typeof kindName === 'string' ? sourceKindOf(kindName) : undefined;
    if (!kind) {
      errors.push(
        new ConfigError(
          file,
          'kind',
          kindName === undefined
            ? `required (one of: ${known()})`
            : `unknown source kind "${String(kindName)}"${didYouMean(kindName, Object.keys(sourceKinds))} (known: ${known()})`,
        ),
      );
      continue;
    }
    if (!(kind.kind in tree)) {
      errors.push(new ConfigError(file, kind.kind, `a ${kind.kind} source needs its "${kind.kind}:" block`));
      continue;
    }
    const parsed = validate(sourceSchemaFor(kind, ctx), tree, file, errors, unresolved);
    if (!parsed || (enabled && unresolved.length > 0)) continue;
    const { id, enabled: on, enrich } = parsed as Pick<SourceConfig, 'id' | 'enabled' | 'enrich'>;
    const settings = (parsed as Record<string, unknown>)[kind.kind];
    const source: SourceConfig = { id, kind: kind.kind, enabled: on, ...(enrich ? { enrich } : {}), settings, file };
    const first = seen.get(source.id);
    if (first) {
      errors.push(new ConfigError(file, 'id', `"${source.id}" is already used by ${first}`));
      continue;
    }
    seen.set(source.id, file);
    const ldapApp = (key: string, id: string) => {
      const app = apps.find((a) => a.id === id);
      if (!app) errors.push(new ConfigError(file, key, `no app has id "${id}" (an ldap app is needed here)`));
      else if (app.kind !== 'ldap') errors.push(new ConfigError(file, key, `"${id}" is a ${app.kind} app, not ldap`));
      else unsetUsed(key, id);
    };
    // A disabled ldap app a source connects as must be complete: its own file's errors, and why they matter.
    const unsetUsed = (key: string, id: string) => {
      const unset = on ? (unsetIn.get(id) ?? []) : [];
      if (unset.length === 0) return;
      errors.push(...unset);
      errors.push(new ConfigError(file, key, `"${id}" is used by this source, so its \${VAR}s must be set`));
    };
    if (source.enrich) ldapApp('enrich.directory', source.enrich.directory);
    const directory = (settings as { directory?: unknown } | undefined)?.directory;
    if (typeof directory === 'string') unsetUsed(`${kind.kind}.directory`, directory);
    for (const [key, reason] of kind.check?.(settings, apps) ?? []) {
      errors.push(new ConfigError(file, `${kind.kind}.${key}`, reason));
    }
    sources.push(source);
  }
  return sources.sort((a, b) => a.id.localeCompare(b.id));
}

/** Why `selfService.directory` cannot serve as the directory users sign in against, if it cannot. */
function directoryProblem(apps: AppConfig[], id: string, broken: Set<string>): string | undefined {
  const app = apps.find((a) => a.id === id);
  if (!app) {
    if (broken.has(id)) return undefined;
    const ldap = apps.filter((a) => a.kind === 'ldap').map((a) => a.id);
    return `no app "${id}" (${ldap.length ? `ldap apps: ${ldap.join(', ')}` : 'there is no ldap app'})`;
  }
  if (app.kind !== 'ldap') return `"${id}" is a ${app.kind} app; it must be an ldap app (users sign in against it)`;
  if (!app.enabled) return `"${id}" is disabled (enabled: false); self-service needs it`;
  return undefined;
}

function kindList(): string {
  return Object.keys(targetKinds).join(', ');
}

function adapterOf(kind: string): TargetAdapter {
  return targetKinds[kind as keyof typeof targetKinds] as TargetAdapter;
}

const traitsOf = (kind: string): KindTraits => adapterOf(kind);

function isMapping(value: unknown): value is Record<string, unknown> {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}

type Path = (string | number)[];

interface YamlFile {
  /** The parsed tree, `${ENV}` references resolved where set. */
  tree: unknown;
  /** Where a reference to an unset variable is left (reported in `envErrors`). */
  unresolved: Path[];
  envErrors: ConfigError[];
}

/**
 * Reads and parses one file. A syntax error is reported at its line and column and stops
 * there (`undefined`); unset variables are returned, not reported, for the caller to judge.
 */
function readYaml(file: string, env: NodeJS.ProcessEnv, errors: ConfigError[]): YamlFile | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    errors.push(new ConfigError(file, '', `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`));
    return undefined;
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  // Only the first: the errors after a syntax error are mostly its echoes.
  const syntax = doc.errors[0];
  if (syntax) {
    const at = syntax.linePos?.[0];
    const reason = syntax.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? syntax.code;
    errors.push(new ConfigError(file, at ? `line ${at.line}, column ${at.col}` : '', `YAML syntax error: ${reason}`));
    return undefined;
  }
  let tree: unknown;
  try {
    tree = doc.toJS();
  } catch (err) {
    // e.g. an alias expanded too often ("billion laughs"): yaml refuses to build the tree.
    errors.push(new ConfigError(file, '', `YAML: ${(err as Error).message}`));
    return undefined;
  }
  const resolved = resolveEnv(tree, file, env);
  return { tree: resolved.value, unresolved: resolved.unresolved, envErrors: resolved.errors };
}

/**
 * Validates `tree` and reports every issue as file, key and reason, except issues at or
 * under a path in `skip` (values holding an unset `${VAR}`, reported once as such).
 */
function validate<T extends z.ZodType>(
  schema: T,
  tree: unknown,
  file: string,
  errors: ConfigError[],
  skip: readonly Path[] = [],
): z.output<T> | undefined {
  // Zod's issue for an unknown key does not say which keys were expected there; its error
  // hook still sees the object schema, so note the keys by path on the way.
  const expected = new Map<string, string[]>();
  const result = schema.safeParse(tree, {
    error: (issue) => {
      const shape = issue.inst && 'shape' in issue.inst ? (issue.inst.shape as object) : undefined;
      if (issue.code === 'unrecognized_keys' && shape) expected.set(formatPath(issue.path ?? []), Object.keys(shape));
      return undefined;
    },
  });
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    if (skip.some((p) => startsWith(issue.path, p))) continue;
    if (issue.code === 'unrecognized_keys') {
      const keys = expected.get(formatPath(issue.path)) ?? [];
      for (const key of issue.keys) {
        errors.push(new ConfigError(file, formatPath([...issue.path, key]), unknownKey(key, keys)));
      }
    } else {
      errors.push(new ConfigError(file, formatPath(issue.path), issue.message));
    }
  }
  return undefined;
}

function didYouMean(word: unknown, candidates: readonly string[]): string {
  const guess = typeof word === 'string' ? closest(word, candidates) : undefined;
  return guess ? ` (did you mean "${guess}"?)` : '';
}

function unknownKey(key: string, expected: readonly string[]): string {
  const guess = closest(key, expected);
  return [
    `unknown key "${key}"`,
    guess ? ` (did you mean "${guess}"?)` : '',
    expected.length ? ` — expected one of: ${expected.join(', ')}` : '',
  ].join('');
}

function startsWith(path: readonly PropertyKey[], prefix: readonly PropertyKey[]): boolean {
  return prefix.length <= path.length && prefix.every((p, i) => p === path[i]);
}

/** The tree without the values at exactly `paths` (so their defaults apply). */
function without(tree: unknown, paths: readonly Path[]): unknown {
  const drop = (at: Path) => paths.some((p) => p.length === at.length && startsWith(at, p));
  const walk = (node: unknown, at: Path): unknown => {
    if (Array.isArray(node)) return node.flatMap((item, i) => (drop([...at, i]) ? [] : [walk(item, [...at, i])]));
    if (!isMapping(node)) return node;
    return Object.fromEntries(
      Object.entries(node).flatMap(([k, v]) => (drop([...at, k]) ? [] : [[k, walk(v, [...at, k])]])),
    );
  };
  return walk(tree, []);
}

/**
 * One app file → AppConfig, or undefined with its errors reported. Unset `${VAR}`s are
 * errors in an enabled app; in a disabled one they are allowed (it never runs) and the
 * values holding them go unchecked, while everything else in the file is still checked.
 */
function parseApp(yaml: YamlFile, file: string, ctx: SchemaContext, errors: ConfigError[]): AppConfig | undefined {
  const { tree, unresolved } = yaml;
  if (!isMapping(tree)) {
    errors.push(new ConfigError(file, '', 'expected a mapping of keys (id, kind, ...)'));
    return undefined;
  }
  const enabled = tree.enabled !== false;
  if (enabled) errors.push(...yaml.envErrors);
  const kind = tree.kind;
  if (typeof kind !== 'string' || !(kind in targetKinds)) {
    errors.push(
      new ConfigError(
        file,
        'kind',
        kind === undefined
          ? `required (one of: ${kindList()})`
          : `unknown kind "${String(kind)}"${didYouMean(kind, Object.keys(targetKinds))} (known: ${kindList()})`,
      ),
    );
    return undefined;
  }
  const adapter = adapterOf(kind);
  if (!(kind in tree)) {
    errors.push(new ConfigError(file, kind, `a ${kind} app needs its "${kind}:" block`));
    return undefined;
  }
  // An app's id is how everything else refers to it: it must be set, even in a disabled app.
  const idUnset = yaml.envErrors.find((e) => e.key === 'id');
  if (idUnset && !enabled) {
    errors.push(new ConfigError(file, 'id', `${idUnset.reason}: an app's id must be set even when it is disabled`));
  }
  const skip = unresolved;
  const before = errors.length;
  let parsed = validate(appSchemaFor(adapter, ctx), tree, file, errors, skip);
  if (idUnset || (enabled && unresolved.length > 0)) return undefined;
  if (!parsed && errors.length === before && unresolved.length > 0) {
    // Disabled, and only the unset values failed: keep the app (its id, enabled: false and
    // timing matter to other apps) with its block as written, since nothing will use it.
    const common = without(
      tree,
      skip.filter((p) => p[0] !== kind),
    );
    parsed = validate(appSchemaFor(adapter, ctx, z.unknown()), common, file, errors, skip);
  }
  if (!parsed) return undefined;
  const { [kind]: settings, ...common } = parsed as Record<string, unknown> &
    Omit<AppConfig, 'settings' | 'file' | 'category' | 'name'> & { name?: string };
  return {
    ...common,
    name: common.name ?? common.id,
    category: adapter.category,
    settings,
    file,
  } as AppConfig;
}

/** `after:` must name enabled apps and form no cycle. Apps in `broken` have had their say. */
function checkDependencies(apps: AppConfig[], broken: ReadonlySet<string>, errors: ConfigError[]): void {
  const byId = new Map(apps.map((a) => [a.id, a]));
  for (const app of apps) {
    app.after.forEach((dep, i) => {
      const target = byId.get(dep);
      if (!APP_ID.test(dep) || broken.has(dep)) return;
      if (dep === app.id) errors.push(new ConfigError(app.file, `after[${i}]`, 'an app cannot wait on itself'));
      else if (!target) errors.push(new ConfigError(app.file, `after[${i}]`, `no app has id "${dep}"`));
      else if (app.enabled && !target.enabled)
        errors.push(new ConfigError(app.file, `after[${i}]`, `"${dep}" is disabled, so this app would never run`));
    });
  }
  // Depth-first search for a cycle; report it once, on the first app in it.
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (id: string): boolean => {
    if (state.get(id) === 'done') return false;
    if (state.get(id) === 'visiting') {
      const cycle = [...stack.slice(stack.indexOf(id)), id];
      const app = byId.get(id);
      if (app) errors.push(new ConfigError(app.file, 'after', `dependency cycle: ${cycle.join(' → ')}`));
      return true;
    }
    state.set(id, 'visiting');
    stack.push(id);
    for (const dep of byId.get(id)?.after ?? []) if (byId.has(dep) && visit(dep)) return true;
    stack.pop();
    state.set(id, 'done');
    return false;
  };
  for (const app of apps) if (visit(app.id)) break;
}
