/**
 * CURVE configuration keys, shared by every component that listens (broker,
 * bus) or connects (echo, state, gateway, metrics), and their resolution into
 * the keys the sockets take. A key is given either directly (Z85, 40
 * characters) or as a file holding it (`…_file`, the key on a line of its own,
 * `#` lines ignored: what `main.ts keygen --out` writes). Nothing configured:
 * plaintext, as before.
 *
 * @module
 */
import { z } from "zod";
import {
  type CurveClientKeys,
  CurveKeyError,
  curveKeyPair,
  curvePublicKey,
  type CurveServerKeys,
  Z85_KEY_PATTERN,
} from "../transport/curve.ts";
import { ConfigError } from "./load.ts";

const z85Key = z.string().regex(Z85_KEY_PATTERN, "expected a CURVE key: 40 characters of Z85");
const path = z.string().min(1);

/**
 * A list of keys: a YAML/JSON list, or one string separated by commas or
 * whitespace. `[` is a Z85 character: text that starts with it and is no
 * JSON list is a separated list whose first key starts with `[`.
 */
export const curveKeyList = z.preprocess(
  (value) =>
    typeof value === "string" ? jsonList(value) ?? value.split(/[\s,]+/).filter(Boolean) : value,
  z.array(z85Key),
);

function jsonList(text: string): unknown[] | undefined {
  if (!text.trim().startsWith("[")) return undefined;
  try {
    const parsed = JSON.parse(text);
    return Array.isArray(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Keys of a component that listens: its secret key and the client keys it allows. */
export const curveServerShape = {
  /** The server's secret key (its public key, which clients need, is derived). */
  curve_secret_key: z85Key.optional(),
  curve_secret_key_file: path.optional(),
  /** Client public keys allowed; empty with a secret key: any CURVE client (encryption only). */
  curve_allowed_keys: curveKeyList.default(() => []),
  /** A file of allowed client public keys, one per line (`#` comments). */
  curve_allowed_keys_file: path.optional(),
};

/** Keys of a component that connects: the server's public key and its own key pair. */
export const curveClientShape = {
  /** Public key of the broker (or bus) to connect to; set, CURVE is on. */
  curve_server_key: z85Key.optional(),
  curve_server_key_file: path.optional(),
  /** This component's secret key; absent, a fresh key pair is made at each start. */
  curve_secret_key: z85Key.optional(),
  curve_secret_key_file: path.optional(),
};

/** For components that connect to the broker and to buses run apart with their own key. */
export const busCurveClientShape = {
  /** Public key of the buses; absent: `curve_server_key`. */
  bus_curve_server_key: z85Key.optional(),
  bus_curve_server_key_file: path.optional(),
};

type Optional<K extends string> = { [P in K]?: string | undefined };

export type CurveServerConfig =
  & Optional<"curve_secret_key" | "curve_secret_key_file" | "curve_allowed_keys_file">
  & { curve_allowed_keys?: readonly string[] | undefined };
export type CurveClientConfig = Optional<
  "curve_server_key" | "curve_server_key_file" | "curve_secret_key" | "curve_secret_key_file"
>;
export type BusCurveClientConfig =
  & CurveClientConfig
  & Optional<"bus_curve_server_key" | "bus_curve_server_key_file">;

/** Reads a text file; tests pass their own. */
export type ReadTextFile = (path: string) => string;

/** The keys in a key file: one per line, blank and `#` lines ignored. */
export function keysInFile(file: string, text: string): string[] {
  const keys = text.split(/\r?\n/).map((line) => line.trim()).filter((line) =>
    line !== "" && !line.startsWith("#")
  );
  for (const key of keys) {
    if (!Z85_KEY_PATTERN.test(key)) {
      throw new ConfigError(`${file}: not a CURVE key (40 characters of Z85): '${key}'`);
    }
  }
  return keys;
}

function readKeys(component: string, key: string, file: string, read: ReadTextFile): string[] {
  let text: string;
  try {
    text = read(file);
  } catch (error) {
    throw new ConfigError(`${component} config: cannot read '${key}' ${file}: ${error}`);
  }
  return keysInFile(file, text);
}

/** One key, given directly or as a file; undefined when neither is set. */
function oneKey(
  component: string,
  name: string,
  direct: string | undefined,
  file: string | undefined,
  read: ReadTextFile,
): string | undefined {
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(`${component} config: set '${name}' or '${name}_file', not both`);
  }
  if (file === undefined) {
    if (direct !== undefined && !Z85_KEY_PATTERN.test(direct)) {
      throw new ConfigError(
        `${component} config: '${name}' is not a CURVE key (40 characters of Z85)`,
      );
    }
    return direct;
  }
  const keys = readKeys(component, `${name}_file`, file, read);
  if (keys.length !== 1) {
    throw new ConfigError(
      `${component} config: '${name}_file' ${file} must hold one key, found ${keys.length}`,
    );
  }
  return keys[0];
}

/** The CURVE server keys of a listening component, or undefined for plaintext. */
export function serverCurve(
  component: string,
  config: CurveServerConfig,
  read: ReadTextFile = Deno.readTextFileSync,
): CurveServerKeys | undefined {
  const secretKey = oneKey(
    component,
    "curve_secret_key",
    config.curve_secret_key,
    config.curve_secret_key_file,
    read,
  );
  const allowed = [...(config.curve_allowed_keys ?? [])];
  if (config.curve_allowed_keys_file !== undefined) {
    allowed.push(
      ...readKeys(component, "curve_allowed_keys_file", config.curve_allowed_keys_file, read),
    );
  }
  if (secretKey === undefined) {
    if (allowed.length > 0 || config.curve_allowed_keys_file !== undefined) {
      throw new ConfigError(
        `${component} config: curve_allowed_keys needs curve_secret_key (or _file): without it the endpoint is plaintext`,
      );
    }
    return undefined;
  }
  checked(component, "curve_secret_key", () => curvePublicKey(secretKey));
  return { secretKey, allowedKeys: [...new Set(allowed)] };
}

/** The CURVE client keys of a connecting component, or undefined for plaintext. */
export function clientCurve(
  component: string,
  config: CurveClientConfig,
  read: ReadTextFile = Deno.readTextFileSync,
): CurveClientKeys | undefined {
  const serverKey = oneKey(
    component,
    "curve_server_key",
    config.curve_server_key,
    config.curve_server_key_file,
    read,
  );
  return withClientKey(component, serverKey, config, read);
}

/** The CURVE client keys for the buses (their own server key, else the broker's). */
export function busClientCurve(
  component: string,
  config: BusCurveClientConfig,
  read: ReadTextFile = Deno.readTextFileSync,
): CurveClientKeys | undefined {
  const busKey = oneKey(
    component,
    "bus_curve_server_key",
    config.bus_curve_server_key,
    config.bus_curve_server_key_file,
    read,
  );
  if (busKey === undefined) return clientCurve(component, config, read);
  return withClientKey(component, busKey, config, read);
}

function withClientKey(
  component: string,
  serverKey: string | undefined,
  config: CurveClientConfig,
  read: ReadTextFile,
): CurveClientKeys | undefined {
  const secretKey = oneKey(
    component,
    "curve_secret_key",
    config.curve_secret_key,
    config.curve_secret_key_file,
    read,
  );
  if (serverKey === undefined) {
    if (secretKey !== undefined) {
      throw new ConfigError(
        `${component} config: curve_secret_key needs curve_server_key (the server's public key)`,
      );
    }
    return undefined;
  }
  if (secretKey === undefined) return { serverKey };
  const publicKey = checked(component, "curve_secret_key", () => curvePublicKey(secretKey));
  return { serverKey, publicKey, secretKey };
}

function checked<T>(component: string, key: string, work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (error instanceof CurveKeyError) {
      throw new ConfigError(`${component} config: bad '${key}': ${error.message}`);
    }
    throw error;
  }
}

/** Client keys that make a component use one given server key and key pair. */
export type CurveClientOverride = {
  [K in keyof Required<BusCurveClientConfig>]: string | undefined;
};

/**
 * For components run in the same process as a CURVE server (`main.ts dev`):
 * a fresh key pair for them, added to the server's allow-list when it has
 * one, and the client keys that use it. Undefined when the server is plaintext.
 */
export function inProcessCurve<T extends CurveServerConfig>(
  component: string,
  config: T,
  read: ReadTextFile = Deno.readTextFileSync,
): { server: T; client: CurveClientOverride; publicKey: string } | undefined {
  const server = serverCurve(component, config, read);
  if (!server) return undefined;
  const pair = curveKeyPair();
  const allowed = server.allowedKeys ?? [];
  return {
    server: allowed.length > 0
      ? { ...config, curve_allowed_keys: [...(config.curve_allowed_keys ?? []), pair.publicKey] }
      : config,
    client: {
      curve_server_key: curvePublicKey(server.secretKey),
      curve_server_key_file: undefined,
      curve_secret_key: pair.secretKey,
      curve_secret_key_file: undefined,
      bus_curve_server_key: undefined,
      bus_curve_server_key_file: undefined,
    },
    publicKey: pair.publicKey,
  };
}

/**
 * The keys that may change the broker's dead-letter queue: with CURVE, those
 * of `admin_keys` and `admin_keys_file` (none configured: nobody); without
 * CURVE undefined, every peer may (the endpoint is loopback only).
 */
export function brokerAdminKeys(
  config: { admin_keys?: readonly string[]; admin_keys_file?: string | undefined },
  curve: CurveServerKeys | undefined,
  read: ReadTextFile = Deno.readTextFileSync,
): ReadonlySet<string> | undefined {
  if (!curve) return undefined;
  const keys = [...(config.admin_keys ?? [])];
  if (config.admin_keys_file !== undefined) {
    keys.push(...readKeys("broker", "admin_keys_file", config.admin_keys_file, read));
  }
  return new Set(keys);
}
