/**
 * Prometheus metrics of the buses of a process, read at scrape time from
 * each proxy's statistics and each capture counter.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { Bus, BusSnapshot } from "./bus.ts";

/** Scrapes within this window share one round of proxy statistics. */
const SNAPSHOT_REUSE_MS = 250;

/** Registers the bus metrics in `registry`; `buses` is read at every scrape. */
export function busMetrics(registry: Registry, buses: () => readonly Bus[]): void {
  const registers = [registry];
  let cached: { at: number; snapshots: Promise<BusSnapshot[]> } | undefined;
  const snapshots = (): Promise<BusSnapshot[]> => {
    const now = performance.now();
    if (!cached || now - cached.at > SNAPSHOT_REUSE_MS) {
      const taken = Promise.all(buses().map((bus) => bus.snapshot().catch(() => undefined)))
        .then((list) => list.filter((s): s is BusSnapshot => s !== undefined));
      cached = { at: now, snapshots: taken };
    }
    return cached.snapshots;
  };

  /** A metric per bus, computed from its snapshot. */
  const perBus = (
    kind: "counter" | "gauge",
    name: string,
    help: string,
    value: (s: BusSnapshot) => number | undefined,
  ) => {
    const collect = async function (this: Counter | Gauge) {
      this.reset();
      for (const snapshot of await snapshots()) {
        const v = value(snapshot);
        if (v === undefined) continue;
        if (this instanceof Gauge) this.set({ bus: snapshot.name }, v);
        else this.inc({ bus: snapshot.name }, v);
      }
    };
    const config = { name, help, labelNames: ["bus"], registers, collect };
    if (kind === "gauge") new Gauge(config);
    else new Counter(config);
  };

  perBus("gauge", "bus_up", "1 while the bus proxy is forwarding", (s) => s.running ? 1 : 0);
  perBus(
    "counter",
    "bus_proxy_restarts_total",
    "Times the native proxy loop exited on its own and was restarted",
    (s) => s.restarts,
  );
  perBus(
    "counter",
    "bus_published_frames_total",
    "Frames (message parts) received from publishers by the bus frontend",
    (s) => s.statistics.frontend.framesIn,
  );
  perBus(
    "counter",
    "bus_published_bytes_total",
    "Bytes received from publishers by the bus frontend",
    (s) => s.statistics.frontend.bytesIn,
  );
  perBus(
    "counter",
    "bus_forwarded_frames_total",
    "Frames handed to the bus backend (once, whatever the subscriber count)",
    (s) => s.statistics.backend.framesOut,
  );
  perBus(
    "counter",
    "bus_forwarded_bytes_total",
    "Bytes handed to the bus backend",
    (s) => s.statistics.backend.bytesOut,
  );
  perBus(
    "counter",
    "bus_subscription_messages_total",
    "Subscribe and unsubscribe messages forwarded upstream to publishers",
    (s) => s.statistics.backend.framesIn,
  );
  perBus(
    "counter",
    "bus_capture_messages_total",
    "Capture copies read by the in-process counter",
    (s) => s.capture?.totals.messages,
  );
  perBus(
    "gauge",
    "bus_capture_missed_frames",
    "Captured frames not read by the in-process counter: dropped at the capture high-water mark, or in flight",
    (s) => s.capture?.missedFrames,
  );

  const perTopic = (name: string, help: string, field: "messages" | "bytes") =>
    new Counter({
      name,
      help,
      labelNames: ["bus", "topic"],
      registers,
      async collect() {
        this.reset();
        for (const snapshot of await snapshots()) {
          for (const [topic, count] of snapshot.capture?.topics ?? []) {
            this.inc({ bus: snapshot.name, topic }, count[field]);
          }
        }
      },
    });
  perTopic(
    "bus_topic_messages_total",
    "Messages published per topic prefix (capture only)",
    "messages",
  );
  perTopic("bus_topic_bytes_total", "Bytes published per topic prefix (capture only)", "bytes");
}
