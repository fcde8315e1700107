/**
 * The client's durable requests (mdp/durable_key.ts) waiting for their reply,
 * and asking them again after a reconnection: a broker that restarted knows
 * nothing of the connection they were sent on, so each is sent again, marked
 * as asked again, with its key, its request id and the time its caller still
 * waits. The broker attaches it to the pending request, answers it from the
 * stored reply, or (never stored) journals it now.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import { markReask } from "./durable_key.ts";
import { writeBudget } from "./protocol.ts";

/** One durable request as sent. */
export interface DurableSent {
  /** The whole message, stack included: sent again as it is, re-stamped. */
  message: Frames;
  keyFrame: Uint8Array;
  deadlineFrame: Uint8Array;
  /** Date.now() when its caller stops waiting. */
  deadline: number;
  /** The connection (handshake count) it was last sent on; undefined: not sent yet. */
  sentOn: number | undefined;
  /** Whether its caller has its answer (then it is forgotten). */
  settled(): boolean;
}

/** Durable requests in flight, by request id. */
export class DurableResend {
  #sent = new Map<number, DurableSent>();
  #seen: number | undefined;

  get size(): number {
    return this.#sent.size;
  }

  add(id: number, sent: DurableSent): void {
    this.#sent.set(id, sent);
  }

  delete(id: number): void {
    this.#sent.delete(id);
  }

  /**
   * When the connection changed since the last look (`handshakes` moved),
   * every request sent on an earlier connection is re-stamped, marked asked
   * again, and handed to `resend`. Settled ones are forgotten on the way.
   */
  check(handshakes: number | undefined, resend: (sent: DurableSent, id: number) => void): void {
    if (handshakes === undefined || handshakes === this.#seen) return;
    this.#seen = handshakes;
    const now = Date.now();
    for (const [id, sent] of this.#sent) {
      if (sent.settled()) {
        this.#sent.delete(id);
        continue;
      }
      if (sent.sentOn === undefined || sent.sentOn === handshakes) continue;
      const left = sent.deadline - now;
      if (left <= 0) continue; // its timeout settles it
      markReask(sent.keyFrame);
      writeBudget(sent.deadlineFrame, left);
      sent.sentOn = handshakes;
      resend(sent, id);
    }
  }
}
