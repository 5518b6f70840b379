import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A contract violation recorded by a provider stand-in fails the test that caused it.
    setupFiles: ['test/helpers/stand-in-guard.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: integration tests spawn servers; keep parallelism modest.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
