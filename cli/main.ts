/**
 * `plant`: the command-line client of plantd-ts.
 *
 * `deno task cli -- <command> …`, or `deno task cli:compile` for a `plant`
 * binary. Talks to the gateway (`--gateway URL`, `PLANTD_CLI_GATEWAY`,
 * default http://127.0.0.1:8080) or straight to the broker and the buses
 * (`--broker tcp://…`, `PLANTD_CLI_BROKER`). Flags override PLANTD_CLI_*
 * variables, which override the selected profile (cli/profiles.ts: `--profile`,
 * PLANT_PROFILE or the current one). Exit codes: 0 ok, 1 the request
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
import { type Command, COMMANDS as BASE_COMMANDS, type Context, exitOf } from "./commands.ts";
import { CliError, EXIT, type ExitCode, UsageError } from "./errors.ts";
import { GatewayBackend } from "./gateway_backend.ts";
import { DURATION_PATTERN, parseDuration } from "../metrics/duration.ts";
import { freshAccessToken, gatewayTarget } from "./login.ts";
import { PROFILE_COMMANDS } from "./profile_commands.ts";
import { profilesPath, type Selected, selectProfile } from "./profiles.ts";
import { checkEndpoint, defaultBusEndpoint, hostOf } from "./net.ts";
import { consoleOutput, oneLine } from "./output.ts";

export const DEFAULT_GATEWAY = "http://127.0.0.1:8080";
export const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_WAIT_MS = 1000;

/** Every command: plantd's (cli/commands.ts), then the profiles' (cli/profile_commands.ts). */
const COMMANDS: Command[] = [...BASE_COMMANDS, ...PROFILE_COMMANDS];

/** Commands that create the profile they are given. */
const CREATES_PROFILE = new Set(["login", "profile set"]);

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
  profile: { type: "string" },
  username: { type: "string" },
  "password-stdin": { type: "boolean" },
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
  "profile",
]);

const OPTION_HELP: Record<string, string> = {
  service:
    "-s, --service SCOPE  state scope (alias --scope; else PLANTD_CLI_SCOPE, else the profile's scope)",
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
  username: "--username NAME      the user to log in as (asked when not given)",
  "password-stdin": "--password-stdin     read the password from the first line of stdin (scripts)",
};

function usage(): string {
  const lines = COMMANDS.map((c) =>
    `  ${[...c.words, ...c.args].join(" ").padEnd(36)} ${c.summary}`
  );
  return `usage: plant [options] <command> [arguments]

commands:
${lines.join("\n")}

options:
  --profile NAME       the profile to use (PLANT_PROFILE; default: plant profile use NAME's)
  --gateway URL        gateway to use (PLANTD_CLI_GATEWAY, the profile's, default ${DEFAULT_GATEWAY})
  --token TOKEN        access token or API key for a secured gateway (PLANTD_CLI_TOKEN;
                       else the profile's API key or plant login's login)
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

profiles: $XDG_CONFIG_HOME/plant/profiles.json (~/.config/plant/profiles.json), mode 0600;
each holds a plant's gateway or broker, default scope, timeout and login. Flags and
PLANTD_CLI_* variables override a profile's values (plant profile --help).

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

/** `plant state --help`: the subcommands of a group. */
function groupUsage(group: string): string {
  const lines = COMMANDS.filter((c) => c.words[0] === group).map((c) =>
    `  ${[...c.words, ...c.args].join(" ").padEnd(36)} ${c.summary}`
  );
  return `usage: plant ${group} <subcommand> [arguments]

subcommands:
${lines.join("\n")}

plant ${group} <subcommand> --help for a subcommand's options; plant --help for global options`;
}

/** The flags `command` takes, for "unknown option" messages. */
function flagsOf(command: Command | undefined): string {
  const own = command?.options ?? [];
  return [...own, ...GLOBAL].map((o) => `--${o}`).join(", ");
}

