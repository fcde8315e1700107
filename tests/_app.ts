/**
 * The gateway's app (`createApp`) on in-process dependencies, for route tests
 * through `app.request()` (as Hono's own tests do): no broker, no sockets.
 *
 * - The broker client is a fake ({@link BrokerClient}): every request is
 *   recorded in `calls` and answered by `answer` when it gives an answer,
 *   else org.plantd.State by a real StateOperations on an in-memory store,
 *   org.plantd.Broker `services` by the `services` list, and anything else
 *   as an echo of the frames after the operation.
 * - The service directory is the real one over that client, refreshed once
 *   (never started: no timer), so it refuses services the list lacks.
 * - The Guard runs on a libSQL AuthStore in a temporary directory; with
 *   `auth`, tokens are HS256 with tests/_auth.ts's secret (`tokenWith`), and
 *   the state operations check the gateway's call credentials as
 *   roles/state.ts makes them; with `revocations`, users' session epochs
 *   and revoked sessions are checked too.
 */
import { Registry } from "prom-client";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { serviceTokenCheck } from "../auth/call_credentials.ts";
import { AuthStore } from "../auth/store.ts";
import type { TokenSettings } from "../auth/tokens.ts";
import { createApp } from "../gateway/app.ts";
import { Guard } from "../gateway/auth/guard.ts";
import { Revocations } from "../gateway/auth/revocations.ts";
import { BusHub } from "../gateway/bus_hub.ts";
import { BusOutlet } from "../gateway/bus_outlet.ts";
import { gatewayMetrics } from "../gateway/gateway_metrics.ts";
import { memoryCounters } from "../gateway/shared/counters.ts";
import { memorySessions } from "../gateway/shared/sessions.ts";
import type { StateCache } from "../gateway/state_read_cache.ts";
import type { BrokerClient, RequestOptions } from "../mdp/client.ts";
import type { MetricsReader } from "../metrics/store.ts";
import { ServiceDirectory, type ServiceInfo } from "../mdp/directory.ts";
import { frame, text } from "../mdp/protocol.ts";
import { openStateDatabase } from "../state/db.ts";
import { STATE_SERVICE, StateOperations } from "../state/operations.ts";
import { StateStore } from "../state/store.ts";
import type { Frames } from "../transport/frames.ts";
import { SECRET } from "./_auth.ts";

export const TOKEN_SETTINGS: TokenSettings = {
  secret: SECRET,
  issuer: "plantd",
  audience: "plantd",
};

/** One request that reached the fake broker client. */
export interface Call {
  service: string;
  /** Its frames as text: `[operation, JSON]` for the gateway's calls. */
  body: string[];
  timeoutMs: number | undefined;
}

/** Reply frames: text (sent as UTF-8) or bytes. */
export type ReplyFrames = Array<string | Uint8Array>;

/** Answers a call, or undefined to leave it to the defaults; a rejection fails the call. */
export type Answer = (call: Call) => ReplyFrames | Promise<ReplyFrames> | undefined;

/** Options of {@link withApp}. */
export interface AppOptions {
  /** Authentication on (HS256, {@link TOKEN_SETTINGS}). */
  auth?: boolean;
  /** Revocation on (gateway/auth/revocations.ts, on the fixture's auth store; no polling). */
  revocations?: boolean;
  /** What org.plantd.Broker lists. @default one org.plantd.State worker */
  services?: ServiceInfo[];
  /** The client's `connected`. @default true */
  connected?: () => boolean | undefined;
  answer?: Answer;
  maxBodyBytes?: number;
  /** The state operations' largest value. @default 1 MiB */
  maxValueBytes?: number;
  stateCache?: StateCache;
  /** The metrics (and events) store behind /api/metrics, /api/devices and /api/events. @default none (503) */
  metricsStore?: MetricsReader;
  /** Buses to subscribe to (name to endpoint) and to publish on. */
  buses?: Record<string, string>;
  publishBuses?: Record<string, string>;
}

/** The app under test, with what it reached. */
export interface AppFixture {
  app: OpenAPIHono;
  /** `app.request()` for `method` and `path`, as a promise. */
  request(method: string, path: string, init?: RequestInit): Promise<Response>;
  calls: Call[];
  ops: StateOperations;
  store: AuthStore;
}

/** A service the broker lists, with `workers` workers. */
export function service(name: string, workers = 1): ServiceInfo {
  return { name, workers, idle: workers, busy: 0, queued: 0 };
}

