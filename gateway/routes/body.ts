/**
 * Request bodies are UTF-8: one that is not is refused with 400, rather than
 * decoded with U+FFFD replacement characters and stored or forwarded as text
 * the client never sent.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";

const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads the body once, strictly, and leaves the text in Hono's body cache, so
 * validators and handlers (`c.req.json()`, `c.req.text()`) read that text.
 */
export const utf8Body: MiddlewareHandler = async (c, next) => {
  if (c.req.raw.body && !("text" in c.req.bodyCache)) {
    const bytes = await c.req.raw.arrayBuffer();
    let text: string;
    try {
      text = strict.decode(bytes);
    } catch {
      throw new ApiError("BAD_REQUEST", "Body is not valid UTF-8");
    }
    // Hono keeps promises in its body cache (its type says string).
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(text);
  }
  await next();
};
