/**
 * plantd without the gateway: Majordomo requests straight to the broker
 * (`--broker tcp://…`) and the buses directly. State operations go through
 * the same StateClient the gateway uses, so errors read the same in both modes.
 *
 * Any Majordomo broker will do: what it offers beyond plain MDP is asked first
 * (MdpClient.features). Services are listed through `org.plantd.Broker` on a
 * plantd-ts broker, through `mmi.service` (RFC 8) on another broker that
 * answers it, and not at all on one that does not, with a message saying so;
 * `call`, `echo` and `state` need neither (docs/interop.md).
 *
 * @module
 */
import { MdpClient } from "../mdp/client.ts";
import { ServiceDirectory } from "../mdp/directory.ts";
import { frameToJson } from "../mdp/frame_json.ts";
import { type BrokerFeatures, EXTENSION } from "../mdp/negotiation.ts";
import type { Dialect } from "../mdp/protocol.ts";
import { ECHO_SERVICE } from "../workers/echo.ts";
import type { CurveClientKeys } from "../transport/curve.ts";
import { callFailure, MdpError } from "../mdp/errors.ts";
import { text } from "../mdp/protocol.ts";
import { BROKER_SERVICE_NAME } from "../mdp/broker_operations.ts";
import { type HistoryRecord, StateClient } from "../state/client.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { ALARMS_SERVICE } from "../alarms/rules.ts";
import { type Check, type Health, healthOf } from "../telemetry/health.ts";
import type {
  AlarmsOperation,
  Backend,
  DlqOperation,
  Entry,
  Frame,
  ServiceRow,
  SubscribeOptions,
} from "./backend.ts";
import { subscribeDirect } from "./bus_direct.ts";
import { apiFailure, CliError } from "./errors.ts";
import { probe } from "./net.ts";

const BROKER_SERVICE = "org.plantd.Broker";

/** Services the broker answers itself: never refused for lack of workers. */
function brokerOwn(service: string): boolean {
  return service.startsWith("mmi.") || service === BROKER_SERVICE;
}

/** What `services` asks `mmi.service` about when given no names. */
const WELL_KNOWN_SERVICES = [ECHO_SERVICE, STATE_SERVICE];

/**
 * The broker at `endpoint` (or the active one of a pair's endpoints);
 * `busEndpoint` names a bus's backend for subscribe.
 */
export class BrokerBackend implements Backend {
  readonly target: string;
  #endpoints: readonly string[];
  #client: MdpClient;
  #timeoutMs: number;
  #directory: ServiceDirectory;
  #state: StateClient;
  #busEndpoint: (bus: string) => string;
  #probed: Promise<void> | undefined;
  #curve: CurveClientKeys | undefined;
  /** What the broker offers beyond plain MDP, once {@link #run} has asked. */
  #features: BrokerFeatures | undefined;

