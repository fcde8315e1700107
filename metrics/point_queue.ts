/**
 * The ingester's bounded buffer: a FIFO of points waiting for the database.
 * Batches taken out stay counted against the bound until they are written or
 * given back (a failed write puts its batch back in front), so the bound is
 * what the process holds in memory.
 *
 * @module
 */
import type { Point } from "./point.ts";

/** A FIFO of points with a bound on everything not yet written. */
export class PointQueue {
  readonly capacity: number;
  #items: Point[] = [];
  #head = 0;
  #returned: Point[][] = [];
  #returnedCount = 0;
  #inFlight = 0;

  constructor(capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`Queue capacity must be a positive integer, got ${capacity}`);
    }
    this.capacity = capacity;
  }

  /** Points waiting to be taken. */
  get pending(): number {
    return this.#items.length - this.#head + this.#returnedCount;
  }

  /** Points taken and not yet settled. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Everything held: pending and in flight. */
  get size(): number {
    return this.pending + this.#inFlight;
  }

  /** Adds a point; false (and nothing added) when the queue is full. */
  push(point: Point): boolean {
    if (this.size >= this.capacity) return false;
    this.#items.push(point);
    return true;
  }

  /** Takes up to `max` points, given-back batches first. Settle them with {@link done} or {@link giveBack}. */
  take(max: number): Point[] {
    let batch: Point[];
    if (this.#returned.length > 0) {
      const first = this.#returned[0]!;
      if (first.length <= max) {
        this.#returned.shift();
        batch = first;
      } else {
        batch = first.splice(0, max);
      }
      this.#returnedCount -= batch.length;
    } else {
      const end = Math.min(this.#items.length, this.#head + max);
      batch = this.#items.slice(this.#head, end);
      this.#head = end;
      if (this.#head === this.#items.length) {
        this.#items = [];
        this.#head = 0;
      } else if (this.#head > 65_536 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
    }
    this.#inFlight += batch.length;
    return batch;
  }

  /** `count` taken points are settled (written or dropped). */
  done(count: number): void {
    this.#inFlight -= count;
  }

  /** Puts taken points back in front, to be taken again first. */
  giveBack(points: Point[]): void {
    if (points.length === 0) return;
    this.#inFlight -= points.length;
    this.#returned.unshift(points);
    this.#returnedCount += points.length;
  }

  /** Empties the queue (pending points only); returns how many were removed. */
  clear(): number {
    const removed = this.pending;
    this.#items = [];
    this.#head = 0;
    this.#returned = [];
    this.#returnedCount = 0;
    return removed;
  }
}
