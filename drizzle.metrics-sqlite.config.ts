import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:metrics`: metrics/schema_sqlite.ts to SQL migrations under migrations/metrics-sqlite. */
export default defineConfig({
  dialect: "sqlite",
  schema: "./metrics/schema_sqlite.ts",
  out: "./migrations/metrics-sqlite",
});