/** Runs `body` with the app; everything it opened is closed after. */
export async function withApp(
  body: (fixture: AppFixture) => Promise<void>,
  options: AppOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const state = await StateStore.load(await openStateDatabase({ location: ":memory:" }));
  const settings = options.auth ? TOKEN_SETTINGS : undefined;
  const verify = settings ? serviceTokenCheck(settings, STATE_SERVICE) : undefined;
  const ops = new StateOperations(state, {
    ...(verify ? { verify } : {}),
    ...(options.maxValueBytes !== undefined ? { maxValueBytes: options.maxValueBytes } : {}),
  });
  const services = options.services ?? [service(STATE_SERVICE)];
  const calls: Call[] = [];
  const answerOf = async (call: Call): Promise<ReplyFrames> => {
    const scripted = options.answer?.(call);
    if (scripted !== undefined) return await scripted;
    if (call.service === STATE_SERVICE) return [await ops.handle(call.body.map(frame))];
    if (call.service === "org.plantd.Broker" && call.body[0] === "services") {
      return [JSON.stringify({ success: true, data: { services } })];
    }
    return call.body.slice(1);
  };
  const request = async (
    service: string,
    frames: ReadonlyArray<string | Uint8Array>,
    requestOptions: RequestOptions = {},
  ): Promise<Frames> => {
    const call = {
      service,
      body: frames.map((f) => typeof f === "string" ? f : text(f)),
      timeoutMs: requestOptions.timeoutMs,
    };
    // The directory's own refreshes are not the routes' calls.
    if (service !== "org.plantd.Broker") calls.push(call);
    return (await answerOf(call)).map((f) => typeof f === "string" ? frame(f) : f);
  };
  const connected = options.connected ?? (() => true);
  const client: BrokerClient = {
    get connected() {
      return connected();
    },
    request,
    async *stream(service, frames, requestOptions) {
      yield { final: true, body: await request(service, frames, requestOptions) };
    },
  };
  // Reachable for three refresh periods after a refresh: long enough for any test.
  const directory = new ServiceDirectory(
    (service, frames, timeoutMs) => client.request(service, frames, { timeoutMs }),
    { refreshMs: 600_000, connected },
  );
  await directory.refresh();
  const registry = new Registry();
  const metrics = gatewayMetrics(registry);
  const store = await AuthStore.open(`file:${dir}/auth.db`);
  // Changes reach it through changed() (the admin routes call it), never a poll.
  const revocations = options.revocations
    ? await Revocations.start({ store, pollMs: 3_600_000 })
    : undefined;
  const hub = new BusHub(options.buses ?? {});
  const outlet = new BusOutlet(options.publishBuses ?? {});
  const app = createApp({
    client,
    directory,
    hub,
    registry,
    metrics,
    checks: () => [],
    ...(options.stateCache ? { stateCache: options.stateCache } : {}),
    ...(options.metricsStore ? { metricsStore: options.metricsStore } : {}),
    guard: new Guard(store, settings, metrics, revocations ? { revocations } : {}),
    counters: memoryCounters(),
    sessions: memorySessions(),
    outlet,
    options: {
      requestTimeoutMs: 1000,
      maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
      allowedOrigins: [],
      ws: {
        maxBufferedBytes: 1 << 20,
        maxMessageBytes: 1 << 16,
        maxSubscriptions: 16,
        maxMessagesPerSecond: 100,
        maxPendingRequests: 16,
      },
      security: {
        accessTtlS: 900,
        refreshTtlS: 3600,
        tls: false,
        trustedProxies: [],
        rateLimitWindowMs: 60_000,
        rateLimitPerIp: 0,
        rateLimitPerToken: 0,
        wsMaxConnections: 10,
        wsMaxPerUser: 10,
        publicMetrics: true,
      },
    },
  });
  try {
    await body({
      app,
      request: (method, path, init = {}) => Promise.resolve(app.request(path, { ...init, method })),
      calls,
      ops,
      store,
    });
  } finally {
    await hub.close();
    await outlet.close();
    await revocations?.close();
    await store.close();
    await state.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A response's JSON error with its status (and the body's other fields). */
export async function errorOf(
  response: Response,
): Promise<{ status: number; code: string; message: string } & Record<string, unknown>> {
  const body = await response.json();
  return { status: response.status, ...body.error };
}

/** A JSON request body. */
export function json(value: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    body: JSON.stringify(value),
    headers: { "content-type": "application/json", ...headers },
  };
}
