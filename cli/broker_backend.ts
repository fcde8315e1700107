/**
 * plantd without the gateway: Majordomo requests straight to the broker
 * (`--broker tcp://…`) and the buses directly. State operations go through
 * the same StateApi the gateway uses, so errors read the same in both modes.
 *
 * @module
 */
import { frameToJson } from "../gateway/routes/services.ts";
import { ServiceDirectory } from "../gateway/directory.ts";
import { ApiError, toApiError } from "../gateway/errors.ts";
import { StateApi } from "../gateway/state_api.ts";
import { MdpClient } from "../mdp/client.ts";
import type { CurveClientKeys } from "../transport/curve.ts";
import { MdpError } from "../mdp/errors.ts";
import { text } from "../mdp/protocol.ts";
import { BROKER_SERVICE_NAME } from "../mdp/broker_operations.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { type Check, type Health, healthOf } from "../telemetry/health.ts";
import type {
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

/** Services the broker answers itself: never refused for lack of workers. */
function brokerOwn(service: string): boolean {
  return service.startsWith("mmi.") || service === "org.plantd.Broker";
}

/** The broker at `endpoint`; `busEndpoint` names a bus's backend for subscribe. */
export class BrokerBackend implements Backend {
  readonly target: string;
  #client: MdpClient;
  #timeoutMs: number;
  #directory: ServiceDirectory;
  #state: StateApi;
  #busEndpoint: (bus: string) => string;
  #probed: Promise<void> | undefined;
  #curve: CurveClientKeys | undefined;

  constructor(
    endpoint: string,
    timeoutMs: number,
    busEndpoint: (bus: string) => string,
    curve?: CurveClientKeys,
  ) {
    this.target = endpoint;
    this.#timeoutMs = timeoutMs;
    this.#busEndpoint = busEndpoint;
    this.#curve = curve;
    this.#client = new MdpClient(endpoint, { timeoutMs, ...(curve ? { curve } : {}) });
    const call = (service: string, body: string[], ms?: number) =>
      this.#client.request(service, body, { timeoutMs: ms ?? timeoutMs });
    this.#directory = new ServiceDirectory(call, { timeoutMs });
    this.#state = new StateApi(call, this.#directory);
  }

  /** Runs `work` once the broker is known to listen and its services are known. */
  async #run<T>(work: () => Promise<T>): Promise<T> {
    this.#probed ??= probe(this.target, "broker", this.#timeoutMs).then(async () => {
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
      if (error instanceof ApiError || error instanceof MdpError) {
        const api = toApiError(error);
        throw apiFailure(api.code, api.message);
      }
      throw error;
    }
  }

  services(): Promise<ServiceRow[]> {
    return this.#run(() =>
      Promise.resolve(
        this.#directory.services()
          .map(({ name, workers, idle, busy, queued }) => ({ name, workers, idle, busy, queued }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      )
    );
  }

  call(service: string, operation: string, json: string): Promise<Frame[]> {
    return this.#run(async () => {
      if (!brokerOwn(service)) await this.#directory.require(service);
      const frames = await this.#client.request(service, [operation, json]);
      return frames.map(frameToJson);
    });
  }

  dlq(
    operation: DlqOperation,
    params: Record<string, string | number>,
  ): Promise<Record<string, unknown>> {
    return this.#run(async () => {
      const [frame] = await this.#client.request(BROKER_SERVICE_NAME, [
        `dlq-${operation}`,
        JSON.stringify(params),
      ]);
      const reply = JSON.parse(text(frame!));
      if (reply?.success === true) return reply.data as Record<string, unknown>;
      const code = reply?.code === "NOT_FOUND" || reply?.code === "BAD_REQUEST"
        ? reply.code
        : "SERVICE_UNAVAILABLE";
      throw apiFailure(code, String(reply?.error ?? "the broker refused the operation"));
    });
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
      const workers = this.#directory.workers(STATE_SERVICE);
      let store = { ok: false, output: "no org.plantd.State worker registered" };
      if (workers > 0) {
        try {
          const [reply] = await this.#client.request(STATE_SERVICE, ["health", "{}"]);
          const parsed = JSON.parse(text(reply!));
          store = { ok: parsed?.data?.store_available === true, output: "store not available" };
        } catch (error) {
          store = { ok: false, output: (error as Error).message };
        }
      }
      return healthOf([
        check("broker_connection", this.#directory.brokerReachable, this.#directory.lastError),
        check("state_worker", workers > 0, "no org.plantd.State worker registered"),
        check("state_store", store.ok, store.output),
      ]);
    });
  }

  listScopes(): Promise<string[]> {
    return this.#run(() => this.#state.listScopes());
  }

  listKeys(scope: string): Promise<string[]> {
    return this.#run(() => this.#state.listKeys(scope));
  }

  createScope(scope: string): Promise<void> {
    return this.#run(() => this.#state.createScope(scope));
  }

  deleteScope(scope: string): Promise<void> {
    return this.#run(() => this.#state.deleteScope(scope));
  }

  get(scope: string, key: string): Promise<Entry> {
    return this.#run(async () => {
      const entry = (await this.#state.getMany(scope, [key]))[key];
      if (!entry) {
        throw new ApiError("KEY_NOT_FOUND", `Key '${key}' does not exist in scope '${scope}'`);
      }
      return { scope, key, ...entry };
    });
  }

  set(scope: string, key: string, value: string): Promise<number> {
    return this.#run(() => this.#state.set(scope, key, value));
  }

  delete(scope: string, key: string): Promise<void> {
    return this.#run(async () => {
      // As the gateway does: Go plantd's delete says "deleted" for a missing key.
      const entry = (await this.#state.getMany(scope, [key]))[key];
      if (!entry) {
        throw new ApiError("KEY_NOT_FOUND", `Key '${key}' does not exist in scope '${scope}'`);
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
