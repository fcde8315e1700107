/**
 * The ZAP handler (RFC 27, ZeroMQ Authentication Protocol) of the native
 * context: a ROUTER bound at `inproc://zeromq.zap.01`, where libzmq asks, for
 * every CURVE handshake on a server socket, whether the client's public key
 * may connect.
 *
 * Each CURVE server socket registers a ZAP domain with its allow-list
 * ({@link registerZapDomain}); the socket's `ZMQ_ZAP_DOMAIN` picks it. The
 * handler is bound while at least one domain is registered and must be bound
 * before the first client handshakes: libzmq 4.3 accepts every CURVE client
 * when no handler is bound (zap_enforce_domain is off). Requests for a domain
 * nobody registered are refused.
 *
 * Requests arrive as `[routing id, "", "1.0", request id, domain, address,
 * identity, mechanism, credentials…]` (a REQ envelope on a ROUTER) and get
 * `[routing id, "", "1.0", request id, status code, status text, user id,
 * metadata]`. The user id of an accepted CURVE client is its Z85 public key.
 *
 * @module
 */
import { z85Encode } from "./curve.ts";
import type { Frames } from "./frames.ts";
import { ZMQ_ROUTER } from "./libzmq.ts";
import { NativeSocket } from "./native_socket.ts";

/** The endpoint libzmq sends ZAP requests to (RFC 27). */
export const ZAP_ENDPOINT = "inproc://zeromq.zap.01";

/** A client refused by ZAP. */
export interface ZapRefusal {
  /** The domain's endpoint label, e.g. "broker" or "bus:metric:frontend". */
  endpoint: string;
  /** "key not allowed", "mechanism NULL not allowed", … */
  reason: string;
  /** The client's IP address as libzmq reports it. */
  address: string;
  /** The client's public key (Z85), for CURVE. */
  key?: string;
}

/** What a registered domain accepts. */
export interface ZapPolicy {
  /** Label of the endpoint, for counting and logs. */
  endpoint: string;
  /** Client public keys (Z85) allowed; empty: any CURVE client. */
  allowedKeys: readonly string[];
  /** Called for every refused request. */
  onRefused?: (refusal: ZapRefusal) => void;
}

/** A registered domain; `release()` when its socket closes. */
export interface ZapRegistration {
  readonly domain: string;
  release(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const VERSION = encoder.encode("1.0");
const EMPTY = new Uint8Array(0);

interface Domain {
  endpoint: string;
  allowed: Set<string>;
  onRefused?: (refusal: ZapRefusal) => void;
}

class ZapHandler {
  readonly domains = new Map<string, Domain>();
  #socket: NativeSocket;
  #loop: Promise<void>;

  constructor() {
    this.#socket = new NativeSocket(ZMQ_ROUTER, { linger: 0 });
    try {
      this.#socket.bind(ZAP_ENDPOINT, "ZAP handler");
    } catch (error) {
      this.#socket.close();
      throw error;
    }
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    for await (const request of this.#socket) {
      try {
        const reply = this.answer(request);
        if (reply && !this.#socket.closed) this.#socket.trySend(reply);
      } catch {
        // A bad request or a refusal callback that threw: the handler must keep answering.
      }
    }
  }

  /** The reply to one request, or undefined for something that is not one. */
  answer(request: Frames): Frames | undefined {
    // [routing id, "", version, request id, domain, address, identity, mechanism, credentials…]
    const [routingId, delimiter, version, requestId, domainFrame, address, , mechanism] = request;
    if (!routingId || delimiter?.length !== 0 || !requestId) return undefined;
    const reply = (code: string, text: string, userId = ""): Frames => [
      routingId,
      EMPTY,
      VERSION,
      requestId,
      encoder.encode(code),
      encoder.encode(text),
      encoder.encode(userId),
      EMPTY,
    ];
    if (!version || decoder.decode(version) !== "1.0") return reply("400", "bad ZAP version");
    const name = decoder.decode(domainFrame ?? EMPTY);
    const domain = this.domains.get(name);
    const from = decoder.decode(address ?? EMPTY);
    const refuse = (reason: string, key?: string): Frames => {
      domain?.onRefused?.({
        endpoint: domain.endpoint,
        reason,
        address: from,
        ...(key ? { key } : {}),
      });
      return reply("400", reason);
    };
    if (!domain) return reply("400", "unknown ZAP domain");
    const kind = decoder.decode(mechanism ?? EMPTY);
    const credential = request[8];
    if (kind !== "CURVE" || credential?.length !== 32) {
      return refuse(`mechanism ${kind || "?"} not allowed`);
    }
    const key = z85Encode(credential);
    if (domain.allowed.size > 0 && !domain.allowed.has(key)) return refuse("key not allowed", key);
    return reply("200", "OK", key);
  }

  async close(): Promise<void> {
    // Unbinding frees the inproc name now; closing alone frees it later, on libzmq's reaper.
    this.#socket.unbind(ZAP_ENDPOINT);
    this.#socket.close();
    await this.#loop;
  }
}

let handler: ZapHandler | undefined;
let nextDomain = 0;

/**
 * Registers a ZAP domain with its policy, binding the handler if it is not
 * bound yet. Set the returned `domain` as the server socket's ZMQ_ZAP_DOMAIN.
 */
export function registerZapDomain(policy: ZapPolicy): ZapRegistration {
  handler ??= new ZapHandler();
  const active = handler;
  const domain = `plantd-${policy.endpoint}-${++nextDomain}`;
  active.domains.set(domain, {
    endpoint: policy.endpoint,
    allowed: new Set(policy.allowedKeys),
    ...(policy.onRefused ? { onRefused: policy.onRefused } : {}),
  });
  let released = false;
  return {
    domain,
    async release() {
      if (released) return;
      released = true;
      active.domains.delete(domain);
      if (active.domains.size === 0 && handler === active) {
        handler = undefined;
        await active.close();
      }
    },
  };
}

/** Whether the ZAP handler is bound (for tests). */
export function zapHandlerBound(): boolean {
  return handler !== undefined;
}
