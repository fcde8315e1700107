/**
 * An in-memory bus source for unit tests of what reads batches from a bus
 * (the metrics ingester, the event recorder): messages added are received in
 * order; a read waits for the next add, and fails once closed.
 *
 * @module
 */
import type { BusMessage } from "../bus/envelope.ts";
import type { MessageSource } from "../metrics/ingester.ts";

export class QueueSource implements MessageSource {
  #queue: BusMessage[] = [];
  #wake?: () => void;
  #closed = false;

  /** Queues `messages` and wakes a waiting read. */
  add(...messages: BusMessage[]): void {
    this.#queue.push(...messages);
    this.#wake?.();
  }

  async receiveBatch(max = 1024): Promise<BusMessage[]> {
    while (this.#queue.length === 0) {
      if (this.#closed) throw new Error("closed");
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return this.#queue.splice(0, max);
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    return Promise.resolve();
  }
}
