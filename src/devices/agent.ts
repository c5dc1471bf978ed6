import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { errorMessage, RippleError } from '../errors.js';
import type { PendingItem } from './store.js';

/**
 * `ripple agent` — a small reference agent: what a real Mac or Windows agent does, and what the
 * tests drive. `enroll` registers this computer and keeps its id and token in a state file
 * readable by its owner only; `poll` prints the changes this computer has not caught up with
 * and, with `--ack`, acknowledges them as synced (a real agent does so once the user has given
 * the old and the new password at login).
 */

export const AGENT_USAGE = `  ripple agent enroll --url URL --token T --hostname H --user NAME [--state FILE]
                                       enroll this computer with an enrollment token of a kind: device app;
                                       its id and token go to FILE (owner-only)
  ripple agent poll [--ack | --fail DETAIL] [--json] [--state FILE]
                                       print the changes this computer has not caught up with, one per line
                                       (eventId occurredAt source prompt); --ack acknowledges each as synced,
                                       --fail reports each as failed with DETAIL
    state FILE default: $RIPPLE_AGENT_STATE, else ~/.ripple-agent.json`;

interface AgentState {
  url: string;
  deviceId: string;
  token: string;
  hostname: string;
  username: string;
}

const TIMEOUT_MS = 15_000;

const stateFile = (flag: string | undefined) =>
  flag || process.env.RIPPLE_AGENT_STATE || join(homedir(), '.ripple-agent.json');

/** Runs `ripple agent …`; `usage` prints a command-line problem and returns the exit code 2. */
export async function agent(args: string[], usage: (problem: string) => number): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'enroll') return enroll(rest, usage);
  if (sub === 'poll') return poll(rest, usage);
  return usage(`unknown agent command "${sub ?? ''}" (enroll or poll)`);
}

async function enroll(args: string[], usage: (problem: string) => number): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      hostname: { type: 'string' },
      user: { type: 'string' },
      state: { type: 'string' },
    },
  });
  for (const key of ['url', 'token', 'hostname', 'user'] as const) {
    if (!values[key]) return usage(`agent enroll needs --${key}`);
  }
  const url = values.url as string;
  if (!URL.canParse(url)) return usage(`--url "${url}" is not a URL (e.g. http://127.0.0.1:8080)`);
  const res = await call(url, 'v1/devices', values.token as string, {
    method: 'POST',
    body: JSON.stringify({ hostname: values.hostname, username: values.user }),
  });
  if (res.status !== 201) return refused('enrollment', res);
  const { deviceId, token } = JSON.parse(res.text) as { deviceId: string; token: string };
  const file = stateFile(values.state);
  const state: AgentState = {
    url,
    deviceId,
    token,
    hostname: values.hostname as string,
    username: values.user as string,
  };
  // Written whole, then moved into place: a crash never leaves half a token; owner-only from the start.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  console.log(`enrolled ${state.hostname} for ${state.username}: device ${deviceId} (state in ${file})`);
  return 0;
}

async function poll(args: string[], usage: (problem: string) => number): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ack: { type: 'boolean', default: false },
      fail: { type: 'string' },
      json: { type: 'boolean', default: false },
      state: { type: 'string' },
    },
  });
  if (values.ack && values.fail !== undefined) return usage('agent poll takes --ack or --fail, not both');
  const file = stateFile(values.state);
  let state: AgentState;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as AgentState;
  } catch (err) {
    throw new RippleError(
      'AGENT_NOT_ENROLLED',
      `cannot read ${file} (${errorMessage(err)}): run ripple agent enroll first`,
    );
  }
  const base = `v1/devices/${encodeURIComponent(state.deviceId)}/pending`;
  const res = await call(state.url, base, state.token, { method: 'GET' });
  if (res.status !== 200) return refused('poll', res);
  const items = JSON.parse(res.text) as PendingItem[];
  if (values.json) console.log(JSON.stringify(items));
  else for (const i of items) console.log(`${i.eventId} ${i.occurredAt} ${i.source} ${i.prompt}`);
  if (!values.ack && values.fail === undefined) return 0;
  const answer = values.ack ? { outcome: 'synced' } : { outcome: 'failed', detail: values.fail };
  let code = 0;
  for (const item of items) {
    const sent = await call(state.url, `${base}/${encodeURIComponent(item.eventId)}`, state.token, {
      method: 'POST',
      body: JSON.stringify(answer),
    });
    if (sent.status === 204) console.error(`${answer.outcome} ${item.eventId}`);
    else code = refused(`answer for ${item.eventId}`, sent);
  }
  return code;
}

async function call(
  base: string,
  path: string,
  token: string,
  init: { method: string; body?: string },
): Promise<{ status: number; text: string }> {
  const target = new URL(path, base.endsWith('/') ? base : `${base}/`);
  try {
    const res = await fetch(target, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.body ? { 'content-type': 'application/json' } : {}),
      },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    return { status: res.status, text: await res.text() };
  } catch (err) {
    const cause = err instanceof Error ? (err.cause as NodeJS.ErrnoException | undefined) : undefined;
    throw new RippleError('AGENT_UNREACHABLE', `cannot reach ${target}: ${cause?.code ?? errorMessage(err)}`, {
      cause: err,
    });
  }
}

function refused(what: string, res: { status: number; text: string }): number {
  const hint = res.status === 401 ? ' (enroll this computer again if its token was replaced)' : '';
  console.error(`ripple agent: ${what} refused: HTTP ${res.status} ${res.text}${hint}`);
  return 1;
}
