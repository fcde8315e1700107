/**
 * A worker set to dialect "auto" finds the one its broker accepts. MDP has no
 * answer to READY: a broker that accepted it sends HEARTBEATs to the idle
 * worker (or a REQUEST) in that dialect, one that did not stays silent (RFC 7
 * and RFC 18 drop invalid messages) or answers DISCONNECT. So each dialect is
 * tried in turn on a fresh connection (a fresh peer to the broker, which may
 * have written the last one off as invalid), and the first one the broker
 * answers in is kept for the worker's life.
 *
 * Order: plantd, RFC 7, RFC 18. plantd first keeps plantd-ts and Go plantd
 * brokers on the wire they get today. The RFC 18 READY comes last because it
 * is the only one without a leading empty frame, which RFC 7 brokers that
 * assert on frame 0 (the Guide's example) die on, while the other two are
 * plain invalid messages to an RFC 18 broker. A window counts only while the
 * connection is up: a broker that is down says nothing about dialects.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import { type Dialect, DIALECTS } from "./protocol.ts";

/** A worker's dialect setting: one dialect, or "auto" to find it. */
export type WorkerDialect = Dialect | "auto";

export const WORKER_DIALECTS: readonly WorkerDialect[] = [...DIALECTS, "auto"];

/** The order dialects are tried in (see the module's doc). */
export const DISCOVERY_ORDER: readonly Dialect[] = ["plantd", "mdp01", "mdp02"];

const MDPW01 = "MDPW01";
const MDPW02 = "MDPW02";
const decoder = new TextDecoder();

/** Whether a broker message is framed in `dialect` (header and command encoding). */
export function speaks(dialect: Dialect, frames: Frames): boolean {
  const at = frames[0]?.length === 0 ? 1 : 0;
  const header = frames[at];
  const command = frames[at + 1];
  if (!header || !command || header.length !== 6) return false;
  const name = decoder.decode(header);
  if (dialect === "mdp01") return name === MDPW01 && command.length === 1;
  if (name !== MDPW02) return false;
  return dialect === "mdp02" ? command.length === 1 : command.length > 1;
}

/** What a silent window led to. */
export interface Silence {
  /** The dialect the broker did not answer. */
  tried: Dialect;
  /** The dialect tried next. */
  next: Dialect;
  /** Every dialect went unanswered (the round starts over). */
  exhausted: boolean;
}

/** The state of one worker connection's search (see the module's doc). */
export class DialectDiscovery {
  #index = 0;
  #confirmed = false;

  /** The dialect being tried, or found. */
  get dialect(): Dialect {
    return DISCOVERY_ORDER[this.#index]!;
  }

  get confirmed(): boolean {
    return this.#confirmed;
  }

  /**
   * The capacity to announce in READY. Only the plantd READY carries it: the
   * brokers that read plantd read it or ignore it, while a strict RFC 7 or
   * RFC 18 broker refuses a READY with an extra frame.
   */
  capacity(capacity: number): number {
    return this.dialect === "plantd" ? capacity : 1;
  }

  /** The broker sent `frames`: true when that confirms the dialect being tried. */
  heard(frames: Frames): boolean {
    if (this.#confirmed || !speaks(this.dialect, frames)) return false;
    this.#confirmed = true;
    return true;
  }

  /** A window went by, connected, without a word from the broker: the next dialect. */
  silent(): Silence {
    const tried = this.dialect;
    this.#index = (this.#index + 1) % DISCOVERY_ORDER.length;
    return { tried, next: this.dialect, exhausted: this.#index === 0 };
  }
}