/** The command named by the first positionals, if they name one (for error messages). */
function commandOf(positionals: string[]): Command | undefined {
  try {
    return findCommand(positionals).command;
  } catch {
    return undefined;
  }
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
      // Name the valid choices: parse again leniently to see which command was meant.
      const loose = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: false });
      const meant = commandOf(loose.positionals);
      const message = (error as Error).message.replace(/\. To specify a positional.*$/s, "");
      throw new UsageError(
        /^Unknown option/.test(message)
          ? `${message} (${meant ? `'${meant.words.join(" ")}' takes` : "options:"} ${
            flagsOf(meant)
          })`
          : message,
      );
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
    if (
      values.help && positionals.length === 1 &&
      COMMANDS.some((c) => c.words.length > 1 && c.words[0] === positionals[0])
    ) {
      console.log(groupUsage(positionals[0]!));
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
        throw new UsageError(
          `option '${token.rawName}' does not apply to '${label}' (it takes ${flagsOf(command)})`,
        );
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
    const selected = await profileOf(
      label,
      values.profile ?? (env.PLANT_PROFILE || undefined),
      env,
    );
    const profile = selected.profile;
    const timeoutMs = positiveInt(values.timeout, "--timeout") ??
      positiveInt(env.PLANTD_CLI_TIMEOUT_MS, "PLANTD_CLI_TIMEOUT_MS") ?? profile.timeout ??
      DEFAULT_TIMEOUT_MS;
    const gatewayGiven = values.gateway ?? (env.PLANTD_CLI_GATEWAY || undefined);
    // Flags, then PLANTD_CLI_*, then the profile: a gateway given either way outranks the
    // profile's broker, as --gateway outranks PLANTD_CLI_BROKER.
    const brokerGiven = values.gateway !== undefined
      ? undefined
      : values.broker ?? (env.PLANTD_CLI_BROKER || undefined) ??
        (gatewayGiven === undefined ? profile.broker : undefined);
    // One endpoint, or a pair's separated by commas: the client fails over between them.
    const brokers = brokerGiven?.split(",").map((e) => checkEndpoint(e.trim(), "--broker"));
    const broker = brokers?.[0];
    const dialect = brokerDialect(
      values.dialect ?? (env.PLANTD_CLI_DIALECT || undefined) ?? profile.dialect,
    );
    if (values.dialect !== undefined && broker === undefined) {
      throw new UsageError("--dialect applies to --broker (the gateway speaks to its own broker)");
    }
    const gateway = gatewayGiven ?? profile.gateway ?? DEFAULT_GATEWAY;
    const scope = values.service ?? values.scope ?? (env.PLANTD_CLI_SCOPE || undefined) ??
      profile.scope;
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
      // Read only by commands that take a scope: the others run without one.
      get scope(): string {
        if (scope !== undefined) return scope;
        throw new UsageError(
          `no state scope: give --service SCOPE (or PLANTD_CLI_SCOPE), or set the profile's default with plant profile set scope SCOPE (profile '${selected.name}')`,
        );
      },
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
      account: {
        path: selected.path,
        selected,
        gateway,
        ...(values.username !== undefined ? { username: values.username } : {}),
        passwordStdin: values["password-stdin"] === true,
      },
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
          const given = values.token ?? (env.PLANTD_CLI_TOKEN || undefined);
          const token = given ?? await profileToken(selected, gateway, timeoutMs);
          const login = given === undefined && token !== undefined && !selected.profile.token;
          let current = token;
          backend = new GatewayBackend(
            gateway,
            timeoutMs,
            "gateway",
            token,
            login
              ? async () =>
                current = await freshAccessToken(selected.path, selected.name, timeoutMs, current)
              : undefined,
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

/** The profile of `--profile` / PLANT_PROFILE, or the current one. */
async function profileOf(
  label: string,
  named: string | undefined,
  env: Record<string, string>,
): Promise<Selected> {
  let path: string;
  try {
    path = profilesPath(env);
  } catch (error) {
    // Without HOME the profile commands cannot work; the others work without profiles.
    if (label === "login" || label === "logout" || label.startsWith("profile ")) throw error;
    return { name: named ?? "default", profile: {}, exists: false, path: "" };
  }
  return await selectProfile(path, named, CREATES_PROFILE.has(label));
}

/**
 * The profile's credential for `gateway`: its API key or its login (refreshed
 * when close to expiry), but only for the gateway the profile names or the
 * login came from, never for one given by --gateway or PLANTD_CLI_GATEWAY.
 */
async function profileToken(
  selected: Selected,
  gateway: string,
  timeoutMs: number,
): Promise<string | undefined> {
  const { profile } = selected;
  const target = gatewayTarget(gateway);
  if (profile.token) {
    return gatewayTarget(profile.gateway ?? DEFAULT_GATEWAY) === target ? profile.token : undefined;
  }
  if (profile.session?.gateway !== target) return undefined;
  return await freshAccessToken(selected.path, selected.name, timeoutMs);
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
