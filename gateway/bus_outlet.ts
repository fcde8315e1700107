/**
 * Publishing on the buses from REST and WebSocket clients: one publisher per
 * bus, connected to its frontend when the gateway starts (a PUB socket drops
 * what it sends before its connection is up, so connecting on first use
 * would lose first messages). Only the buses configured in `publish_buses`
 * can be published to (the state bus carries the state service's change
 * events and is not among the defaults).
 *
 * @module
 */
import type { MessageForm } from "../bus/envelope.ts";
import { Publisher } from "../bus/publisher.ts";
import type { CurveClientKeys } from "../transport/curve.ts";
import { ApiError } from "./errors.ts";

/** Largest payload accepted for publishing (the buses' own frame limits may be lower). */
export const MAX_PUBLISH_BYTES = 1024 * 1024;

/** One message to publish. */
export interface Outgoing {
  bus: string;
  topic: string;
  /** Text, or base64 with `encoding: "base64"`. */
  payload: string;
  encoding?: "text" | "base64";
  /** `frames` (`[topic, payload]`, the default) or `single` (Go plantd's one frame). */
  form?: MessageForm;
}

function decodeBase64(text: string): Uint8Array {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new ApiError("BAD_REQUEST", "payload is not valid base64");
  }
}

/** Publishers for the buses clients may publish to. */
export class BusOutlet {
  readonly #frontends: Record<string, string>;
  readonly #publishers = new Map<string, Publisher>();
  /** Messages published, per bus (for metrics). */
  readonly published = new Map<string, number>();

  constructor(frontends: Record<string, string>, curve?: CurveClientKeys) {
    this.#frontends = frontends;
    for (const [bus, endpoint] of Object.entries(frontends)) {
      this.#publishers.set(bus, new Publisher(endpoint, curve ? { curve } : {}));
    }
  }

  /** Buses that take messages. */
  get buses(): string[] {
    return Object.keys(this.#frontends);
  }

  /** Publishes one message; returns its payload size. Throws ApiError on bad input. */
  publish(message: Outgoing): number {
    const publisher = Object.hasOwn(this.#frontends, message.bus)
      ? this.#publishers.get(message.bus)
      : undefined;
    if (publisher === undefined) {
      throw new ApiError(
        "NOT_FOUND",
        `Bus '${message.bus}' takes no messages from clients (publishable: ${
          this.buses.join(", ") || "none"
        })`,
      );
    }
    const payload = message.encoding === "base64"
      ? decodeBase64(message.payload)
      : new TextEncoder().encode(message.payload);
    if (payload.length > MAX_PUBLISH_BYTES) {
      throw new ApiError("PAYLOAD_TOO_LARGE", `Payload over ${MAX_PUBLISH_BYTES} bytes`);
    }
    // [topic, payload] unless asked otherwise: a single frame has no topic boundary, and
    // a subscriber would split it at its own prefix, cutting the topic.
    publisher.publish(message.topic, payload, message.form ?? "frames");
    this.published.set(message.bus, (this.published.get(message.bus) ?? 0) + 1);
    return payload.length;
  }

  async close(): Promise<void> {
    for (const publisher of this.#publishers.values()) await publisher.close();
    this.#publishers.clear();
  }
}
