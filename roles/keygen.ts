/**
 * `main.ts keygen`: a new CURVE key pair for a broker, a bus or a client,
 * printed, and with `--out NAME` written to `NAME.key` (secret, mode 0600) and
 * `NAME.pub` (public), the files the `curve_*_file` keys read. With `--jwt`,
 * an Ed25519 key pair for the gateway's tokens and call credentials instead
 * (PEM files for `jwt_private_key` and `jwt_public_key`).
 *
 * @module
 */
import { generateKeyPairSync } from "node:crypto";
import { parseArgs } from "node:util";
import { ConfigError } from "../config/load.ts";
import { type CurveKeyPair, curveKeyPair } from "../transport/curve.ts";

export const KEYGEN_USAGE = `usage: main.ts keygen [--out NAME] [--force] [--json]
       main.ts keygen --jwt --out NAME [--force]

Prints a new CURVE key pair (Z85). With --out NAME, also writes NAME.key (the
secret key, mode 0600) and NAME.pub (the public key); --force overwrites them.
Give the secret key to the component that owns the pair (curve_secret_key or
curve_secret_key_file) and the public key to its peers: a server's to its
clients (curve_server_key), a client's to the server's allow-list
(curve_allowed_keys or a line of curve_allowed_keys_file).

With --jwt: an Ed25519 key pair that signs the gateway's tokens and call
credentials, written to NAME.pem (PKCS#8, mode 0600: the gateway's
jwt_private_key, with jwt_algorithm EdDSA) and NAME.pub.pem (SPKI: the state
service's jwt_public_key, which verifies without being able to sign).`;

/** What keygen wrote, for tests. */
export interface KeygenResult {
  pair: CurveKeyPair;
  files: string[];
}

/** Runs keygen with its command-line arguments; output goes to `print`. */
export function keygen(
  args: string[],
  print: (line: string) => void = console.log,
): KeygenResult {
  let values: { out?: string; force?: boolean; json?: boolean; help?: boolean; jwt?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: "string" },
        force: { type: "boolean" },
        json: { type: "boolean" },
        jwt: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\n${KEYGEN_USAGE}`);
  }
  if (values.help) {
    print(KEYGEN_USAGE);
    return { pair: { publicKey: "", secretKey: "" }, files: [] };
  }
  if (values.jwt) return jwtKeygen(values.out, values.force === true, print);
  const pair = curveKeyPair();
  const files: string[] = [];
  if (values.out) {
    const stamp = new Date().toISOString();
    const secretFile = `${values.out}.key`;
    const publicFile = `${values.out}.pub`;
    write(
      secretFile,
      `# plantd CURVE secret key, made ${stamp}. Keep it secret.\n${pair.secretKey}\n`,
      0o600,
      values.force === true,
    );
    write(
      publicFile,
      `# plantd CURVE public key, made ${stamp}.\n${pair.publicKey}\n`,
      0o644,
      values.force === true,
    );
    files.push(secretFile, publicFile);
  }
  if (values.json) {
    print(JSON.stringify({
      public_key: pair.publicKey,
      secret_key: pair.secretKey,
      ...(files.length > 0 ? { files } : {}),
    }));
  } else {
    print(`public key: ${pair.publicKey}`);
    print(`secret key: ${pair.secretKey}`);
    for (const file of files) print(`wrote ${file}`);
  }
  return { pair, files };
}

/** An Ed25519 pair for the gateway's signatures, as PEM files. */
function jwtKeygen(
  out: string | undefined,
  force: boolean,
  print: (line: string) => void,
): KeygenResult {
  if (!out) throw new ConfigError(`keygen --jwt needs --out NAME\n${KEYGEN_USAGE}`);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const secretFile = `${out}.pem`;
  const publicFile = `${out}.pub.pem`;
  write(secretFile, privateKey.export({ type: "pkcs8", format: "pem" }) as string, 0o600, force);
  write(publicFile, publicKey.export({ type: "spki", format: "pem" }) as string, 0o644, force);
  for (const file of [secretFile, publicFile]) print(`wrote ${file}`);
  return { pair: { publicKey: "", secretKey: "" }, files: [secretFile, publicFile] };
}

function write(path: string, text: string, mode: number, force: boolean): void {
  try {
    Deno.writeTextFileSync(path, text, { mode, createNew: !force });
    // `mode` applies when the file is created; an overwritten one gets it here.
    Deno.chmodSync(path, mode);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new ConfigError(`${path} exists (--force overwrites it)`);
    }
    throw error;
  }
}
