/**
 * Talking to a bus without the gateway: subscribing on its backend and
 * publishing on its frontend.
 *
 * Publishing uses an XPUB socket rather than PUB so that it can see the
 * subscriptions the bus forwards upstream: a message is sent once some
 * subscriber's prefix matches its topic (or after `waitMs` with none, when
 * ZeroMQ drops it). A plain PUB socket would drop a message published before
 * its connection and the subscriptions were through, so `plant pub` right
 * after `plant sub` would be lost at random.
 *
 * @module
 */
import { gatewayConfig } from "../config/components.ts";
import { encodeFrames, encodeSingle, type MessageForm } from "../bus/envelope.ts";
import { Subscriber } from "../bus/subscriber.ts";
import type { CurveClientKeys } from "../transport/curve.ts";
import { openXPub } from "../transport/pubsub.ts";
import { payloadLine, type SubscribeOptions } from "./backend.ts";
import { probe } from "./net.ts";
import { waitAtMost } from "../support/wait_at_most.ts";

/** The envelopes the gateway splits single-frame messages at, by default. */
const ENVELOPES = gatewayConfig.schema.shape.envelopes.parse(undefined);

/** Subscribes on a bus backend directly until `options.signal` aborts. */
export async function subscribeDirect(
  endpoint: string,
  bus: string,
  prefix: string,
  timeoutMs: number,
  options: SubscribeOptions,
  curve?: CurveClientKeys,
): Promise<void> {
  await probe(endpoint, `bus '${bus}' backend`, timeoutMs);
  const subscriber = new Subscriber(endpoint, {
    bus,
    topics: [prefix],
    envelopes: ENVELOPES,
    ...(curve ? { curve } : {}),
  });
  const onAbort = () => subscriber.close();
  options.signal.addEventListener("abort", onAbort, { once: true });
  try {
    options.onReady(endpoint);
    if (options.signal.aborted) return;
    for await (const message of subscriber) {
      options.onMessage({ bus, topic: message.topic, ...payloadLine(message.payload) });
      if (options.signal.aborted) break;
    }
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    await subscriber.close();
  }
}

/** What {@link publishDirect} did. */
export interface Published {
  bus: string;
  topic: string;
  endpoint: string;
  bytes: number;
  /** False when no subscriber's prefix matched within the wait: ZeroMQ dropped the message. */
  subscribed: boolean;
}

function matches(topic: Uint8Array, subscription: Uint8Array): boolean {
  if (subscription.length > topic.length) return false;
  for (let i = 0; i < subscription.length; i++) if (topic[i] !== subscription[i]) return false;
  return true;
}

/** Publishes one message on a bus frontend; see the module notes for the wait. */
export async function publishDirect(
  endpoint: string,
  bus: string,
  topic: string,
  payload: string,
  options: { form: MessageForm; waitMs: number; timeoutMs: number; curve?: CurveClientKeys },
): Promise<Published> {
  await probe(endpoint, `bus '${bus}' frontend`, options.timeoutMs);
  const socket = openXPub({
    linger: options.timeoutMs,
    ...(options.curve ? { curveClient: options.curve } : {}),
  });
  try {
    socket.attach(endpoint, "connect", "publisher");
    const head = new TextEncoder().encode(topic);
    const deadline = Date.now() + options.waitMs;
    let subscribed = false;
    while (!subscribed) {
      for (let frames = socket.tryReceive(); frames; frames = socket.tryReceive()) {
        const first = frames[0];
        // Subscription messages: 1 then the prefix (0 then the prefix: unsubscribe).
        if (first && first[0] === 1 && matches(head, first.subarray(1))) subscribed = true;
      }
      const left = deadline - Date.now();
      if (subscribed || left <= 0) break;
      await waitAtMost(socket.waitReadable(), left);
    }
    const frames = options.form === "frames"
      ? encodeFrames(topic, payload)
      : [encodeSingle(topic, payload)];
    await socket.send(frames);
    return {
      bus,
      topic,
      endpoint,
      bytes: frames.reduce((n, f) => n + f.length, 0),
      subscribed,
    };
  } finally {
    socket.close();
  }
}
