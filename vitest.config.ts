import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // libtorch keeps thread pools per process: forks isolate them and survive native aborts better than threads.
    pool: "forks",
    // The memory tests check that GC finalizers free undisposed handles.
    poolOptions: { forks: { execArgv: ["--expose-gc"] } },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
