/**
 * The formats directories keep a password's change time in, as epoch ms. The raw value is what
 * the watcher compares and stores (its cursor), since the directory orders by it.
 */
export type ChangeTimeFormat = 'generalizedTime' | 'filetime' | 'unix';

/** `20261127165353Z`, `20261127165353.123Z`, `20261127165353+0100` (RFC 4517 GeneralizedTime). */
const GENERALIZED = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:[.,](\d+))?(Z|[+-]\d{2}(?:\d{2})?)$/;

/** Windows FILETIME (AD `pwdLastSet`): 100-ns intervals since 1601-01-01. */
const FILETIME_EPOCH_OFFSET_MS = 11_644_473_600_000;

export function changeTimeMs(value: string, format: ChangeTimeFormat): number | undefined {
  if (format === 'unix') return /^\d+$/.test(value) ? Number(value) * 1000 : undefined;
  if (format === 'filetime') {
    if (!/^\d+$/.test(value) || value === '0') return undefined; // 0: "must change at next logon"
    return Number(BigInt(value) / 10_000n) - FILETIME_EPOCH_OFFSET_MS;
  }
  const m = GENERALIZED.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s = '00', frac = '', zone = 'Z'] = m;
  const offset = zone === 'Z' ? 'Z' : `${zone.slice(0, 3)}:${zone.slice(3, 5) || '00'}`;
  const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}.${frac.padEnd(3, '0').slice(0, 3)}${offset}`);
  return Number.isNaN(ms) ? undefined : ms;
}

/** The later of two raw values of one format. */
export function laterOf(a: string, b: string, format: ChangeTimeFormat): string {
  return (changeTimeMs(b, format) ?? 0) > (changeTimeMs(a, format) ?? 0) ? b : a;
}
