/**
 * Helpers of the bus tests: waiting until subscriptions have reached the
 * publishers (ZeroMQ's slow-joiner window) with probe messages instead of
 * sleeps, bounded receives, and a scope that closes everything it tracked.
 *
 * @module
 */
import { sharedPoller } from "../transport/fd_poller.ts";
import type { BusMessage } from "./envelope.ts";
import type { Publisher } from "./publisher.ts";
import type { Subscriber } from "./subscriber.ts";

/** Probe topics start with this; {@link receiveN} skips them. */
export const PROBE = "~probe/";

let probes = 0;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Returns once every subscriber receives what every publisher publishes: each
 * subscriber adds a probe subscription after its real ones (subscriptions
 * travel in order), publishers publish probes until every subscriber has read
 * one, then the probe subscription is dropped. Fails after `timeoutMs`.
 */
export async function untilConnected(
  publishers: readonly Publisher[],
  subscribers: readonly Subscriber[],
  timeoutMs = 10_000,
): Promise<void> {
  const topic = `${PROBE}${++probes}/`;
  for (const subscriber of subscribers) subscriber.subscribe(topic);
  const deadline = Date.now() + timeoutMs;
  // seen[p][s]: subscriber s has read a probe of publisher p.
  const seen = publishers.map(() => subscribers.map(() => false));
  try {
    while (seen.some((row) => row.some((ok) => !ok))) {
      if (Date.now() > deadline) throw new Error(`subscriptions not through in ${timeoutMs} ms`);
      publishers.forEach((publisher, p) => {
        if (seen[p]!.some((ok) => !ok)) publisher.publish(topic, String(p));
      });
      await sleep(5);
      subscribers.forEach((subscriber, s) => {
        for (let m = subscriber.tryReceive(); m; m = subscriber.tryReceive()) {
          if (m.topic === topic) seen[Number(text(m.payload))]![s] = true;
          else if (!m.topic.startsWith(PROBE)) {
            throw new Error(`unexpected message on '${m.topic}' while probing`);
          }
        }
      });
    }
  } finally {
    for (const subscriber of subscribers) if (!subscriber.closed) subscriber.unsubscribe(topic);
  }
}

/** Reads `count` messages (probes skipped), failing after `timeoutMs`. */
export async function receiveN(
  subscriber: Subscriber,
  count: number,
  timeoutMs = 10_000,
): Promise<BusMessage[]> {
  const out: BusMessage[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < count) {
    const message = subscriber.tryReceive();
    if (message) {
      if (!message.topic.startsWith(PROBE)) out.push(message);
      continue;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(`received ${out.length} of ${count} messages within ${timeoutMs} ms`);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      subscriber.waitReadable(),
      new Promise((resolve) => timer = setTimeout(resolve, left)),
    ]);
    clearTimeout(timer);
  }
  return out;
}

/** Every message queued now (probes skipped), after `settleMs` for stragglers. */
export async function drain(subscriber: Subscriber, settleMs = 50): Promise<BusMessage[]> {
  const out: BusMessage[] = [];
  let idle = 0;
  while (idle < 3) {
    const message = subscriber.tryReceive();
    if (message) {
      idle = 0;
      if (!message.topic.startsWith(PROBE)) out.push(message);
      continue;
    }
    idle++;
    await sleep(settleMs);
  }
  return out;
}

/** Polls `condition` until it holds, failing after `timeoutMs`. */
export async function eventually(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

/**
 * Runs `body` with a `track` function; everything tracked is closed afterwards
 * (last first), whatever happened, then the poller is let go.
 */
export async function scope(
  body: (track: <T extends { close(): unknown }>(closable: T) => T) => Promise<void>,
): Promise<void> {
  const closables: Array<{ close(): unknown }> = [];
  try {
    await body((closable) => {
      closables.push(closable);
      return closable;
    });
  } finally {
    for (const closable of closables.reverse()) await closable.close();
    await sharedPoller().idle();
  }
}

const decoder = new TextDecoder();

/** A payload as text. */
export function text(payload: Uint8Array): string {
  return decoder.decode(payload);
}
