import { defineConfig } from "drizzle-kit";

/** `deno task db:generate` turns state/schema.ts into SQL migrations under migrations/state. */
export default defineConfig({
  dialect: "sqlite",
  schema: "./state/schema.ts",
  out: "./migrations/state",
});
