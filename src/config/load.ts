import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { targetKinds } from '../../workers/index.js';
import { ConfigError, ConfigErrors } from '../errors.js';
import { loadSigningKeys, type SigningKeys } from '../signing/keys.js';
import type { TargetAdapter } from '../targets/adapter.js';
import { formatPath, resolveEnv } from './env.js';
import { APP_ID, appSchemaFor, serviceSchema } from './schema.js';
import type { SchemaContext } from './schema-context.js';
import type { AppConfig, ServiceConfig } from './types.js';

export interface LoadedConfig {
  dir: string;
  service: ServiceConfig;
  /** Keys from `signing:` in ripple.yaml, read and checked (undefined without that block). */
  signing?: SigningKeys | undefined;
  /** Every app file, enabled or not, in id order. */
  apps: AppConfig[];
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
  const serviceTree = readYaml(serviceFile, env, errors);
  let service: ServiceConfig | undefined;
  let signing: SigningKeys | undefined;
  if (serviceTree !== undefined) {
    service = validate(serviceSchema, serviceTree, serviceFile, errors);
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
        .filter((f) => /\.ya?ml$/.test(f))
        .sort()
    : [];
  const seen = new Map<string, string>();
  for (const name of files) {
    const file = join(appsDir, name);
    const tree = readYaml(file, env, errors);
    if (tree === undefined) continue;
    const app = parseApp(tree, file, ctx, errors);
    if (!app) continue;
    const first = seen.get(app.id);
    if (first) {
      errors.push(new ConfigError(file, 'id', `"${app.id}" is already used by ${first}`));
      continue;
    }
    seen.set(app.id, file);
    apps.push(app);
  }

  checkDependencies(apps, errors);
  if (service) {
    const sessionApp = apps.find((a) => a.enabled && a.category === 'session');
    if (sessionApp && !service.issuer) {
      errors.push(
        new ConfigError(
          serviceFile,
          'issuer',
          `required by ${sessionApp.kind} app "${sessionApp.id}" (Ripple's public URL)`,
        ),
      );
    }
    if (sessionApp && !service.signing) {
      errors.push(
        new ConfigError(
          serviceFile,
          'signing',
          `required by ${sessionApp.kind} app "${sessionApp.id}" (keys to sign with)`,
        ),
      );
    }
    for (const kind of Object.keys(service.workers.concurrency)) {
      if (!(kind in targetKinds)) {
        errors.push(new ConfigError(serviceFile, `workers.concurrency.${kind}`, `unknown kind (known: ${kindList()})`));
      }
    }
  }
  if (errors.length > 0 || !service) throw new ConfigErrors(errors);
  apps.sort((a, b) => a.id.localeCompare(b.id));
  return { dir: root, service, signing, apps };
}

function kindList(): string {
  return Object.keys(targetKinds).join(', ');
}

function readYaml(file: string, env: NodeJS.ProcessEnv, errors: ConfigError[]): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    errors.push(new ConfigError(file, '', `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`));
    return undefined;
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) errors.push(new ConfigError(file, '', `YAML: ${e.message.split('\n')[0]}`));
    return undefined;
  }
  const tree: unknown = doc.toJS();
  const resolved = resolveEnv(tree, file, env);
  // A disabled app never runs, so its secrets need not be set (its other keys are still checked).
  const disabled = !!tree && typeof tree === 'object' && (tree as Record<string, unknown>).enabled === false;
  if (disabled) return resolved.value;
  errors.push(...resolved.errors);
  return resolved.errors.length > 0 ? undefined : resolved.value;
}

function validate<T extends z.ZodType>(
  schema: T,
  tree: unknown,
  file: string,
  errors: ConfigError[],
): z.output<T> | undefined {
  const result = schema.safeParse(tree);
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    errors.push(new ConfigError(file, formatPath(issue.path), issueReason(issue)));
  }
  return undefined;
}

function issueReason(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown key(s): ${issue.keys.join(', ')}`;
  return issue.message;
}

function parseApp(tree: unknown, file: string, ctx: SchemaContext, errors: ConfigError[]): AppConfig | undefined {
  if (!tree || typeof tree !== 'object' || Array.isArray(tree)) {
    errors.push(new ConfigError(file, '', 'expected a mapping of keys (id, kind, ...)'));
    return undefined;
  }
  const kind = (tree as Record<string, unknown>).kind;
  if (typeof kind !== 'string' || !(kind in targetKinds)) {
    errors.push(
      new ConfigError(
        file,
        'kind',
        kind === undefined
          ? `required (one of: ${kindList()})`
          : `unknown kind "${String(kind)}" (known: ${kindList()})`,
      ),
    );
    return undefined;
  }
  const adapter = targetKinds[kind as keyof typeof targetKinds] as TargetAdapter;
  if (!(kind in tree)) {
    errors.push(new ConfigError(file, kind, `a ${kind} app needs its "${kind}:" block`));
    return undefined;
  }
  const parsed = validate(appSchemaFor(adapter, ctx), tree, file, errors) as
    | (Record<string, unknown> & Omit<AppConfig, 'settings' | 'file' | 'category' | 'name'> & { name?: string })
    | undefined;
  if (!parsed) return undefined;
  const { [kind]: settings, ...common } = parsed;
  return {
    ...common,
    name: common.name ?? common.id,
    category: adapter.category,
    settings,
    file,
  } as AppConfig;
}

/** `after:` must name enabled apps and form no cycle. */
function checkDependencies(apps: AppConfig[], errors: ConfigError[]): void {
  const byId = new Map(apps.map((a) => [a.id, a]));
  for (const app of apps) {
    app.after.forEach((dep, i) => {
      const target = byId.get(dep);
      if (!APP_ID.test(dep)) return;
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
