import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:metrics`: metrics/schema_pg.ts to SQL migrations under migrations/metrics-pg. */
export default defineConfig({
  dialect: "postgresql",
  schema: "./metrics/schema_pg.ts",
  out: "./migrations/metrics-pg",
});
