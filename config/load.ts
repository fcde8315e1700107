/**
 * One configuration loader for every component. Precedence, lowest first:
 * schema defaults < YAML file (`--config FILE` or `PLANTD_<COMPONENT>_CONFIG`)
 * < environment `PLANTD_<COMPONENT>_<KEY>` < command-line flags `--<key>`.
 * Every source is validated on its own so an error names the key and where the
 * bad value came from. No file is required; a file named explicitly must exist.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

/** A component's configuration: its name, environment prefix and schema. */
export interface ComponentConfig<S extends z.ZodObject> {
  /** Name used in messages, e.g. "broker". */
  name: string;
  /** Environment prefix without the trailing underscore, e.g. "PLANTD_BROKER". */
  envPrefix: string;
  schema: S;
  /**
   * Plain environment variables read as keys, below `<envPrefix>_<KEY>`:
   * `{ PLANTD_REDIS_URL: "redis_url" }`.
   */
  envAliases?: Record<string, string>;
}

/** Raised for any configuration problem; the message is meant for a person. */
export class ConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/** Where configuration comes from; tests pass their own. */
export interface ConfigSources {
  args?: string[];
  env?: Record<string, string>;
  readTextFile?: (path: string) => string;
}

type Kind = "number" | "boolean" | "string" | "json";

function kindOf(schema: z.ZodType): Kind {
  let inner: z.ZodType = schema;
  for (let i = 0; i < 8; i++) {
    const def = inner.def as { type: string; innerType?: z.ZodType };
    if (def.innerType && (def.type === "default" || def.type === "optional")) {
      inner = def.innerType;
      continue;
    }
    if (def.type === "number" || def.type === "int") return "number";
    if (def.type === "boolean") return "boolean";
    if (def.type === "array" || def.type === "object" || def.type === "record") return "json";
    return "string";
  }
  return "string";
}

function fromText(kind: Kind, raw: string): unknown {
  switch (kind) {
    case "number": {
      // Keep the text when it is no number, so the error shows what was given.
      const n = Number(raw);
      return raw.trim() === "" || Number.isNaN(n) ? raw : n;
    }
    case "boolean": {
      const v = raw.toLowerCase();
      if (["true", "1", "yes", "on"].includes(v)) return true;
      if (["false", "0", "no", "off"].includes(v)) return false;
      return raw;
    }
    case "json":
      try {
        return JSON.parse(raw);
      } catch {
        return raw;
      }
    default:
      return raw;
  }
}

function toFlag(key: string): string {
  return key.replaceAll("_", "-");
}

/** Keys whose values are secrets: errors never echo them (they would land in logs). */
const SECRET_KEY = /(secret|password|token|private_key)/;

function describeIssue(issue: z.core.$ZodIssue, value: unknown, key = ""): string {
  const shown = value === undefined
    ? ""
    : SECRET_KEY.test(key)
    ? " (value not shown: it is a secret)"
    : `, got ${JSON.stringify(value)}`;
  return `${issue.message}${shown}`;
}

function checkLayer(
  component: ComponentConfig<z.ZodObject>,
  layer: Record<string, unknown>,
  describe: (key: string) => string,
): void {
  const shape = component.schema.shape as Record<string, z.ZodType>;
  for (const [key, value] of Object.entries(layer)) {
    const field = shape[key];
    if (!field) {
      throw new ConfigError(`${component.name} config: unknown key '${key}' in ${describe(key)}`);
    }
    const result = field.safeParse(value);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      const path = [key, ...issue.path.map(String)].join(".");
      throw new ConfigError(
        `${component.name} config: bad value for '${path}' in ${describe(key)}: ${
          describeIssue(issue, value, key)
        }`,
      );
    }
  }
}

/** Whether `args` ask for help (`--help` or `-h`) rather than a run. */
export function wantsHelp(args: readonly string[]): boolean {
  return args.includes("--help") || args.includes("-h");
}

/**
 * Every key of a component's configuration as its flag, environment
 * variable and default: the text of `main.ts <component> --help`, made from
 * the schema so it cannot drift from what the loader accepts.
 */
