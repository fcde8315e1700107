/**
 * `plant`: the command-line client of plantd-ts.
 *
 * `deno task cli -- <command> …`, or `deno task cli:compile` for a `plant`
 * binary. Talks to the gateway (`--gateway URL`, `PLANTD_CLI_GATEWAY`,
 * default http://127.0.0.1:8080) or straight to the broker and the buses
 * (`--broker tcp://…`, `PLANTD_CLI_BROKER`). Exit codes: 0 ok, 1 the request
 * failed, 2 bad command line, 3 unreachable, unavailable or timed out.
 *
 * Arguments are parsed with node:util's parseArgs, as main.ts and the config
 * loader do: the client needs flags and positionals only, and a command
 * table gives the help text, so no CLI library is added to the dependencies.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { clientCurve } from "../config/curve.ts";
import { ConfigError } from "../config/load.ts";
import { type Dialect, DIALECTS } from "../mdp/protocol.ts";
import { RELEASE_ID } from "../telemetry/health.ts";
import type { Backend } from "./backend.ts";
import { type Command, COMMANDS, type Context, DEFAULT_SCOPE, exitOf } from "./commands.ts";
import { CliError, EXIT, type ExitCode, UsageError } from "./errors.ts";
import { GatewayBackend } from "./gateway_backend.ts";
import { DURATION_PATTERN, parseDuration } from "../metrics/duration.ts";
import { checkEndpoint, defaultBusEndpoint, hostOf } from "./net.ts";
import { consoleOutput, oneLine } from "./output.ts";

export const DEFAULT_GATEWAY = "http://127.0.0.1:8080";
export const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_WAIT_MS = 1000;

const OPTIONS = {
  gateway: { type: "string" },
  token: { type: "string" },
  broker: { type: "string" },
  dialect: { type: "string" },
  json: { type: "boolean" },
  timeout: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  service: { type: "string", short: "s" },
  scope: { type: "string" },
  endpoint: { type: "string" },
  count: { type: "string", short: "n" },
  frames: { type: "boolean" },
  single: { type: "boolean" },
  wait: { type: "string" },
  url: { type: "string" },
  device: { type: "string" },
  severity: { type: "string" },
  since: { type: "string" },
  limit: { type: "string" },
} as const;

const GLOBAL = new Set([
  "gateway",
  "token",
  "broker",
  "dialect",
  "json",
  "timeout",
  "help",
  "version",
]);

const OPTION_HELP: Record<string, string> = {
  service: "-s, --service SCOPE  state scope (alias --scope; default org.plantd.Client)",
  endpoint: "--endpoint ENDPOINT  the bus's ZeroMQ endpoint (sub: backend, pub: frontend)",
  count: "-n, --count N        stop after N messages",
  frames: "--frames             send [topic, payload] (the default: the topic arrives whole)",
  single: "--single             send Go plantd's single frame (topic + payload) for Go subscribers",
  wait: "--wait MS            wait this long for a subscriber before sending (default 1000)",
  url: "--url URL            a component's health server, e.g. http://127.0.0.1:8081",
  device: "--device DEVICE      only events of this device",
  severity: "--severity LEVEL   only events of this severity (info, warning, critical, …)",
  since: "--since DURATION     only events of the last DURATION (30s, 15m, 1h, 7d)",
  limit: "--limit N            at most N events, newest first (default 100)",
};

function usage(): string {
  const lines = COMMANDS.map((c) =>
    `  ${[...c.words, ...c.args].join(" ").padEnd(36)} ${c.summary}`
  );
  return `usage: plant [options] <command> [arguments]

commands:
${lines.join("\n")}

options:
  --gateway URL        gateway to use (PLANTD_CLI_GATEWAY, default ${DEFAULT_GATEWAY})
  --token TOKEN        access token or API key for a secured gateway (PLANTD_CLI_TOKEN)
  --broker ENDPOINT    talk to the broker over Majordomo and to the buses directly
                       instead (PLANTD_CLI_BROKER), e.g. tcp://127.0.0.1:9797; a broker
                       pair's two endpoints separated by a comma (docs/ha.md)
  --dialect D          the broker's Majordomo dialect with --broker: plantd (default,
                       plantd-ts and Go plantd), mdp01 (RFC 7) or mdp02 (RFC 18)
                       (PLANTD_CLI_DIALECT); docs/interop.md
  --timeout MS         per-request timeout (PLANTD_CLI_TIMEOUT_MS, default ${DEFAULT_TIMEOUT_MS})
  --json               print JSON (one document per line) instead of tables
  -h, --help           help; \`plant <command> --help\` for a command's options
  --version

broker mode with CURVE (docs/security.md): PLANTD_CLI_CURVE_SERVER_KEY (or _FILE) is
the broker's and buses' public key, PLANTD_CLI_CURVE_SECRET_KEY (or _FILE) your own

exit codes: 0 ok, 1 the request failed, 2 bad command line,
            3 unreachable, no worker or timed out
A value that starts with "-" goes after "--": plant state set k -- -5`;
}

function commandUsage(command: Command): string {
  const options = command.options.map((o) => `  ${OPTION_HELP[o]}`);
  return `usage: plant ${[...command.words, ...command.args].join(" ")}${
    command.options.length ? " [options]" : ""
  }\n\n${command.summary}${options.length ? `\n\noptions:\n${options.join("\n")}` : ""}
Global options: plant --help`;
}

/** `--since`: a duration back from now, as an RFC 3339 time. */
function sinceOf(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const ms = DURATION_PATTERN.test(raw) ? parseDuration(raw) : undefined;
  if (ms === undefined) {
    throw new UsageError(`--since expects a duration such as 30s, 15m, 1h or 7d, got '${raw}'`);
  }
  return new Date(Date.now() - ms).toISOString();
}

