import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkDuration, formatDuration, parseDuration } from '../../src/config/duration.js';

const reasonOf = (value: unknown): string => {
  const r = checkDuration(value);
  if (r.ok) throw new Error(`${JSON.stringify(value)} was accepted as ${r.ms} ms`);
  return r.reason;
};

describe('duration grammar: 0, or <number><unit> groups, largest unit first', () => {
  it.each([
    ['0', 0],
    [0, 0],
    ['0s', 0],
    ['0ms', 0],
    ['250ms', 250],
    ['30s', 30_000],
    ['0.5s', 500],
    ['15m', 900_000],
    ['1.5h', 5_400_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['2d12h', 216_000_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['007s', 7_000],
  ])('%j → %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(checkDuration(text)).toEqual({ ok: true, ms });
  });

  it('refuses a bare number (other than 0) and says which unit to add', () => {
    // The bug: `delay: 5` was 5 ms, and a session `"ttl": 30` vanished after 30 ms.
    expect(parseDuration(5)).toBeUndefined();
    expect(parseDuration(30)).toBeUndefined();
    expect(parseDuration('15')).toBeUndefined();
    expect(reasonOf(5)).toMatch(/has no unit.*5s.*5ms/);
    expect(reasonOf('15')).toMatch(/has no unit.*15s.*15m/);
    expect(reasonOf(1.5)).toMatch(/has no unit/);
  });

  it('refuses spaces, naming the written-together form', () => {
    expect(reasonOf('5 m')).toMatch(/no spaces.*5m/);
    expect(reasonOf('1h 30m')).toMatch(/no spaces.*1h30m/);
    expect(reasonOf(' 5s')).toMatch(/no spaces/);
  });

  it('refuses units out of order or repeated', () => {
    expect(reasonOf('30m1h')).toMatch(/largest unit first/);
    expect(reasonOf('1h1h')).toMatch(/largest unit first/);
    expect(reasonOf('1s1m')).toMatch(/largest unit first/);
    expect(reasonOf('5ms1s')).toMatch(/largest unit first/);
  });

  it.each([
    '-1s',
    '+1s',
    '1e3s',
    '1E3s',
    '1e3',
    '0x10s',
    'NaN',
    'Infinity',
    'Infinitys',
    '',
    'm',
    's5',
    '.5s',
    '5.s',
    '1.5.5h',
    '5S',
    '5M',
    '5H',
    '5 minutes',
    '5min',
    '5sec',
    '1y',
    '1w',
    '١٢s',
    '5s\n',
    '5s;rm -rf /',
    '1h30',
    'null',
  ])('refuses %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
    expect(reasonOf(text)).toMatch(/duration|unit|spaces/);
  });

  it.each([NaN, Number.POSITIVE_INFINITY, -5, -0.5, null, undefined, true, {}, [], ['5s']])(
    'refuses the value %j',
    (value) => {
      expect(checkDuration(value).ok).toBe(false);
    },
  );

  it('refuses values too large to count in milliseconds exactly, and absurdly long digit runs', () => {
    expect(parseDuration('104249991d')).toBe(104_249_991 * 86_400_000);
    expect(reasonOf('104249992d')).toMatch(/too long/);
    expect(reasonOf(`${'9'.repeat(400)}d`)).toMatch(/too long/);
    expect(reasonOf(`1.${'5'.repeat(400)}h`)).toMatch(/duration|too long/);
  });

  it('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.stringMatching(/^[0-9.]{0,8}(ms|s|m|h|d| ){0,3}$/)), (text) => {
        const r = checkDuration(text);
        if (r.ok) expect(Number.isSafeInteger(r.ms) && r.ms >= 0).toBe(true);
        else expect(r.reason.length).toBeGreaterThan(0);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0'],
    [250, '250ms'],
    [1_500, '1s500ms'],
    [30_000, '30s'],
    [5_400_000, '1h30m'],
    [86_400_000, '1d'],
    [93_784_005, '1d2h3m4s5ms'],
  ])('%d ms → %s', (ms, text) => expect(formatDuration(ms)).toBe(text));

  it('writes what parses back to the same value (every whole number of ms)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 10 * 86_400_000 }), fc.maxSafeNat()), (ms) => {
        expect(parseDuration(formatDuration(ms))).toBe(ms);
      }),
      { numRuns: 2000 },
    );
  });
});