export function configHelp(component: ComponentConfig<z.ZodObject>, usage: string): string {
  const shape = component.schema.shape as Record<string, z.ZodType>;
  const rows = Object.keys(shape).sort().map((key) => {
    const field = shape[key]!;
    const parsed = field.safeParse(undefined);
    const fallback = parsed.success
      ? parsed.data === undefined
        ? "unset"
        : SECRET_KEY.test(key) && parsed.data !== ""
        ? "(secret)"
        : JSON.stringify(parsed.data)
      : "required";
    return [
      `--${toFlag(key)} <${kindOf(field)}>`,
      `${component.envPrefix}_${key.toUpperCase()}`,
      fallback,
    ];
  });
  const width = (i: number) => Math.max(...rows.map((r) => r[i]!.length));
  const [flag, env] = [width(0), width(1)];
  return [
    usage,
    "",
    `Every key is a flag, an environment variable and a YAML key of --config FILE`,
    `(or ${component.envPrefix}_CONFIG); flags win over the environment, which wins over the file.`,
    "",
    ...rows.map(([f, e, d]) => `  ${f!.padEnd(flag)}  ${e!.padEnd(env)}  default ${d}`),
  ].join("\n");
}

/** Loads, merges and validates a component's configuration. */
export function loadConfig<S extends z.ZodObject>(
  component: ComponentConfig<S>,
  sources: ConfigSources = {},
): z.infer<S> {
  const args = sources.args ?? Deno.args;
  const env = sources.env ?? Deno.env.toObject();
  const readTextFile = sources.readTextFile ?? Deno.readTextFileSync;
  const shape = component.schema.shape as Record<string, z.ZodType>;
  const generic = component as unknown as ComponentConfig<z.ZodObject>;

  // Command line.
  const options: Record<string, { type: "string" }> = { config: { type: "string" } };
  for (const key of Object.keys(shape)) options[toFlag(key)] = { type: "string" };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new ConfigError(`${component.name}: ${(error as Error).message}`, { cause: error });
  }
  const flags: Record<string, unknown> = {};
  for (const [flag, raw] of Object.entries(parsed.values)) {
    if (flag === "config" || typeof raw !== "string") continue;
    const key = flag.replaceAll("-", "_");
    flags[key] = fromText(kindOf(shape[key]!), raw);
  }

  // Environment.
  const envConfigName = `${component.envPrefix}_CONFIG`;
  const fromEnv: Record<string, unknown> = {};
  const envNames: Record<string, string> = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(component.envPrefix + "_") || name === envConfigName) continue;
    const key = name.slice(component.envPrefix.length + 1).toLowerCase();
    envNames[key] = name;
    fromEnv[key] = shape[key] ? fromText(kindOf(shape[key]), raw) : raw;
  }
  for (const [name, key] of Object.entries(component.envAliases ?? {})) {
    const raw = env[name];
    if (raw === undefined || key in fromEnv) continue;
    envNames[key] = name;
    fromEnv[key] = shape[key] ? fromText(kindOf(shape[key]), raw) : raw;
  }

  // File.
  const file = (parsed.values.config as string | undefined) ?? env[envConfigName];
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    let content: string;
    try {
      content = readTextFile(file);
    } catch (error) {
      throw new ConfigError(
        `${component.name} config: cannot read file '${file}': ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    let data: unknown;
    try {
      data = parseYaml(content) ?? {};
    } catch (error) {
      throw new ConfigError(
        `${component.name} config: file '${file}' is not valid YAML: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    if (typeof data !== "object" || Array.isArray(data) || data === null) {
      throw new ConfigError(`${component.name} config: file '${file}' must hold a mapping of keys`);
    }
    fromFile = data as Record<string, unknown>;
  }

  checkLayer(generic, fromFile, () => `file '${file}'`);
  checkLayer(generic, fromEnv, (key) => `environment ${envNames[key]}`);
  checkLayer(generic, flags, (key) => `command line --${toFlag(key)}`);

  const merged = { ...fromFile, ...fromEnv, ...flags };
  const result = component.schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(
      `${component.name} config: bad value for '${issue.path.join(".")}': ${issue.message}`,
    );
  }
  return result.data;
}
