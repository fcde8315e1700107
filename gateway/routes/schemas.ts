/**
 * Schemas shared by the REST routes.
 *
 * @module
 */
import { z } from "@hono/zod-openapi";

/** Every error body: `{"error":{"code","message",…}}`. */
export const ErrorSchema = z.object({
  error: z.object({
    code: z.string().openapi({ example: "SCOPE_NOT_FOUND" }),
    message: z.string(),
  }).passthrough(),
}).openapi("Error");

const MEANING: Record<number, string> = {
  400: "Bad input",
  404: "Scope or key not found",
  409: "Scope exists already, or revision conflict",
  413: "Value or body too large",
  415: "Content type not accepted: application/json (text/plain also on PUT /api/state/…)",
  422: "Idempotency-Key already used for a different request (IDEMPOTENCY_KEY_REUSED)",
  429: "Rate limited",
  502: "The service answered with an error, or its worker was lost mid-request (WORKER_LOST)",
  503:
    "No worker serves the service, or the auth database cannot be reached (AUTH_STORE_UNAVAILABLE)",
  504: "The service did not answer in time",
  507: "A database is full (disk or size limit); nothing was written",
};

/** OpenAPI entries for the given error statuses. */
export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((status) => [status, {
      description: MEANING[status] ?? "Error",
      content: { "application/json": { schema: ErrorSchema } },
    }]),
  );
}

/** An OpenAPI response with a JSON body of `schema`. */
export const jsonResponse = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});
