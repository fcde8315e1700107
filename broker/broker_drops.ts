/**
 * The log of messages the broker drops. A drop a peer caused (it sent
 * something the broker cannot act on) is a warning naming the peer, its
 * address and what was wrong, at most once per peer and reason per window:
 * its user sees timeouts or DISCONNECTs, the operator must see why. Drops
 * no peer caused (a client gone, a full send queue) stay at debug.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { DroppedFrom } from "./broker.ts";
import { LogWindow } from "../telemetry/log_window.ts";

/** Hex of a routing id (libzmq's are binary, 5 bytes starting 0x00). */
function hexId(id: Uint8Array): string {
  return Array.from(id.subarray(0, 64), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The drop observer that logs to `log`, one line per peer and reason per window. */
export function dropLog(
  log: Logger,
  window: LogWindow = new LogWindow(),
): (reason: string, from?: DroppedFrom) => void {
  return (reason, from) => {
    if (!from) return log.debug("dropped message: {reason}", { reason });
    const peer = hexId(from.id);
    const repeated = window.pass(`${peer}\0${reason}`);
    if (repeated === undefined) return;
    log.warn("dropped a message from peer {peer} ({address}): {reason}", {
      reason,
      peer,
      address: from.address ?? "unknown",
      ...(from.detail ? { detail: from.detail } : {}),
      answered: from.answered ?? "nothing",
      ...(repeated ? { repeated } : {}),
    });
  };
}
