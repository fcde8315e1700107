/**
 * The configuration schema of every component, with defaults. Keys are
 * snake_case in YAML, `PLANTD_<COMPONENT>_<KEY>` in the environment and
 * `--kebab-case` on the command line.
 *
 * @module
 */
import { z } from "zod";
import { LOG_LEVELS } from "../telemetry/log.ts";
import { WORKER_DIALECTS } from "../mdp/dialect_discovery.ts";
import { EXTENSIONS_MODES } from "../mdp/negotiation.ts";
import { DIALECTS } from "../mdp/protocol.ts";
import type { ComponentConfig } from "./load.ts";
import { busCurveClientShape, curveClientShape, curveKeyList, curveServerShape } from "./curve.ts";
import { serviceGrants } from "../broker/service_policy.ts";
import { servicePattern } from "../mdp/service_pattern.ts";
import { plaintextNetworkShape } from "./listeners.ts";
import { metricsTokenShape } from "./metrics_token.ts";

const endpoint = z.string().regex(
  /^[@>]?(tcp|ipc|inproc):\/\/.+$/,
  "expected a ZeroMQ endpoint such as tcp://127.0.0.1:9797",
);
const port = z.number().int().min(0).max(65535);

/**
 * The broker endpoints of a component that connects to the broker: one, or
 * a broker pair's (docs/ha.md), where it fails over from one to the next.
 * A list is a YAML/JSON list, or one string separated by commas (the
 * environment, the command line). One endpoint stays the string it was.
 */
export const brokerEndpoints = z.preprocess(
  (value) => {
    if (typeof value !== "string") return value;
    const trimmed = value.trim();
    if (trimmed.startsWith("[")) {
      try {
        return JSON.parse(trimmed);
      } catch {
        return value;
      }
    }
    return trimmed.includes(",") ? trimmed.split(",").map((part) => part.trim()) : trimmed;
  },
  z.union([endpoint, z.array(endpoint).min(1, "expected at least one broker endpoint")]),
);

/** The endpoints of a {@link brokerEndpoints} value, as a list. */
export function endpointList(value: string | readonly string[]): string[] {
  return typeof value === "string" ? [value] : [...value];
}
const positiveMs = z.number().int().positive();

/** A high-water mark: messages queued per peer before ZeroMQ drops; 0 = no limit. */
const hwm = z.number().int().min(0);

/**
 * A broker pair (docs/ha.md): the Binary Star pattern of the ZeroMQ guide.
 * Absent: a single broker, as ever.
 */
const haSchema = z.strictObject({
  /** Which broker of the pair this is: one primary and one backup. */
  role: z.enum(["primary", "backup"]),
  /**
   * Where this broker listens for its peer's state reports. A listener like
   * `endpoint`: loopback unless secured (CURVE keys or allow_plaintext_network).
   */
  state_bind: endpoint,
  /** The peer's state_bind, as this broker reaches it. */
  peer_state_endpoint: endpoint,
  /** How often the brokers report their state; a peer silent for two reports is dead. */
  heartbeat_ms: positiveMs.default(1000),
});

export type HaConfig = z.infer<typeof haSchema>;

/** One pub/sub bus (see bus/bus.ts). Unknown keys are errors. */
export const busSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, "expected a name of letters, digits, . _ -"),
  /** Where publishers connect (XSUB); bound, or connected with a `>` prefix. */
  frontend: endpoint,
  /** Where subscribers connect (XPUB); bound, or connected with a `>` prefix. */
  backend: endpoint,
  /** Capture endpoint (PUB): turns on per-topic counting; `inproc://…` for counting only. */
  capture: endpoint.optional(),
  /** Backend send high-water mark, per subscriber. */
  send_hwm: hwm.default(1000),
  /** Frontend receive high-water mark, per publisher. */
  receive_hwm: hwm.default(1000),
  /** Capture high-water mark: beyond it capture copies are dropped (and counted). */
  capture_hwm: hwm.default(10_000),
  /** Largest frame a publisher may send to the frontend; a larger one disconnects it. */
  max_message_bytes: z.number().int().min(1024).default(16 * 1024 * 1024),
  /** Largest subscription frame a subscriber (or capture reader) may send. */
  max_subscription_bytes: z.number().int().min(256).default(64 * 1024),
  /** Topic prefixes counted separately on /metrics (with capture). */
  topics: z.array(z.string().min(1)).default([]),
});

export type BusConfig = z.infer<typeof busSchema>;