  constructor(
    endpoint: string | readonly string[],
    timeoutMs: number,
    busEndpoint: (bus: string) => string,
    curve?: CurveClientKeys,
    dialect: Dialect = "plantd",
  ) {
    this.#endpoints = typeof endpoint === "string" ? [endpoint] : endpoint;
    this.target = this.#endpoints.join(",");
    this.#timeoutMs = timeoutMs;
    this.#busEndpoint = busEndpoint;
    this.#curve = curve;
    this.#client = new MdpClient(endpoint, {
      timeoutMs,
      dialect,
      probeTimeoutMs: Math.min(1000, timeoutMs),
      ...(curve ? { curve } : {}),
    });
    const call = (service: string, body: string[], ms?: number) =>
      this.#client.request(service, body, { timeoutMs: ms ?? timeoutMs });
    this.#directory = new ServiceDirectory(call, { timeoutMs });
    this.#state = new StateClient(call, this.#directory);
  }

  /**
   * Runs `work` once the broker is known to listen, what it offers is known
   * and, on a plantd-ts broker, its services are known.
   */
  async #run<T>(work: () => Promise<T>): Promise<T> {
    this.#probed ??= this.#probe().then(async () => {
      this.#features = await this.#learnFeatures();
      if (!this.#hasDirectory) return;
      await this.#directory.refresh();
      if (this.#directory.lastOk === 0) {
        throw apiFailure(
          "TIMEOUT",
          `the broker at ${this.target} did not answer within ${this.#timeoutMs} ms: ${this.#directory.lastError}`,
        );
      }
    });
    await this.#probed;
    try {
      return await work();
    } catch (error) {
      if (error instanceof MdpError) {
        const failure = callFailure(error);
        throw failure
          ? apiFailure(failure.code, error.message)
          : apiFailure("INTERNAL", "Internal error");
      }
      throw error;
    }
  }

  /** Fails fast when no broker listens; one of a pair listening is enough. */
  async #probe(): Promise<void> {
    const results = await Promise.allSettled(
      this.#endpoints.map((endpoint) => probe(endpoint, "broker", this.#timeoutMs)),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed && results.every((r) => r.status === "rejected")) throw failed.reason;
  }

  /** The broker's features, bounded by the timeout (a peer that is no ZMTP broker never answers). */
  async #learnFeatures(): Promise<BrokerFeatures> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.#client.features(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() =>
            reject(apiFailure(
              "TIMEOUT",
              `the broker at ${this.target} did not answer within ${this.#timeoutMs} ms (no Majordomo handshake)`,
            )), this.#timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the broker answers `org.plantd.Broker` (a plantd-ts broker). */
  get #hasDirectory(): boolean {
    return this.#features?.extensions.has(EXTENSION.brokerService) === true;
  }

  services(names: string[] = []): Promise<ServiceRow[]> {
    return this.#run(async () => {
      if (!this.#hasDirectory) return await this.#mmiServices(names);
      return this.#directory.services()
        .filter((s) => names.length === 0 || names.includes(s.name))
        .map(({ name, workers, idle, busy, queued }) => ({ name, workers, idle, busy, queued }))
        .sort((a, b) => a.name.localeCompare(b.name));
    });
  }

  /**
   * Services of a broker without `org.plantd.Broker`: those of `names` (or
   * the well-known plantd ones) that `mmi.service` says have a worker. It
   * tells no counts; a broker without MMI tells nothing, and says so.
   */
  async #mmiServices(names: string[]): Promise<ServiceRow[]> {
    const features = this.#features!;
    if (features.mmi === false) {
      throw new CliError(
        `the broker at ${this.target} cannot list its services: it is ${features.summary}, ` +
          `so it answers neither org.plantd.Broker nor mmi.service; 'plant call SERVICE OPERATION' still works`,
        "UNSUPPORTED",
      );
    }
    const asked = names.length > 0 ? names : WELL_KNOWN_SERVICES;
    const rows: ServiceRow[] = [];
    for (const name of asked) {
      if (await this.#mmiServed(name)) {
        rows.push({ name, workers: null, idle: null, busy: null, queued: null });
      }
    }
    return rows.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** `mmi.service` for `name`: true on 200. */
  async #mmiServed(name: string): Promise<boolean> {
    const reply = await this.#client.request("mmi.service", [name]);
    return text(reply[reply.length - 1] ?? new Uint8Array()) === "200";
  }

  /** Where a listing that is not the broker's own comes from, for a note; undefined when it is. */
  servicesSource(): string | undefined {
    if (!this.#features || this.#hasDirectory) return undefined;
    return `the broker at ${this.target} lists no services (it is ${this.#features.summary}); ` +
      "these answered 200 to mmi.service, worker counts unknown";
  }

  call(service: string, operation: string, json: string): Promise<Frame[]> {
    return this.#run(async () => {
      if (!brokerOwn(service)) await this.#require(service);
      else this.#refuseUnanswered(service);
      const frames = await this.#client.request(service, [operation, json]);
      return frames.map(frameToJson);
    });
  }

  /**
   * One JSON operation of a service that answers `{success, data}` or
   * `{success: false, code, error}`: its data, or its failure under the code
   * `codeOf` makes of the reply's (`refused` when it gives no message).
   */
  #ask(
    service: string,
    operation: string,
    params: Record<string, unknown>,
    refused: string,
    codeOf: (code: unknown) => string,
  ): Promise<Record<string, unknown>> {
    return this.#run(async () => {
      const [frame] = await this.#client.request(service, [operation, JSON.stringify(params)]);
      const reply = JSON.parse(text(frame!));
      if (reply?.success === true) return reply.data as Record<string, unknown>;
      throw apiFailure(codeOf(reply?.code), String(reply?.error ?? refused));
    });
  }

  dlq(
    operation: DlqOperation,
    params: Record<string, string | number>,
  ): Promise<Record<string, unknown>> {
    return this.#ask(
      BROKER_SERVICE_NAME,
      `dlq-${operation}`,
      params,
      "the broker refused the operation",
      (code) => code === "NOT_FOUND" || code === "BAD_REQUEST" ? code : "SERVICE_UNAVAILABLE",
    );
  }

  alarms(
    operation: AlarmsOperation,
    params: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    // Straight to the service: no gateway authenticates anyone, so who acknowledges
    // is the local user, as the service records it.
    const request = operation === "ack"
      ? { ...params, by: `cli:${Deno.env.get("USER") ?? "unknown"}` }
      : params;
    return this.#ask(
      ALARMS_SERVICE,
      operation,
      request,
      "the alarms service refused the operation",
      (code) => typeof code === "string" ? code : "UPSTREAM_ERROR",
    );
  }

  health(): Promise<Health> {
    return this.#run(async () => {
      const now = new Date().toISOString();
      const check = (name: string, up: boolean, output: string): Check => ({
        name,
        status: up ? "UP" : "DOWN",
        lastUpdated: now,
        ...(up ? {} : { output }),
      });
      const served = await this.#stateServed();
      let store = { ok: false, output: "no org.plantd.State worker registered" };
      if (served !== false) {
        try {
          const [reply] = await this.#client.request(STATE_SERVICE, ["health", "{}"]);
          const parsed = JSON.parse(text(reply!));
          store = { ok: parsed?.data?.store_available === true, output: "store not available" };
        } catch (error) {
          store = { ok: false, output: (error as Error).message };
        }
      }
      // Without mmi.service nobody but the worker can tell: its answer decides.
      const workerUp = served ?? store.ok;
      const brokerUp = this.#hasDirectory
        ? this.#directory.brokerReachable
        : this.#client.connected !== false;
      return healthOf([
        check(
          "broker_connection",
          brokerUp,
          this.#hasDirectory ? this.#directory.lastError : "the connection to the broker is down",
        ),
        check("state_worker", workerUp, "no org.plantd.State worker registered"),
        check("state_store", store.ok, store.output),
      ]);
    });
  }

  /**
   * Fails fast with SERVICE_UNAVAILABLE when the broker says no worker serves
   * `service` (its directory, or mmi.service); without either the request's
   * own timeout decides.
   */
  async #require(service: string): Promise<void> {
    if (this.#hasDirectory) return await this.#directory.require(service);
    if (this.#features?.mmi && !(await this.#mmiServed(service))) {
      throw apiFailure("SERVICE_UNAVAILABLE", `No worker serves '${service}' (mmi.service: 404)`);
    }
  }

  /**
   * A service the broker would answer itself, asked of a broker known not to:
   * a clear refusal rather than a request queued for a worker that never comes.
   */
  #refuseUnanswered(service: string): void {
    const features = this.#features!;
    const missing = service === BROKER_SERVICE ? !this.#hasDirectory : features.mmi === false;
    if (!missing) return;
    throw new CliError(
      `the broker at ${this.target} does not answer ${service}: it is ${features.summary}`,
      "UNSUPPORTED",
    );
  }

  /** Whether a state worker is registered: the directory, mmi.service, or unknown (undefined). */
  async #stateServed(): Promise<boolean | undefined> {
    if (this.#hasDirectory) return this.#directory.workers(STATE_SERVICE) > 0;
    if (this.#features?.mmi) return await this.#mmiServed(STATE_SERVICE);
    return undefined;
  }

  listScopes(): Promise<string[]> {
    return this.#run(() => this.#state.listScopes());
  }

  history(scope: string, key: string): Promise<HistoryRecord[]> {
    return this.#run(() => this.#state.history(scope, key));
  }

  listKeys(scope: string): Promise<string[]> {
    return this.#run(() => this.#state.listKeys(scope));
  }

  createScope(scope: string): Promise<void> {
    return this.#run(async () => void await this.#state.createScope(scope));
  }

  deleteScope(scope: string): Promise<void> {
    return this.#run(async () => void await this.#state.deleteScope(scope));
  }

  get(scope: string, key: string): Promise<Entry> {
    return this.#run(async () => {
      const entry = (await this.#state.getMany(scope, [key]))[key];
      if (!entry) {
        throw apiFailure("KEY_NOT_FOUND", `Key '${key}' does not exist in scope '${scope}'`);
      }
      return { scope, key, ...entry };
    });
  }

  set(scope: string, key: string, value: string): Promise<number> {
    return this.#run(async () => (await this.#state.set(scope, key, value)).revision);
  }

  delete(scope: string, key: string): Promise<void> {
    return this.#run(async () => {
      // As the gateway does: Go plantd's delete says "deleted" for a missing key.
      const entry = (await this.#state.getMany(scope, [key]))[key];
      if (!entry) {
        throw apiFailure("KEY_NOT_FOUND", `Key '${key}' does not exist in scope '${scope}'`);
      }
      await this.#state.delete(scope, key);
    });
  }

  subscribe(bus: string, prefix: string, options: SubscribeOptions): Promise<void> {
    let endpoint: string;
    try {
      endpoint = this.#busEndpoint(bus);
    } catch (error) {
      return Promise.reject(error instanceof CliError ? error : new CliError(String(error)));
    }
    return subscribeDirect(endpoint, bus, prefix, this.#timeoutMs, options, this.#curve);
  }

  async close(): Promise<void> {
    this.#directory.stop();
    await this.#client.close();
  }
}
