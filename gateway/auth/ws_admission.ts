/**
 * Connection limits of the WebSocket endpoint: at most `maxTotal` open on
 * this gateway and `maxPerKey` per principal (per client address before one
 * is known). A ticket holds one place; releasing it twice is harmless.
 *
 * @module
 */

/** One admitted connection's place. */
export interface Ticket {
  /** The key it counts against. */
  readonly key: string;
  release(): void;
}

/** Counts open connections per key and in all. */
export class WsAdmission {
  readonly #maxTotal: number;
  readonly #maxPerKey: number;
  readonly #perKey = new Map<string, number>();
  #total = 0;

  constructor(maxTotal: number, maxPerKey: number) {
    this.#maxTotal = maxTotal;
    this.#maxPerKey = maxPerKey;
  }

  /** Open connections in all. */
  get open(): number {
    return this.#total;
  }

  /** A ticket, or which limit is reached. */
  admit(key: string): Ticket | "node" | "user" {
    if (this.#total >= this.#maxTotal) return "node";
    const count = this.#perKey.get(key) ?? 0;
    if (count >= this.#maxPerKey) return "user";
    this.#perKey.set(key, count + 1);
    this.#total++;
    let released = false;
    return {
      key,
      release: () => {
        if (released) return;
        released = true;
        this.#total--;
        const left = (this.#perKey.get(key) ?? 1) - 1;
        if (left <= 0) this.#perKey.delete(key);
        else this.#perKey.set(key, left);
      },
    };
  }

  /** Moves a ticket to another key (after a first-message login); the old one is released either way. */
  rekey(ticket: Ticket, key: string): Ticket | "node" | "user" {
    if (ticket.key === key) return ticket;
    ticket.release();
    return this.admit(key);
  }
}