function defaultBus(name: string, port: number): BusConfig {
  return {
    name,
    frontend: `tcp://127.0.0.1:${port}`,
    backend: `tcp://127.0.0.1:${port + 1}`,
    send_hwm: 1000,
    receive_hwm: 1000,
    capture_hwm: 10_000,
    max_message_bytes: 16 * 1024 * 1024,
    max_subscription_bytes: 64 * 1024,
    topics: [],
  };
}

/** The buses of plantd (plantd-wire.md section 3), bound on loopback. */
export const DEFAULT_BUSES: readonly BusConfig[] = [
  defaultBus("state", 11000),
  defaultBus("event", 12000),
  defaultBus("metric", 13000),
];

const buses = z.array(busSchema).superRefine((list, context) => {
  const names = new Set<string>();
  const endpoints = new Set<string>();
  list.forEach((bus, i) => {
    if (names.has(bus.name)) {
      context.addIssue({
        code: "custom",
        path: [i, "name"],
        message: `duplicate bus '${bus.name}'`,
      });
    }
    names.add(bus.name);
    for (const key of ["frontend", "backend", "capture"] as const) {
      const value = bus[key]?.replace(/^[@>]/, "");
      // A wildcard port ("*" or 0) is chosen at bind time: never a duplicate.
      if (value === undefined || /:(\*|0)$/.test(value)) continue;
      if (endpoints.has(value)) {
        context.addIssue({
          code: "custom",
          path: [i, key],
          message: `endpoint ${value} used twice`,
        });
      }
      endpoints.add(value);
    }
  });
}).default(() => DEFAULT_BUSES.map((bus) => ({ ...bus, topics: [...bus.topics] })));

/**
 * How Majordomo sockets are implemented on a plaintext tcp:// endpoint:
 * "auto" is ZMTP in TypeScript (transport/zmtp/), "libzmq" keeps libzmq's
 * sockets (README "ZeroMQ under Deno"). CURVE always uses libzmq.
 */
const mdpTransport = { mdp_transport: z.enum(["auto", "libzmq"]).default("auto") };

/**
 * ZMTP heartbeats (PING/PONG) on each Majordomo connection, as libzmq's
 * ZMQ_HEARTBEAT_IVL/TIMEOUT/TTL, below the MDP heartbeats of
 * heartbeat_interval_ms: they find a dead or half-open peer when no MDP
 * traffic would (docs/transport.md "Liveness").
 */
const zmtpHeartbeat = {
  /** A PING this often on each connection; 0 turns ZMTP heartbeats off. */
  zmtp_heartbeat_ivl_ms: z.number().int().min(0).default(5000),
  /** With PINGs on, a peer that sends nothing for this long is disconnected; 0: the interval. */
  zmtp_heartbeat_timeout_ms: z.number().int().min(0).default(15_000),
  /** Sent in our PINGs: the peer drops us after this long without traffic; 0: not asked. */
  zmtp_heartbeat_ttl_ms: z.number().int().min(0).max(6_553_500).default(15_000),
};

const common = {
  log_level: z.enum(LOG_LEVELS).default("info"),
  log_format: z.enum(["json", "pretty"]).default("json"),
  /** Host the health/metrics HTTP server listens on. */
  health_host: z.string().min(1).default("127.0.0.1"),
  /** Bearer token of /metrics (config/metrics_token.ts); required beyond loopback. */
  ...metricsTokenShape,
};

/**
 * Keys that verify bearer JWTs (auth/tokens.ts). Any of them turns
 * authentication on. PEM values may be given inline or as a file path.
 */
const tokenKeys = {
  /** HS256 secret shared by the gateway and the services that check tokens (32+ bytes). */
  jwt_secret: z.string().min(32, "jwt_secret needs at least 32 characters").optional(),
  /** PEM SPKI public key (inline or a file path) of RS256/ES256/EdDSA tokens. */
  jwt_public_key: z.string().min(1).optional(),
  /** Algorithm of jwt_public_key / jwt_private_key. */
  jwt_algorithm: z.enum(["RS256", "ES256", "EdDSA"]).default("ES256"),
  /** JWKS URL of an outside identity provider. */
  jwks_url: z.url().optional(),
  jwt_issuer: z.string().min(1).default("plantd"),
  jwt_audience: z.string().min(1).default("plantd"),
  /** Longest a token may live (exp - iat, or exp - now without iat); longer ones are refused. */
  jwt_max_lifetime_s: z.number().int().min(300).default(86_400),
  /** Clock difference allowed on a token's exp, nbf and iat. */
  jwt_clock_skew_s: z.number().int().min(0).max(3600).default(60),
};

