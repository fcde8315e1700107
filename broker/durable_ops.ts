/**
 * The dead-letter queue and the journal as operations of `org.plantd.Broker`
 * (body: operation, then a JSON object), answered in plantd's reply shape
 * `{success, data | error}` like the service's other operations:
 *
 * - `dlq-list` `{service?, limit?, after?}`: dead letters, oldest first, and
 *   `next`, the `after` of the next page, while there may be more (an empty
 *   list with `durable: false` from a broker without durable services);
 * - `dlq-show` `{id}`: one, with its body frames;
 * - `dlq-replay` `{id}`: routes it again (its reply is kept under the id);
 * - `dlq-delete` `{id}` / `dlq-purge` `{service?}`: deletes one / all;
 * - `durable-status` `{id}`: pending, replied (with the reply), dead or unknown;
 * - `journal`: rows by kind, storage and settings.
 *
 * A failure is `{success: false, error, code}` (mdp/broker_operations.ts).
 * Like `services`, they are open to every peer of the broker endpoint; the
 * gateway holds its callers to `dlq:read` and `dlq:write`.
 *
 * @module
 */
import type { DurableOperationCode } from "../mdp/broker_operations.ts";
import { keyBytes } from "../mdp/durable_key.ts";
import { text } from "../mdp/protocol.ts";
import { storageFailure } from "../storage/failure.ts";
import { type DurableRequests, frameJson, letterJson } from "./durable.ts";

type Reply =
  | { success: true; data: unknown }
  | { success: false; error: string; code: DurableOperationCode };

function fail(error: string, code: DurableOperationCode = "BAD_REQUEST"): Reply {
  return { success: false, error, code };
}

function params(frame: Uint8Array | undefined): Record<string, unknown> | undefined {
  if (!frame || frame.length === 0) return {};
  try {
    const parsed = JSON.parse(text(frame));
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
      ? parsed
      : undefined;
  } catch {
    return undefined;
  }
}

function idOf(p: Record<string, unknown>): string | undefined {
  return typeof p.id === "string" && keyBytes(p.id) ? p.id : undefined;
}

/** Runs one operation; never rejects (a failure is a `success: false` reply). */
export async function durableOperation(
  durable: DurableRequests | undefined,
  operation: string,
  body: Uint8Array | undefined,
): Promise<Reply> {
  if (!durable) {
    // Listing an empty queue is no error: a dashboard may ask any broker.
    if (operation === "dlq-list") {
      return { success: true, data: { count: 0, dead_letters: [], durable: false } };
    }
    return fail("Durable requests are not configured on this broker", "NOT_CONFIGURED");
  }
  const p = params(body);
  if (!p) return fail("Operation failed: the parameters are not a JSON object");
  const id = idOf(p);
  const needsId = operation !== "dlq-list" && operation !== "dlq-purge" && operation !== "journal";
  if (needsId && !id) return fail("Operation failed: id must be a request id (32 hex digits)");
  if (p.service !== undefined && typeof p.service !== "string") {
    return fail("Operation failed: service must be a string");
  }
  const service = p.service as string | undefined;
  try {
    switch (operation) {
      case "dlq-list": {
        const limit = p.limit === undefined ? 100 : Number(p.limit);
        if (!Number.isInteger(limit) || limit < 1) {
          return fail("Operation failed: limit must be a positive integer");
        }
        if (p.after !== undefined && typeof p.after !== "string") {
          return fail("Operation failed: after must be the cursor of a previous page");
        }
        const page = await durable.list({
          limit,
          ...(service ? { service } : {}),
          ...(p.after ? { after: p.after as string } : {}),
        });
        return {
          success: true,
          data: {
            count: page.letters.length,
            dead_letters: page.letters.map((l) => letterJson(l, false)),
            ...(page.next ? { next: page.next } : {}),
          },
        };
      }
      case "dlq-show": {
        const letter = await durable.show(id!);
        return letter
          ? { success: true, data: letterJson(letter, true) }
          : fail(`Dead letter '${id}' does not exist`, "NOT_FOUND");
      }
      case "dlq-replay": {
        const letter = await durable.replay(id!);
        return letter
          ? { success: true, data: { id, service: letter.service, replayed: true } }
          : fail(`Dead letter '${id}' does not exist (or is being replayed)`, "NOT_FOUND");
      }
      case "dlq-delete": {
        const deleted = await durable.forget({ key: id! });
        return deleted
          ? { success: true, data: { id, deleted: true } }
          : fail(`Dead letter '${id}' does not exist`, "NOT_FOUND");
      }
      case "dlq-purge": {
        const deleted = await durable.forget(service ? { service } : {});
        return { success: true, data: { deleted } };
      }
      case "durable-status": {
        const status = await durable.status(id!);
        const data = status.state === "replied"
          ? {
            id,
            state: status.state,
            stored_at: new Date(status.reply.storedAt).toISOString(),
            expires_at: new Date(status.reply.expiresAt).toISOString(),
            reply: status.reply.body.map(frameJson),
          }
          : status.state === "dead"
          ? { id, state: status.state, dead_letter: letterJson(status.letter, false) }
          : status.state === "pending"
          ? { id, state: status.state, attempts: status.failures.length }
          : { id, state: status.state };
        return { success: true, data };
      }
      default:
        return { success: true, data: await durable.stats() };
    }
  } catch (error) {
    // Bad cursors are RangeErrors; anything else comes from the journal's storage.
    if (error instanceof RangeError) return fail(`Operation failed: ${error.message}`);
    const cause = error instanceof Error ? error.message : String(error);
    return fail(
      `The broker's journal cannot be read or written (${storageFailure(error)}: ${cause})`,
      "JOURNAL_UNAVAILABLE",
    );
  }
}
