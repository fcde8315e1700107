/**
 * One turn of the event loop, for loops that must let I/O and timers run
 * between batches of work. `setTimeout(0)` is not it: Deno clamps and
 * coalesces it, and a yield took ~2 ms on this project's machine (the bus hub
 * then delivered a few hundred messages a second); `setImmediate` returns
 * after one turn in ~5 µs, with HTTP, WebSocket I/O and timers served meanwhile.
 *
 * @module
 */
import { setImmediate } from "node:timers";

/** Resolves after the event loop has had one turn. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