function positiveInt(raw: string | undefined, flag: string): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    throw new UsageError(`${flag} expects a positive whole number, got '${raw}'`);
  }
  return n;
}

function findCommand(positionals: string[]): { command: Command; rest: string[] } {
  const [first, second] = positionals;
  if (first === undefined) throw new UsageError("no command given (plant --help lists them)");
  const group = COMMANDS.filter((c) => c.words[0] === first);
  if (group.length === 0) {
    throw new UsageError(
      `unknown command '${first}' (commands: ${
        [...new Set(COMMANDS.map((c) => c.words[0]))].join(", ")
      })`,
    );
  }
  const single = group.find((c) => c.words.length === 1);
  if (single) return { command: single, rest: positionals.slice(1) };
  const command = group.find((c) => c.words[1] === second);
  if (!command) {
    const names = group.map((c) => c.words[1]).join(", ");
    throw new UsageError(
      second === undefined
        ? `'${first}' needs a subcommand: ${names}`
        : `unknown command '${first} ${second}' (${first} commands: ${names})`,
    );
  }
  return { command, rest: positionals.slice(2) };
}

/** Runs `plant` with `args`; returns the exit code. */
export async function run(
  args: string[],
  env: Record<string, string> = Deno.env.toObject(),
): Promise<ExitCode> {
  let json = args.includes("--json");
  let label = "";
  let backend: Backend | undefined;
  const stop = new AbortController();
  let streaming = false;
  // Ctrl-C ends `sub` normally (exit 0); any other command is interrupted (exit 130).
  const onSignal = () => {
    if (streaming) return stop.abort();
    consoleOutput(json).note(`${label ? `${label}: ` : ""}interrupted`);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: OPTIONS,
        allowPositionals: true,
        strict: true,
        tokens: true,
      });
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    const { values, positionals, tokens } = parsed;
    json = values.json === true;
    const out = consoleOutput(json);
    if (values.version) {
      out.data({ version: RELEASE_ID, deno: Deno.version.deno });
      out.line(`plant ${RELEASE_ID} (deno ${Deno.version.deno})`);
      return EXIT.OK;
    }
    if (positionals.length === 0 || positionals[0] === "help") {
      if (!values.help && positionals.length === 0) {
        throw new UsageError("no command given (plant --help lists them)");
      }
      console.log(usage());
      return EXIT.OK;
    }
    const { command, rest } = findCommand(positionals);
    label = command.words.join(" ");
    streaming = command.words[0] === "sub";
    if (values.help) {
      console.log(commandUsage(command));
      return EXIT.OK;
    }
    for (const token of tokens) {
      if (token.kind !== "option") continue;
      const name = token.name === "scope" ? "service" : token.name;
      if (!GLOBAL.has(name) && !command.options.includes(name)) {
        throw new UsageError(`option '${token.rawName}' does not apply to '${label}'`);
      }
    }
    const required = command.args.filter((a) => !a.startsWith("[")).length;
    const variadic = command.args.some((a) => a.endsWith("...]"));
    if (rest.length < required || (!variadic && rest.length > command.args.length)) {
      throw new UsageError(
        `expects ${command.args.join(" ") || "no arguments"}, got ${
          rest.length ? rest.map((r) => `'${r}'`).join(" ") : "none"
        } (usage: plant ${[...command.words, ...command.args].join(" ")})`,
      );
    }
    if (
      values.service !== undefined && values.scope !== undefined && values.service !== values.scope
    ) {
      throw new UsageError("--service and --scope name the same thing: give one");
    }
    if (values.gateway !== undefined && values.broker !== undefined) {
      throw new UsageError("give --gateway or --broker, not both");
    }
    const curve = cliCurve(env);
    const timeoutMs = positiveInt(values.timeout, "--timeout") ??
      positiveInt(env.PLANTD_CLI_TIMEOUT_MS, "PLANTD_CLI_TIMEOUT_MS") ?? DEFAULT_TIMEOUT_MS;
    const brokerGiven = values.gateway !== undefined
      ? undefined
      : values.broker ?? (env.PLANTD_CLI_BROKER || undefined);
    // One endpoint, or a pair's separated by commas: the client fails over between them.
    const brokers = brokerGiven?.split(",").map((e) => checkEndpoint(e.trim(), "--broker"));
    const broker = brokers?.[0];
    const dialect = brokerDialect(values.dialect ?? (env.PLANTD_CLI_DIALECT || undefined));
    if (values.dialect !== undefined && broker === undefined) {
      throw new UsageError("--dialect applies to --broker (the gateway speaks to its own broker)");
    }
    const gateway = values.gateway ?? (env.PLANTD_CLI_GATEWAY || DEFAULT_GATEWAY);
    const endpoint = values.endpoint === undefined
      ? undefined
      : checkEndpoint(values.endpoint, "--endpoint");
    const busHost = hostOf(broker);
    const busEndpoint = (bus: string, side: "frontend" | "backend") => {
      if (endpoint) return endpoint;
      const known = defaultBusEndpoint(bus, side, busHost);
      if (!known) {
        throw new UsageError(
          `no default endpoint for bus '${bus}': give --endpoint tcp://HOST:PORT`,
        );
      }
      return known;
    };

    const context: Context = {
      out,
      positionals: rest,
      scope: values.service ?? values.scope ?? DEFAULT_SCOPE,
      timeoutMs,
      count: positiveInt(values.count, "--count"),
      endpoint,
      // [topic, payload] unless --single: one frame has no topic boundary.
      frames: values.single !== true,
      waitMs: values.wait === undefined ? DEFAULT_WAIT_MS : positiveInt(values.wait, "--wait")!,
      healthUrl: values.url,
      events: {
        device: values.device,
        severity: values.severity,
        since: sinceOf(values.since),
        limit: positiveInt(values.limit, "--limit") ?? 100,
      },
      signal: stop.signal,
      ...(curve ? { curve } : {}),
      frontendOf: (bus) => busEndpoint(bus, "frontend"),
      directBackendOf: (bus) =>
        endpoint ?? (broker !== undefined ? busEndpoint(bus, "backend") : undefined),
      async backend() {
        if (backend) return backend;
        if (broker !== undefined) {
          const { BrokerBackend } = await import("./broker_backend.ts");
          backend = new BrokerBackend(
            brokers!.length === 1 ? broker : brokers!,
            timeoutMs,
            (bus) => busEndpoint(bus, "backend"),
            curve,
            dialect,
          );
        } else {
          backend = new GatewayBackend(
            gateway,
            timeoutMs,
            "gateway",
            values.token ?? (env.PLANTD_CLI_TOKEN || undefined),
          );
        }
        return backend;
      },
    };
    return exitOf(await command.run(context));
  } catch (error) {
    const prefix = label ? `${label}: ` : "";
    const message = error instanceof Error ? error.message : String(error);
    consoleOutput(json).note(prefix + oneLine(message));
    return error instanceof CliError ? error.exitCode : EXIT.FAILED;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await backend?.close().catch(() => {});
  }
}

