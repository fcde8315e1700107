/**
 * plantd pub/sub buses: named XSUB/XPUB proxies forwarding natively, with
 * capture, statistics and per-topic counts; publishers and subscribers that
 * speak both plantd message forms.
 *
 * @example
 * ```ts
 * import { Bus, Publisher, Subscriber } from "./mod.ts";
 * const bus = Bus.start({ name: "metric", frontend: "tcp://127.0.0.1:*", backend: "tcp://127.0.0.1:*" });
 * const subscriber = new Subscriber(bus.backend, { bus: "metric", topics: ["org.plantd.Metric"] });
 * const publisher = new Publisher(bus.frontend);
 * publisher.publish("org.plantd.Metric", '{"device":"d","channel":"c","value":1.5}');
 * ```
 *
 * @module
 */
export { Bus, type BusEvent, type BusOptions, BusSet, type BusSnapshot } from "./bus.ts";
export { CaptureCounter, type CaptureTotals, type Count, OTHER_TOPIC } from "./capture.ts";
export {
  type BusMessage,
  decodeMessage,
  encodeFrames,
  encodeSingle,
  type MessageForm,
  PrefixSet,
} from "./envelope.ts";
export { BusProxy, type ProxyStatistics, type SideStatistics } from "../transport/proxy.ts";
export { Publisher, type PublisherOptions } from "./publisher.ts";
export { Subscriber, type SubscriberOptions } from "./subscriber.ts";
