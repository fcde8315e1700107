import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:journal`: broker/journal_schema.ts to SQL migrations under migrations/journal. */
export default defineConfig({
  dialect: "sqlite",
  schema: "./broker/journal_schema.ts",
  out: "./migrations/journal",
});
