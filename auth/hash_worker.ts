/**
 * A Web Worker of {@link HashPool}: runs argon2id (auth/secrets.ts, same
 * parameters) off the gateway's event loop. One request at a time, in order.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { HashReply, HashRequest } from "./hash_pool.ts";
import { hashPassword, verifyPassword } from "./secrets.ts";

self.onmessage = async (event: MessageEvent<HashRequest>) => {
  const request = event.data;
  try {
    const value = request.op === "hash"
      ? await hashPassword(request.password)
      : await verifyPassword(request.password, request.hash);
    self.postMessage({ id: request.id, value } satisfies HashReply);
  } catch (error) {
    self.postMessage({ id: request.id, error: String(error) } satisfies HashReply);
  }
};
