/**
 * The configuration schema of every component, with defaults. Keys are
 * snake_case in YAML, `PLANTD_<COMPONENT>_<KEY>` in the environment and
 * `--kebab-case` on the command line.
 *
 * @module
 */
import { z } from "zod";
import { LOG_LEVELS } from "../telemetry/log.ts";
import { DIALECTS } from "../mdp/protocol.ts";
import type { ComponentConfig } from "./load.ts";

const endpoint = z.string().regex(
  /^[@>]?(tcp|ipc|inproc):\/\/.+$/,
  "expected a ZeroMQ endpoint such as tcp://127.0.0.1:9797",
);
const port = z.number().int().min(0).max(65535);
const positiveMs = z.number().int().positive();

const common = {
  log_level: z.enum(LOG_LEVELS).default("info"),
  log_format: z.enum(["json", "pretty"]).default("json"),
  /** Host the health/metrics HTTP server listens on. */
  health_host: z.string().min(1).default("127.0.0.1"),
};

export const brokerConfig = {
  name: "broker",
  envPrefix: "PLANTD_BROKER",
  schema: z.object({
    ...common,
    endpoint: endpoint.default("tcp://*:9797"),
    /** 0 turns the health server off. */
    health_port: port.default(8081),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
    request_timeout_ms: positiveMs.default(30_000),
    max_message_bytes: z.number().int().min(1024).default(16 * 1024 * 1024),
    max_queue: z.number().int().min(1).default(100_000),
    requeue_lost: z.boolean().default(false),
  }),
} satisfies ComponentConfig<z.ZodObject>;

export const echoConfig = {
  name: "echo",
  envPrefix: "PLANTD_MODULE_ECHO",
  schema: z.object({
    ...common,
    broker_endpoint: endpoint.default("tcp://127.0.0.1:9797"),
    health_port: port.default(0),
    dialect: z.enum(DIALECTS).default("plantd"),
    concurrency: z.number().int().min(1).max(1024).default(1),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type BrokerConfig = z.infer<typeof brokerConfig.schema>;
export type EchoConfig = z.infer<typeof echoConfig.schema>;

export const stateConfig = {
  name: "state",
  envPrefix: "PLANTD_STATE",
  schema: z.object({
    ...common,
    broker_endpoint: endpoint.default("tcp://127.0.0.1:9797"),
    /** A file path, or a libsql://, http(s):// or ws(s):// server URL. */
    db: z.string().min(1).default("plantd-state.db"),
    /** Token for a remote libSQL server. */
    db_auth_token: z.string().optional(),
    /** "full": commits survive power loss; "normal": they survive process crashes. */
    synchronous: z.enum(["full", "normal"]).default("full"),
    health_port: port.default(8082),
    /** Broker connections serving requests in parallel; concurrent writes share a commit. */
    concurrency: z.number().int().min(1).max(1024).default(32),
    max_value_bytes: z.number().int().min(1).default(1024 * 1024),
    /** Frontend of the state bus where changes are published; empty turns publishing off. */
    bus_endpoint: z.union([endpoint, z.literal("")]).default("tcp://127.0.0.1:11000"),
    heartbeat_interval_ms: positiveMs.default(2500),
    heartbeat_liveness: z.number().int().min(1).default(3),
  }),
} satisfies ComponentConfig<z.ZodObject>;

export type StateConfig = z.infer<typeof stateConfig.schema>;
