/**
 * The one duration grammar, for every duration in config files and in the HTTP API:
 * `0`, or one or more `<number><unit>` groups written together, largest unit first,
 * each unit at most once: `250ms`, `30s`, `1.5h`, `1h30m`, `2d12h`. Units: ms s m h d.
 * Numbers are decimal (`0.5s`), never signed or in exponent form. A bare number other
 * than 0 is refused: `delay: 5` reading as 5 ms surprised everyone who meant seconds.
 *
 * Hand-written because the common libraries (`ms`, `parse-duration`) accept exactly what
 * this refuses: bare numbers as milliseconds, spaces, units in any order.
 */

/** Units from largest to smallest, with their size in milliseconds. */
const UNITS = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
  ['ms', 1],
] as const;

/** One group; `ms` is tried before `m` so `5ms` is five milliseconds. */
const GROUP = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/y;
/** Longest digit run worth reading: anything longer is not a duration a person meant. */
const MAX_DIGITS = 20;

/** What the grammar accepts, for error messages. */
export const DURATION_HINT = 'a number and a unit (ms, s, m, h, d), largest unit first, e.g. 250ms, 30s, 15m, 1h30m';

export type DurationCheck = { ok: true; ms: number } | { ok: false; reason: string };

/** Reads a duration (YAML/JSON number or string) as whole milliseconds, or says what is wrong with it. */
export function checkDuration(value: unknown): DurationCheck {
  if (typeof value === 'number') {
    if (value === 0) return { ok: true, ms: 0 };
    if (!Number.isFinite(value) || value < 0)
      return { ok: false, reason: `${value} is not a duration (${DURATION_HINT})` };
    return { ok: false, reason: bareNumber(String(value)) };
  }
  if (typeof value !== 'string') {
    return { ok: false, reason: `expected a duration such as 30s or 15m, got ${describe(value)}` };
  }
  if (value === '0') return { ok: true, ms: 0 };
  if (/^\d+(\.\d+)?$/.test(value)) return { ok: false, reason: bareNumber(value) };
  if (/\s/.test(value)) {
    const together = value.replace(/\s+/g, '');
    const hint = parseGroups(together).ok ? ` (write ${together})` : '';
    return { ok: false, reason: `"${shown(value)}": no spaces in a duration${hint}` };
  }
  return parseGroups(value);
}

/** Milliseconds, or undefined when the value is not a duration (see checkDuration for why). */
export function parseDuration(value: string | number): number | undefined {
  const result = checkDuration(value);
  return result.ok ? result.ms : undefined;
}

/** Writes milliseconds in the grammar above (`1h30m`, `1s500ms`, `0`); parses back to the same value. */
export function formatDuration(ms: number): string {
  let rest = Math.round(Math.abs(ms));
  if (rest === 0) return '0';
  const parts: string[] = [];
  for (const [unit, size] of UNITS) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return `${ms < 0 ? '-' : ''}${parts.join('')}`;
}

function parseGroups(text: string): DurationCheck {
  const notADuration = { ok: false, reason: `"${shown(text)}" is not a duration (${DURATION_HINT})` } as const;
  let total = 0;
  let smallestSoFar = Number.POSITIVE_INFINITY;
  GROUP.lastIndex = 0;
  while (GROUP.lastIndex < text.length) {
    const at = GROUP.lastIndex;
    const match = GROUP.exec(text);
    if (!match) return notADuration;
    const [, number, unit] = match as unknown as [string, string, string];
    const size = UNITS.find(([u]) => u === unit)?.[1] as number;
    if (size >= smallestSoFar) {
      return { ok: false, reason: `"${shown(text)}": write the largest unit first, each once (e.g. 1h30m)` };
    }
    if (number.replace('.', '').length > MAX_DIGITS) return tooLong(text);
    smallestSoFar = size;
    total += Number(number) * size;
    if (at === GROUP.lastIndex) return notADuration;
  }
  if (text.length === 0) return notADuration;
  const ms = Math.round(total);
  return Number.isSafeInteger(ms) ? { ok: true, ms } : tooLong(text);
}

function bareNumber(text: string): string {
  return `${text} has no unit: write ${text}s, ${text}m or ${text}ms (only 0 may stand without one)`;
}

function tooLong(text: string): DurationCheck {
  return { ok: false, reason: `"${shown(text)}" is too long to be a duration (at most about 104 million days)` };
}

/** Error messages quote the value, but not a whole hostile megabyte of it. */
function shown(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : typeof value;
}
