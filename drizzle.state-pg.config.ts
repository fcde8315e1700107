import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:state-pg`: state/schema_pg.ts to SQL migrations under migrations/state-pg. */
export default defineConfig({
  dialect: "postgresql",
  schema: "./state/schema_pg.ts",
  out: "./migrations/state-pg",
});
