import { defineConfig } from "drizzle-kit";

/** `deno task db:generate:auth` turns auth/schema.ts into SQL migrations under migrations/auth. */
export default defineConfig({
  dialect: "sqlite",
  schema: "./auth/schema.ts",
  out: "./migrations/auth",
});
