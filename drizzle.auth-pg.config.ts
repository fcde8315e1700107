import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:auth-pg`: auth/schema_pg.ts to SQL migrations under migrations/auth-pg. */
export default defineConfig({
  dialect: "postgresql",
  schema: "./auth/schema_pg.ts",
  out: "./migrations/auth-pg",
});