/** The `--dialect` / PLANTD_CLI_DIALECT value; a usage error when it names none. */
function brokerDialect(raw: string | undefined): Dialect {
  if (raw === undefined) return "plantd";
  if (!(DIALECTS as readonly string[]).includes(raw)) {
    throw new UsageError(`--dialect expects one of ${DIALECTS.join(", ")}, got '${raw}'`);
  }
  return raw as Dialect;
}

/** CURVE keys from PLANTD_CLI_CURVE_*; a bad key or file is a command-line error. */
function cliCurve(env: Record<string, string | undefined>) {
  const value = (name: string) => env[name] || undefined;
  try {
    return clientCurve("plant", {
      curve_server_key: value("PLANTD_CLI_CURVE_SERVER_KEY"),
      curve_server_key_file: value("PLANTD_CLI_CURVE_SERVER_KEY_FILE"),
      curve_secret_key: value("PLANTD_CLI_CURVE_SECRET_KEY"),
      curve_secret_key_file: value("PLANTD_CLI_CURVE_SECRET_KEY_FILE"),
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      // Name the variables, not the config keys they stand for.
      throw new UsageError(
        error.message.replace("plant config: ", "").replace(
          /'?\b(curve_[a-z_]+)\b'?/g,
          (_, key: string) => `PLANTD_CLI_${key.toUpperCase()}`,
        ),
      );
    }
    throw error;
  }
}

if (import.meta.main) {
  // `deno task cli -- state get k` passes the "--" on: it is not a value separator there.
  const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
  Deno.exit(await run(args));
}
