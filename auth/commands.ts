/**
 * Security commands of `main.ts`: `user-add` creates a user in the gateway's
 * auth database (the first admin of a secured plant), `dev-cert` writes a
 * self-signed certificate for trying TLS on this machine.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { gatewayConfig } from "../config/components.ts";
import { ConfigError, loadConfig } from "../config/load.ts";
import { AuthStore, AuthStoreError } from "./store.ts";

async function readPassword(): Promise<string> {
  const fromEnv = Deno.env.get("PLANTD_USER_PASSWORD");
  if (fromEnv) return fromEnv;
  if (!Deno.stdin.isTerminal()) {
    // Piped: the first line of stdin.
    const text = await new Response(Deno.stdin.readable).text();
    return text.split("\n")[0]!.replace(/\r$/, "");
  }
  Deno.stdin.setRaw(true);
  try {
    await Deno.stdout.write(new TextEncoder().encode("password: "));
    const bytes: number[] = [];
    const buffer = new Uint8Array(1);
    while (await Deno.stdin.read(buffer)) {
      const byte = buffer[0]!;
      if (byte === 13 || byte === 10) break;
      if (byte === 3) throw new ConfigError("cancelled");
      if (byte === 127) bytes.pop();
      else bytes.push(byte);
    }
    await Deno.stdout.write(new TextEncoder().encode("\n"));
    return new TextDecoder().decode(new Uint8Array(bytes));
  } finally {
    Deno.stdin.setRaw(false);
  }
}

/**
 * `user-add --username NAME [--roles admin,operator] [--auth-db PATH|URL]`:
 * into the gateway's auth database (`auth_db`: a libSQL file or server, or
 * a `postgres://` URL); the password comes from PLANTD_USER_PASSWORD, a
 * piped first line, or a prompt.
 */
export async function userAdd(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        username: { type: "string" },
        roles: { type: "string", default: "admin" },
        "auth-db": { type: "string" },
      },
      strict: true,
    }));
  } catch (error) {
    throw new ConfigError(`user-add: ${(error as Error).message}`);
  }
  if (!values.username) {
    throw new ConfigError(
      "usage: main.ts user-add --username NAME [--roles admin] [--auth-db PATH|URL]",
    );
  }
  const config = loadConfig(gatewayConfig, { args: [] });
  const location = values["auth-db"] ?? config.auth_db;
  const password = await readPassword();
  // Unreachable or refused, PostgreSQL's error names the database with its password hidden.
  const store = await AuthStore.open(location, config.auth_db_token);
  try {
    const roles = values.roles.split(",").map((r) => r.trim()).filter(Boolean);
    const user = await store.createUser(values.username, password, roles);
    await store.audit({
      time: Date.now(),
      actor: `cli:${Deno.env.get("USER") ?? "unknown"}`,
      action: "admin.user.create",
      target: `user:${user.username}`,
      outcome: "success",
      ip: "local",
      details: { roles },
    });
    console.log(
      `user ${user.username} created in ${store.location} with roles ${roles.join(", ")}`,
    );
  } catch (error) {
    if (error instanceof AuthStoreError) throw new ConfigError(`user-add: ${error.message}`);
    throw error;
  } finally {
    await store.close();
  }
}

/** `dev-cert [--out DIR]`: an ECDSA P-256 certificate for localhost, valid 30 days. */
export async function devCert(args: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: { out: { type: "string", default: "data" } },
      strict: true,
    }));
  } catch (error) {
    throw new ConfigError(`dev-cert: ${(error as Error).message}`);
  }
  // Loaded here only: @peculiar/x509 needs the reflect-metadata polyfill first,
  // and nothing else should pay for either.
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const now = new Date();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: crypto.getRandomValues(new Uint8Array(8)).reduce(
      (hex, b) => hex + b.toString(16).padStart(2, "0"),
      "01",
    ),
    name: "CN=plantd-ts development",
    notBefore: now,
    notAfter: new Date(now.getTime() + 30 * 86_400_000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: "dns", value: "localhost" },
        { type: "ip", value: "127.0.0.1" },
        { type: "ip", value: "::1" },
      ]),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
  await Deno.mkdir(values.out, { recursive: true });
  const certPath = `${values.out}/dev-cert.pem`;
  const keyPath = `${values.out}/dev-key.pem`;
  await Deno.writeTextFile(certPath, certificate.toString("pem") + "\n");
  await Deno.writeTextFile(keyPath, keyPem + "\n", { mode: 0o600 });
  console.log(
    `wrote ${certPath} and ${keyPath} (localhost, 127.0.0.1, ::1; 30 days). Use them with:\n` +
      `  PLANTD_GATEWAY_TLS_CERT=${certPath} PLANTD_GATEWAY_TLS_KEY=${keyPath} deno task dev`,
  );
}