/**
 * What signs call credentials (auth/call_credentials.ts): the gateway's keys,
 * shared with components that call the state service on their own behalf.
 */
const callSigningKeys = {
  jwt_secret: tokenKeys.jwt_secret,
  /** PEM PKCS#8 private key (inline or a file path): signs instead of jwt_secret. */
  jwt_private_key: z.string().min(1).optional(),
  jwt_algorithm: tokenKeys.jwt_algorithm,
  jwt_issuer: tokenKeys.jwt_issuer,
  jwt_audience: tokenKeys.jwt_audience,
  /**
   * Lifetime of the call credentials state requests carry;
   * the state service refuses any living longer than 60 s.
   */
  call_token_ttl_s: z.number().int().min(1).max(60).default(10),
};

/**
 * The key that signs the state service's change events and that gateways
 * verify them with (config/state_bus.ts, docs/security.md "Only the state
 * service speaks for state"). Unset: derived from jwt_secret when set.
 */
const stateBusKeys = {
  state_bus_secret: z.string().min(32, "state_bus_secret needs at least 32 characters").optional(),
  /** A file holding state_bus_secret (surrounding whitespace ignored). */
  state_bus_secret_file: z.string().min(1).optional(),
};

export const brokerConfig = {
  name: "broker",
  envPrefix: "PLANTD_BROKER",
  schema: z.object({
    ...common,
    /** Loopback by default: beyond it, CURVE keys or allow_plaintext_network (config/listeners.ts). */
    endpoint: endpoint.default("tcp://127.0.0.1:9797"),
    /** 0 turns the health server off. */
    health_port: port.default(8081),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
    request_timeout_ms: positiveMs.default(30_000),
    max_message_bytes: z.number().int().min(1024).default(16 * 1024 * 1024),
    max_queue: z.number().int().min(1).default(100_000),
    requeue_lost: z.boolean().default(false),
    /**
     * Services (names or `a.b.*` patterns) whose requests are re-queued once
     * when their worker is lost; others get WORKER_LOST (docs/transport.md "Lost peers").
     */
    requeue_lost_services: z.array(servicePattern).default(() => []),
    /**
     * Connections the broker endpoint holds at once (ZMTP transport); beyond it
     * a new one is closed at accept and counted. Far above a plant's workers and
     * clients, below the fds a process usually gets.
     */
    max_connections: z.number().int().min(1).default(10_000),
    /**
     * Output queued for all peers together (ZMTP transport; each peer also has
     * its own 64 MiB cap); beyond it a message is dropped for its peer, as
     * libzmq's ROUTER does at a peer's high-water mark, and counted. 256 MiB:
     * four peers at their own cap.
     */
    max_buffered_output_bytes: z.number().int().min(1024 * 1024).default(256 * 1024 * 1024),
    ...mdpTransport,
    ...zmtpHeartbeat,
    /**
     * A peer connecting with a routing id in use takes it over and the old
     * connection is closed (ZMQ_ROUTER_HANDOVER). Off: the newcomer waits
     * until the name is free, as libzmq; on, any peer knowing a routing id
     * can disconnect its holder (docs/transport.md "Routing ids").
     */
    router_handover: z.boolean().default(false),
    /** Pub/sub buses this process runs; [] for none. */
    buses,
    /** CURVE for the broker endpoint and its buses (config/curve.ts, docs/security.md). */
    ...curveServerShape,
    /**
     * With CURVE: [{key, services}] granting client keys the `org.plantd.*`
     * services they may serve (broker/service_policy.ts); other keys serve none.
     */
    service_policy: serviceGrants.default(() => []),
    /** A YAML or JSON file of more such grants; reloaded on SIGHUP and when it changes. */
    service_policy_file: z.string().min(1).optional(),
    /**
     * With CURVE: client public keys that may change the dead-letter queue
     * (`org.plantd.Broker` dlq-replay, dlq-delete, dlq-purge); others are
     * refused FORBIDDEN. Plaintext (loopback only): every peer may.
     */
    admin_keys: curveKeyList.default(() => []),
    /** A file of more admin keys, one per line (`#` comments), like curve_allowed_keys_file. */
    admin_keys_file: z.string().min(1).optional(),
    ...plaintextNetworkShape,
    /**
     * Run as one broker of a pair (docs/ha.md): `{role, state_bind,
     * peer_state_endpoint, heartbeat_ms}`. In the environment, JSON:
     * `PLANTD_BROKER_HA='{"role":"primary",…}'`. Absent: a single broker.
     */
    ha: haSchema.optional(),
    /**
     * Durable services (names or `a.b.*` patterns): their requests are
     * journaled before they are routed, routed again after a restart, and
     * dead-lettered when they keep failing (docs/durability.md). [] for none:
     * no journal is opened.
     */
    durable_services: z.array(servicePattern).default(() => []),
    /**
     * The journal of durable requests: a libSQL file path or server URL, or a
     * postgres:// URL (a broker pair can share that one; one broker writes it at a time).
     */
    journal: z.string().min(1).default("plantd-broker-journal.db"),
    /** Token for a remote libSQL server. */
    journal_auth_token: z.string().optional(),
    /** libSQL file: "full": a journaled request survives power loss; "normal": a crash of the broker. */
    journal_synchronous: z.enum(["full", "normal"]).default("full"),
    /** Largest size of a local libSQL journal in bytes; beyond it durable requests are refused. 0: the disk's. */
    journal_max_bytes: z.number().int().min(0).default(0),
    /** Workers lost while holding a durable request before it becomes a dead letter. */
    durable_max_attempts: z.number().int().min(1).max(100).default(3),
    /** How long the reply of a durable request is kept for a caller that asks again. */
    durable_reply_ttl_ms: positiveMs.default(600_000),
    /** How long a durable request waits for a worker before it is dead-lettered; 0: request_timeout_ms. */
    durable_timeout_ms: z.number().int().min(0).default(0),
    /**
     * One of `buses` (plaintext) on which each new dead letter is published,
     * topic `org.plantd.Broker.dlq` (docs/durability.md); "" or a bus this
     * broker does not run: none.
     */
    dlq_event_bus: z.string().default("event"),
  }),
} satisfies ComponentConfig<z.ZodObject>;

