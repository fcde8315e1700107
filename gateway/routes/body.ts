/**
 * Request bodies: of a type a browser cannot send cross-site without a
 * preflight (415 otherwise), and UTF-8: one that is not is refused with 400,
 * rather than decoded with U+FFFD replacement characters and stored or
 * forwarded as text the client never sent.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
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

/** JSON and the `+json` types of RFC 6839 (what Hono's JSON validator reads). */
const JSON_MEDIA = /^application\/([\w.-]+\+)?json$/i;
const JSON_ONLY = ["application/json"] as const;
const JSON_OR_TEXT = ["application/json", "text/plain"] as const;

/**
 * The body types `method` on `path` accepts. A form or `text/plain` POST is
 * a "simple request" a page of any origin can send without a preflight; a
 * PUT never is (its method needs one, and the gateway answers no preflight),
 * so the state PUT may keep taking a value as plain text.
 */
export function acceptedBodyTypes(method: string, path: string): readonly string[] {
  return method === "PUT" && path.startsWith("/api/state/") ? JSON_OR_TEXT : JSON_ONLY;
}

/** Whether a `content-type` header value is one of `accepted` (parameters such as charset allowed). */
export function bodyTypeAccepted(type: string, accepted: readonly string[]): boolean {
  const media = type.split(";")[0]!.trim().toLowerCase();
  return JSON_MEDIA.test(media) || (accepted.includes("text/plain") && media === "text/plain");
}

/**
 * Refuses with 415 a POST, PUT or PATCH whose content type is not accepted,
 * or that sends a body without one (a body-less request needs none). DELETE
 * bodies are read by no route.
 */
export function checkBodyType(c: Context): void {
  const method = c.req.method;
  if (method !== "POST" && method !== "PUT" && method !== "PATCH") return;
  const type = c.req.header("content-type");
  const accepted = acceptedBodyTypes(method, c.req.path);
  if (type === undefined ? !hasBody(c.req.raw) : bodyTypeAccepted(type, accepted)) return;
  const list = accepted.join(", ");
  throw new ApiError(
    "UNSUPPORTED_MEDIA_TYPE",
    type === undefined
      ? `A body needs a content type: send ${list}`
      : `Content type '${type.slice(0, 100)}' is not accepted: send ${list}`,
    { accepted: [...accepted] },
    method === "PUT" ? {} : { [method === "POST" ? "Accept-Post" : "Accept-Patch"]: list },
  );
}

function hasBody(request: Request): boolean {
  return request.body !== null && request.headers.get("content-length") !== "0";
}
