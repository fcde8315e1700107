import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:journal`: broker/journal_schema_pg.ts to SQL migrations under migrations/journal-pg. */
export default defineConfig({
  dialect: "postgresql",
  schema: "./broker/journal_schema_pg.ts",
  out: "./migrations/journal-pg",
});