export const busConfig = {
  name: "bus",
  envPrefix: "PLANTD_BUS",
  schema: z.object({
    ...common,
    /** 0 turns the health server off. */
    health_port: port.default(8083),
    buses,
    /** CURVE for every bus endpoint (config/curve.ts, docs/security.md). */
    ...curveServerShape,
    ...plaintextNetworkShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type BusComponentConfig = z.infer<typeof busConfig.schema>;

export const echoConfig = {
  name: "echo",
  envPrefix: "PLANTD_MODULE_ECHO",
  schema: z.object({
    ...common,
    /** One broker endpoint, or a pair's as a list (docs/ha.md). */
    broker_endpoint: brokerEndpoints.default("tcp://127.0.0.1:9797"),
    health_port: port.default(0),
    /**
     * The broker's Majordomo dialect; "auto" tries plantd, RFC 7 and RFC 18 in
     * turn until the broker answers (mdp/dialect_discovery.ts, README "Dialects").
     */
    dialect: z.enum(WORKER_DIALECTS).default("auto"),
    concurrency: z.number().int().min(1).max(1024).default(1),
    /** Requests one connection takes at once (plantd-ts brokers; README "Wire extensions"). */
    capacity: z.number().int().min(1).max(4096).default(1),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
    ...mdpTransport,
    ...zmtpHeartbeat,
    /** CURVE keys for a broker that requires CURVE (config/curve.ts). */
    ...curveClientShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type BrokerConfig = z.infer<typeof brokerConfig.schema>;
export type EchoConfig = z.infer<typeof echoConfig.schema>;

export const stateConfig = {
  name: "state",
  envPrefix: "PLANTD_STATE",
  schema: z.object({
    ...common,
    /** One broker endpoint, or a pair's as a list (docs/ha.md). */
    broker_endpoint: brokerEndpoints.default("tcp://127.0.0.1:9797"),
    /**
     * A file path, or a libsql://, http(s):// or ws(s):// server URL; or a
     * postgres:// (postgresql://) URL: a store several state workers share.
     */
    db: z.string().min(1).default("plantd-state.db"),
    /** PostgreSQL connections of this worker: one for the commits, the rest for reads. */
    db_pool_size: z.number().int().min(2).max(100).default(8),
    /** Token for a remote libSQL server. */
    db_auth_token: z.string().optional(),
    /** "full": commits survive power loss; "normal": they survive process crashes. */
    synchronous: z.enum(["full", "normal"]).default("full"),
    /** Largest size of a local database file in bytes; writes beyond it fail STORAGE_FULL. 0: the disk's. */
    max_db_bytes: z.number().int().min(0).default(0),
    health_port: port.default(8082),
    /** Broker connections; each takes `capacity` requests at once. Concurrent writes share a commit. */
    concurrency: z.number().int().min(1).max(1024).default(4),
    /** Requests one connection takes at once (plantd-ts brokers; a Go broker sends one at a time). */
    capacity: z.number().int().min(1).max(4096).default(64),
    max_value_bytes: z.number().int().min(1).default(1024 * 1024),
    /**
     * How long a write's idempotency key (and its reply) is remembered, in
     * seconds: a retry with the key within it is answered with the first
     * reply instead of being applied again (docs/state.md, Idempotency keys).
     */
    idempotency_window_s: z.number().int().min(1).max(365 * 86_400).default(86_400),
    /**
     * Newest history rows kept per key (who changed it, when, old and new
     * value: docs/state.md, Key history); 0 keeps no history.
     */
    history_per_key: z.number().int().min(0).max(100_000).default(100),
    /** Frontend of the state bus where changes are published; empty turns publishing off. */
    bus_endpoint: z.union([endpoint, z.literal("")]).default("tcp://127.0.0.1:11000"),
    /**
     * How often a signed heartbeat on the state bus tells gateways how many
     * change events this worker sent, so they notice a lost one (and may keep
     * cached reads until a change comes: gateway/state_coherence.ts).
     */
    bus_heartbeat_ms: z.number().int().min(100).max(60_000).default(1000),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
    ...mdpTransport,
    ...zmtpHeartbeat,
    /** With any key set, every request must carry a valid `token` with the operation's permission. */
    ...tokenKeys,
    ...stateBusKeys,
    /** CURVE keys for the broker and the state bus (config/curve.ts). */
    ...curveClientShape,
    ...busCurveClientShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type StateConfig = z.infer<typeof stateConfig.schema>;

const DEFAULT_GATEWAY_BUSES = {
  state: "tcp://127.0.0.1:11001",
  event: "tcp://127.0.0.1:12001",
  metric: "tcp://127.0.0.1:13001",
};

export const gatewayConfig = {
  name: "gateway",
  envPrefix: "PLANTD_GATEWAY",
  envAliases: { PLANTD_REDIS_URL: "redis_url" },
  schema: z.object({
    ...common,
    host: z.string().min(1).default("127.0.0.1"),
    port: port.default(8080),
    /** One broker endpoint, or a pair's as a list (docs/ha.md). */
    broker_endpoint: brokerEndpoints.default("tcp://127.0.0.1:9797"),
    /** The broker's Majordomo dialect: plantd (plantd-ts, Go plantd), mdp01 (RFC 7), mdp02 (RFC 18). */
    broker_dialect: z.enum(DIALECTS).default("plantd"),
    /**
     * Request ids and deadline frames: auto asks the broker (mmi.broker) and
     * uses them only with a plantd-ts broker; on assumes one; off speaks plain
     * MDP (docs/interop.md).
     */
    broker_extensions: z.enum(EXTENSIONS_MODES).default("auto"),
    /** Bus name to backend endpoint (where subscribers connect). */
    buses: z.record(z.string().min(1), endpoint).default(() => ({ ...DEFAULT_GATEWAY_BUSES })),
    /** Envelopes that split single-frame bus messages into topic and payload. */
    envelopes: z.array(z.string().min(1)).default(() => [
      "org.plantd.Metric",
      "org.plantd.Event",
      "org.plantd.State",
    ]),
    /**
     * Bus name to frontend endpoint (where publishers connect) for the buses
     * clients may publish on (`bus:publish:<bus>:<topic>`); {} turns publishing off.
     * The state bus is left out: it carries the state service's change events.
     */
    publish_buses: z.record(z.string().min(1), endpoint).default(() => ({
      event: "tcp://127.0.0.1:12000",
      metric: "tcp://127.0.0.1:13000",
    })),
    request_timeout_ms: positiveMs.default(5000),
    ...mdpTransport,
    ...zmtpHeartbeat,
    /**
     * Longest time a cached state read is served while the gateway cannot
     * tell that it sees every change event (change events refresh it sooner);
     * 0: no cache.
     */
    state_cache_ttl_ms: z.number().int().min(0).default(2000),
    /**
     * Longest time a cached state read is served while the gateway sees every
     * change event of every state worker (gateway/state_coherence.ts): a bound
     * for writes that bypass the state service. 0: as state_cache_ttl_ms.
     */
    state_cache_coherent_ttl_ms: z.number().int().min(0).default(60_000),
    /**
     * Cached state entries whose whole HTTP reply is kept ready to copy (a few
     * KB each outside the JS heap); beyond it the oldest are rebuilt on their
     * next read.
     */
    state_cache_max_replies: z.number().int().min(0).default(10_000),
    max_body_bytes: z.number().int().min(1024).default(4 * 1024 * 1024),
    /** Origins besides the gateway's own that may write and open WebSockets ("*": WebSockets only). */
    allowed_origins: z.array(z.string().min(1)).default(() => []),
    ws_max_buffered_bytes: z.number().int().min(1024).default(4 * 1024 * 1024),
    ws_max_message_bytes: z.number().int().min(256).default(64 * 1024),
    ws_max_subscriptions: z.number().int().min(1).default(256),
    /** Messages one WebSocket client may send per second (burst as many); beyond it RATE_LIMITED. */
    ws_max_messages_per_s: z.number().int().min(1).default(1000),
    /** Majordomo requests one WebSocket may have waiting for replies; beyond it TOO_MANY_REQUESTS. */
    ws_max_pending_requests: z.number().int().min(1).default(1024),
    /** PostgreSQL URL of the metrics store read by GET /api/metrics; empty: `metrics_db`. */
    metrics_database_url: z.string().regex(
      /^(postgres(ql)?:\/\/.*)?$/,
      "expected a postgres:// URL or nothing (embedded libSQL)",
    ).default(""),
    /** libSQL file of the metrics store (read only); empty turns /api/metrics off. */
    metrics_db: z.string().default("plantd-metrics.db"),
    /**
     * Redis shared by gateway replicas: topic history, state read cache,
     * rate-limit counters, sessions. Empty: in-process fallbacks. Also read
     * from PLANTD_REDIS_URL (below PLANTD_GATEWAY_REDIS_URL).
     */
    redis_url: z.string().regex(
      /^(rediss?:\/\/.*)?$/,
      "expected a redis:// or rediss:// URL or nothing (in-process fallbacks)",
    ).default(""),
    /** Prefix of every key the gateway keeps in Redis. */
    redis_key_prefix: z.string().default("plantd:"),
    /** Buses whose messages get offsets and are kept so subscriptions can resume. */
    history_buses: z.array(z.string().min(1)).default(() => ["state", "event", "metric"]),
    /** Messages kept per history bus; 0 turns history off. */
    history_max_messages: z.number().int().min(0).default(10_000),
    /** Age of the oldest message kept; 0: no age limit. */
    history_max_age_ms: z.number().int().min(0).default(600_000),
    /** Without a state bus key every state change event is dropped (counted). */
    ...stateBusKeys,
    /** Clock skew allowed between state service and gateway: older change events count as replays. */
    state_bus_max_skew_ms: z.number().int().min(0).default(30_000),
    /**
     * Authentication is on when any token key is set, and required on any
     * address other than loopback (the gateway refuses to start without one).
     */
    ...tokenKeys,
    /** PEM PKCS#8 private key (inline or a file path): signs the gateway's tokens instead of jwt_secret. */
    jwt_private_key: callSigningKeys.jwt_private_key,
    /** Serve Prometheus `/metrics` without a token; refused with a host beyond loopback. */
    public_metrics: z.boolean().default(false),
    /**
     * Users, roles, API keys, revocations and the audit log: a libSQL file or
     * server URL (`libsql://`), or a `postgres://` / `postgresql://` URL so
     * several gateways share one auth database (docs/security.md).
     */
    auth_db: z.string().min(1).default("data/plantd-auth.db"),
    /** Token of a libSQL server (a PostgreSQL URL carries its own credentials). */
    auth_db_token: z.string().optional(),
    /**
     * Where refresh tokens (login sessions) are kept: "auth_db" (rows of the
     * auth database), "redis", "memory" (this process); "auto": auth_db when
     * it is PostgreSQL, else redis when redis_url is set, else memory.
     */
    session_store: z.enum(["auto", "auth_db", "redis", "memory"]).default("auto"),
    /** Audit events older than this are deleted (checked hourly); 0 keeps them forever. */
    audit_retention_days: z.number().min(0).default(365),
    /**
     * Audit events waiting for the auth database at most (logins, failures,
     * denials, state changes); past it the oldest are dropped, counted in
     * gateway_audit_events_dropped_total and shown on /healthz.
     */
    audit_queue_max: z.number().int().min(100).default(10_000),
    access_token_ttl_s: z.number().int().min(10).max(86_400).default(900),
    /**
     * Lifetime of the call credentials state requests carry (auth/call_credentials.ts);
     * the state service refuses any living longer than 60 s.
     */
    call_token_ttl_s: callSigningKeys.call_token_ttl_s,
    refresh_token_ttl_s: z.number().int().min(60).default(7 * 86_400),
    /**
     * A rotated refresh token presented again within this many seconds of its
     * rotation gets new tokens of its login instead of ending it (two tabs
     * refreshing with one cookie); later, reuse ends the login. 0: no grace.
     */
    refresh_reuse_grace_s: z.number().int().min(0).max(60).default(5),
    /** Fixed window of the rate limits. */
    rate_limit_window_ms: positiveMs.default(60_000),
    /** Requests per window from one client address; 0: no limit. */
    rate_limit_per_ip: z.number().int().min(0).default(6000),
    /** Requests per window with one credential (user, API key, token subject); 0: no limit. */
    rate_limit_per_token: z.number().int().min(0).default(12_000),
    /** Login attempts per minute from one client address, whatever the username; beyond it 429. */
    login_per_ip: z.number().int().min(1).default(20),
    /** Login attempts per minute for one username, from any address; beyond it 429. */
    login_per_user: z.number().int().min(1).default(10),
    /** Web Workers hashing passwords (argon2id) off the event loop. */
    hash_workers: z.number().int().min(1).max(64).default(1),
    /** Password hashes waiting or running beyond which a login gets 503 at once. */
    hash_max_pending: z.number().int().min(1).default(32),
    /**
     * How often the auth database's revocation log is read: the longest a
     * revocation made on another gateway takes here without Redis.
     */
    revocation_poll_ms: positiveMs.default(1000),
    /** Addresses of reverse proxies whose X-Forwarded-For names the client. */
    trusted_proxies: z.array(z.string().min(1)).default(() => []),
    /** Open WebSockets on this gateway; beyond it upgrades get 503. */
    ws_max_connections: z.number().int().min(1).default(10_000),
    /** Open WebSockets per user (or per address without authentication); beyond it 429. */
    ws_max_per_user: z.number().int().min(1).default(64),
    /** TLS certificate chain and key (PEM files); both set: HTTPS and WSS, HSTS, secure cookies. */
    tls_cert: z.string().min(1).optional(),
    tls_key: z.string().min(1).optional(),
    /** CURVE keys for the broker and the buses (config/curve.ts). */
    ...curveClientShape,
    ...busCurveClientShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type GatewayConfig = z.infer<typeof gatewayConfig.schema>;

export const metricsConfig = {
  name: "metrics",
  envPrefix: "PLANTD_METRICS",
  schema: z.object({
    ...common,
    /**
     * PostgreSQL URL (`postgres://user@host:5432/db`); TimescaleDB is used when
     * the server has it. Empty: the embedded libSQL database `db`.
     */
    database_url: z.string().regex(
      /^(postgres(ql)?:\/\/.*)?$/,
      "expected a postgres:// URL or nothing (embedded libSQL)",
    ).default(""),
    /** libSQL file (or libsql:// URL) used when database_url is empty. */
    db: z.string().min(1).default("plantd-metrics.db"),
    /** Token for a remote libSQL server. */
    db_auth_token: z.string().optional(),
    /** Backend of the metric bus (where subscribers connect). */
    bus_endpoint: endpoint.default("tcp://127.0.0.1:13001"),
    /** Prefix subscribed on the metric bus; "" is everything. */
    subscribe: z.string().default(""),
    /** Envelopes that split Go plantd's single-frame messages into topic and JSON. */
    envelopes: z.array(z.string().min(1)).default(() => ["org.plantd.Metric"]),
    /** ZMQ_RCVHWM of the subscription; 0 = no limit. */
    receive_hwm: hwm.default(100_000),
    /** Most points per INSERT. */
    batch_size: z.number().int().min(1).max(100_000).default(5000),
    /** Points held in memory while waiting for the database; beyond it points are dropped (counted). */
    buffer_points: z.number().int().min(1).default(500_000),
    /** A partial batch is written once its oldest point is this old. */
    flush_interval_ms: positiveMs.default(200),
    /** Batches written at the same time (PostgreSQL; libSQL writes one at a time). */
    write_concurrency: z.number().int().min(1).max(16).default(2),
    /** Longest wait between retries while the database is down. */
    retry_max_ms: positiveMs.default(10_000),
    /** Points older than this are deleted; 0 keeps everything. */
    retention_days: z.number().min(0).default(30),
    /** How often the scheduled delete runs (plain PostgreSQL and libSQL). */
    retention_interval_ms: positiveMs.default(3_600_000),
    /**
     * Event buses recorded into the `events` table (docs/events.md): bus name
     * to backend endpoint; {} turns event history off.
     */
    event_buses: z.record(z.string().min(1), endpoint).default(() => ({
      event: "tcp://127.0.0.1:12001",
    })),
    /** Prefix subscribed on the event buses; "" is everything. */
    event_subscribe: z.string().default(""),
    /** Envelopes that split single-frame event messages into topic and payload. */
    event_envelopes: z.array(z.string().min(1)).default(() => ["org.plantd.Event"]),
    /** Events held in memory while waiting for the database; beyond it they are dropped (counted). */
    event_buffer: z.number().int().min(1).default(100_000),
    /** Larger event payloads are not recorded (counted). */
    event_max_payload_bytes: z.number().int().min(256).max(16 * 1024 * 1024).default(64 * 1024),
    /** Events older than this are deleted; 0 keeps everything. */
    event_retention_days: z.number().min(0).default(90),
    /** TimescaleDB: chunks older than this are compressed; 0 = no compression policy. */
    compression_after_days: z.number().min(0).default(7),
    /** TimescaleDB: chunk interval of the hypertable. */
    chunk_interval_hours: z.number().positive().default(24),
    /** "auto": use TimescaleDB when the server has it; "off": plain PostgreSQL tables. */
    timescaledb: z.enum(["auto", "off"]).default("auto"),
    /** 0 turns the health server off. */
    health_port: port.default(8084),
    /** CURVE keys for a metric bus that requires CURVE (config/curve.ts). */
    ...curveClientShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type MetricsConfig = z.infer<typeof metricsConfig.schema>;

export const alarmsConfig = {
  name: "alarms",
  envPrefix: "PLANTD_ALARMS",
  schema: z.object({
    ...common,
    /** One broker endpoint, or a pair's as a list (docs/ha.md). */
    broker_endpoint: brokerEndpoints.default("tcp://127.0.0.1:9797"),
    /** 0 turns the health server off. */
    health_port: port.default(8085),
    /** Backend of the metric bus, where the points to evaluate are read. */
    metric_bus_endpoint: endpoint.default("tcp://127.0.0.1:13001"),
    /** Frontend of the event bus, where raised, cleared and acknowledged alarms are published. */
    event_bus_endpoint: endpoint.default("tcp://127.0.0.1:12000"),
    /** Envelopes that split Go plantd's single-frame metric messages into topic and JSON. */
    envelopes: z.array(z.string().min(1)).default(() => ["org.plantd.Metric"]),
    /** ZMQ_RCVHWM of the metric subscription; 0 = no limit. */
    receive_hwm: hwm.default(100_000),
    /** How often rules are read again from the state service (edits through /api/state). */
    rules_reload_ms: positiveMs.default(2000),
    /** Cleared alarms kept as history; older ones are deleted. */
    history_limit: z.number().int().min(1).max(100_000).default(1000),
    /** Timeout of each state service call. */
    state_timeout_ms: positiveMs.default(5000),
    /**
     * A bearer token the state service accepts (scope `org.plantd.Alarms*`
     * read/write), when it checks tokens; unset: requests carry none.
     */
    state_token: z.string().min(1).optional(),
    /**
     * The gateway's signing key (the same value): state requests then carry
     * call credentials of `service:alarms` for its own scopes only
     * (auth/call_credentials.ts ownScopeRequests). Unset: no credential.
     */
    ...callSigningKeys,
    dialect: z.enum(WORKER_DIALECTS).default("auto"),
    concurrency: z.number().int().min(1).max(64).default(1),
    capacity: z.number().int().min(1).max(4096).default(16),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
    ...mdpTransport,
    ...zmtpHeartbeat,
    /** CURVE keys for the broker and the buses (config/curve.ts). */
    ...curveClientShape,
    ...busCurveClientShape,
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type AlarmsConfig = z.infer<typeof alarmsConfig.schema>;
