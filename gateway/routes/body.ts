/**
 * Request bodies are UTF-8: one that is not is refused with 400, rather than
 * decoded with U+FFFD replacement characters and stored or forwarded as text
 * the client never sent.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";

// ignoreBOM: a text/plain value that starts with U+FEFF keeps it (other bodies drop it below).
const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

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
    // A leading byte order mark is part of a text/plain value; elsewhere it only
    // marks the encoding (RFC 8259 lets JSON parsers ignore it, JSON.parse does not).
    if (text.startsWith("\ufeff") && !c.req.header("content-type")?.startsWith("text/plain")) {
      text = text.slice(1);
    }
    // Hono keeps promises in its body cache (its type says string).
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(text);
  }
  await next();
};
