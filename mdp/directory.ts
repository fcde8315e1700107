/**
 * What the broker says about its services, refreshed in the background, so
 * a caller (the gateway, the CLI) can refuse at once a call to a service
 * nobody serves and report the broker's and workers' health without a round
 * trip per request.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";
import { ServiceCallError } from "./errors.ts";
import { text } from "./protocol.ts";

/** Sends one Majordomo request and returns the final body. */
export type Call = (service: string, body: string[], timeoutMs?: number) => Promise<Frames>;

/** One service in the reply of `org.plantd.Broker` to `services` (broker/broker.ts builds it). */
export interface ServiceInfo {
  name: string;
  workers: number;
  idle: number;
  busy: number;
  queued: number;
}

/** Options of {@link ServiceDirectory}. */
export interface DirectoryOptions {
  /** How often to ask the broker. @default 1000 */
  refreshMs?: number;
  /** Timeout of one refresh. @default 1000 */
  timeoutMs?: number;
  /**
   * Whether the connection to the broker is up (MdpClient.connected):
   * false means known down, undefined that the transport cannot tell.
   */
  connected?: () => boolean | undefined;
  /**
   * Whether the broker lists its services (answers `org.plantd.Broker`):
   * undefined while unknown. A broker that does not (any but plantd-ts) is
   * not asked; it counts as reachable while connected and no service is
   * refused for want of a listed worker.
   */
  listed?: () => boolean | undefined;
}

const CONNECTION_DOWN = "the connection to the broker is down";
const UNLISTED = "the broker lists no services (it answers no org.plantd.Broker)";

/** The broker's list of services, kept fresh. */
export class ServiceDirectory {
  #call: Call;
  #refreshMs: number;
  #timeoutMs: number;
  #services = new Map<string, ServiceInfo>();
  #lastOk = 0;
  #lastError = "not asked yet";
  #timer: ReturnType<typeof setInterval> | undefined;
  #refreshing: Promise<void> | undefined;
  #connected: () => boolean | undefined;
  #listed: () => boolean | undefined;

  constructor(call: Call, options: DirectoryOptions = {}) {
    this.#call = call;
    this.#connected = options.connected ?? (() => undefined);
    this.#listed = options.listed ?? (() => true);
    this.#refreshMs = options.refreshMs ?? 1000;
    this.#timeoutMs = options.timeoutMs ?? 1000;
  }

  /** Starts refreshing; resolves after the first answer (or its failure). */
  async start(): Promise<void> {
    this.#timer = setInterval(() => this.refresh(), this.#refreshMs);
    await this.refresh();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Asks the broker now (one request at a time). */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#ask().finally(() => this.#refreshing = undefined);
    return this.#refreshing;
  }

  async #ask(): Promise<void> {
    // Asked anyway while unknown: the request waits for the answer, within its timeout.
    if (this.#listed() === false) return;
    try {
      const [reply] = await this.#call("org.plantd.Broker", ["services", "{}"], this.#timeoutMs);
      const parsed = JSON.parse(text(reply!));
      if (!parsed.success) throw new Error(String(parsed.error));
      this.#services = new Map(
        (parsed.data.services as ServiceInfo[]).map((s) => [s.name, s]),
      );
      this.#lastOk = Date.now();
    } catch (error) {
      this.#lastError = error instanceof Error ? error.message : String(error);
    }
  }

  /**
   * True when the connection is not known down and the broker answered
   * within three refresh periods. A closed connection (or one whose
   * heartbeats timed out) counts at once, not after the refreshes fail.
   */
  get brokerReachable(): boolean {
    if (this.#listed() === false) return this.#connected() !== false;
    return this.#connected() !== false &&
      Date.now() - this.#lastOk < this.#refreshMs * 3 + this.#timeoutMs;
  }

  get lastError(): string {
    if (this.#connected() === false) return CONNECTION_DOWN;
    return this.#listed() === false ? UNLISTED : this.#lastError;
  }

  get lastOk(): number {
    return this.#lastOk;
  }

  services(): ServiceInfo[] {
    return [...this.#services.values()];
  }

  workers(service: string): number {
    return this.#services.get(service)?.workers ?? 0;
  }

  /**
   * Fails fast with SERVICE_UNAVAILABLE while the broker connection is known
   * down (nothing would be sent; waiting for the timeout only delays the
   * answer), and when
   * the broker is reachable and knows no worker for `service`. The list may
   * be up to a refresh period old (a worker that just came back): before
   * refusing, it asks the broker again. When the broker is not reachable for
   * another reason the request is tried anyway and its own timeout decides.
   */
  async require(service: string): Promise<void> {
    if (this.#connected() === false) {
      throw new ServiceCallError(
        service,
        "SERVICE_UNAVAILABLE",
        `Cannot reach '${service}': ${CONNECTION_DOWN}`,
        { details: { service }, retryAfterS: 1 },
      );
    }
    if (this.#listed() === false) return;
    if (!this.brokerReachable || this.workers(service) > 0) return;
    await this.refresh();
    if (this.brokerReachable && this.workers(service) === 0) {
      throw new ServiceCallError(service, "SERVICE_UNAVAILABLE", `No worker serves '${service}'`, {
        details: { service },
      });
    }
  }
}
