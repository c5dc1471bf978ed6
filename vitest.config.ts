import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The benchmark's own check (it runs `npm run bench` and `--soak` at a tiny size, about a minute)
    // is `npm run bench:check`, not part of `npm test`, which stays short enough to run often.
    exclude: [...configDefaults.exclude, ...(process.env.RIPPLE_BENCH_CHECK ? [] : ['test/bench/**'])],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores, but the integration tests mostly wait on the real servers they start: three
    // files at a time took the suite from about 7 to about 5.5 minutes here, still green.
    maxWorkers: 3,
    reporters: ['default'],
  },
});
