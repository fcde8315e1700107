/**
 * Token verification with every kind of key the gateway accepts, and the
 * ways a token is refused.
 */
import assert from "node:assert/strict";
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { generateKeyPairSync } from "node:crypto";
import { ConfigError } from "../config/load.ts";
import {
  AuthError,
  TokenIssuer,
  type TokenSettings,
  tokenSettingsFrom,
  TokenVerifier,
} from "./tokens.ts";

const SECRET = "a-test-secret-that-is-32-bytes-long!";
const BASE: TokenSettings = { issuer: "plantd", audience: "plantd" };
const claims = { sub: "user:ada", name: "ada", roles: ["viewer"], perms: ["x:y"] };

async function refused(verifier: TokenVerifier, token: string, pattern: RegExp): Promise<void> {
  await assert.rejects(verifier.verify(token), (error: unknown) => {
    assert.ok(error instanceof AuthError);
    assert.equal(error.code, "AUTHENTICATION_FAILED");
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("HS256: issued tokens verify, carry permissions of their roles, and expire", async () => {
  const settings = { ...BASE, secret: SECRET };
  const { token, expiresAt } = await new TokenIssuer(settings).issue(claims, 60);
  const principal = await new TokenVerifier(settings).verify(token);
  assert.equal(principal.id, "user:ada");
  assert.equal(principal.kind, "user");
  assert.ok(principal.permissions.includes("x:y"));
  assert.ok(principal.permissions.includes("state:data:read"), "viewer role expands");
  assert.equal(principal.expiresAt, expiresAt);

  const expired = await new SignJWT({ perms: [] }).setProtectedHeader({ alg: "HS256" })
    .setIssuer("plantd").setAudience("plantd").setSubject("user:ada")
    .setExpirationTime(Math.floor(Date.now() / 1000) - 61)
    .sign(new TextEncoder().encode(SECRET));
  // Past the default clock skew (60 s).
  await refused(new TokenVerifier(settings), expired, /expired/);
});

Deno.test("tampered, foreign and malformed tokens are refused", async () => {
  const settings = { ...BASE, secret: SECRET };
  const verifier = new TokenVerifier(settings);
  const { token } = await new TokenIssuer(settings).issue(claims, 60);
  const [header, payload, signature] = token.split(".");
  // A payload that grants more, with the old signature.
  const forged = btoa(JSON.stringify({ ...JSON.parse(atob(payload!)), perms: ["*"] }))
    .replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_");
  await refused(verifier, `${header}.${forged}.${signature}`, /signature/);
  const other = await new TokenIssuer({ ...BASE, secret: "another-secret-of-32-bytes-length!!" })
    .issue(claims, 60);
  await refused(verifier, other.token, /signature/);
  const wrongAudience = await new TokenIssuer({ ...settings, audience: "elsewhere" }).issue(
    claims,
    60,
  );
  await refused(verifier, wrongAudience.token, /aud/);
  await refused(verifier, "not.a.token", /Malformed|not valid/);
  // alg "none" is never accepted.
  const none = `${btoa('{"alg":"none"}').replace(/=+$/, "")}.${payload}.`;
  await refused(verifier, none, /.+/);
});

for (const alg of ["ES256", "RS256", "EdDSA"] as const) {
  Deno.test(`${alg}: a private key signs, its public key (or the private key alone) verifies`, async () => {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const privatePem = await exportPKCS8(privateKey);
    const publicPem = await exportSPKI(publicKey);
    const { token } = await new TokenIssuer({ ...BASE, privateKey: privatePem, algorithm: alg })
      .issue(claims, 60);
    const byPublic = new TokenVerifier({ ...BASE, publicKey: publicPem, algorithm: alg });
    assert.equal((await byPublic.verify(token)).id, "user:ada");
    const byPrivate = new TokenVerifier({ ...BASE, privateKey: privatePem, algorithm: alg });
    assert.equal((await byPrivate.verify(token)).id, "user:ada");
    // An HS256 token cannot pass where only a public key is configured.
    const hs = await new TokenIssuer({ ...BASE, secret: SECRET }).issue(claims, 60);
    await refused(byPublic, hs.token, /No key/);
  });
}

Deno.test("JWKS URL: tokens of an outside provider verify by kid; scope claims are permissions", async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...await exportJWK(publicKey), kid: "k1", alg: "ES256", use: "sig" };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ keys: [jwk] }),
  );
  try {
    const verifier = new TokenVerifier({
      ...BASE,
      jwksUrl: `http://127.0.0.1:${server.addr.port}/jwks.json`,
    });
    const token = await new SignJWT({ scope: "state:data:read bus:subscribe:event" })
      .setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer("plantd").setAudience("plantd")
      .setSubject("svc-42").setExpirationTime("5m").sign(privateKey);
    const principal = await verifier.verify(token);
    assert.equal(principal.id, "svc-42");
    assert.equal(principal.kind, "token");
    assert.deepEqual(principal.permissions.sort(), ["bus:subscribe:event", "state:data:read"]);
    const { privateKey: stranger } = await generateKeyPair("ES256");
    const foreign = await new SignJWT({}).setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setIssuer("plantd").setAudience("plantd").setExpirationTime("5m").sign(stranger);
    await refused(verifier, foreign, /signature/);
  } finally {
    await server.shutdown();
  }
});

/** An HS256 token with exactly these time claims (seconds since the epoch). */
function timed(times: { exp?: number; iat?: number; nbf?: number }): Promise<string> {
  return new SignJWT({ perms: ["*"], ...times }).setProtectedHeader({ alg: "HS256" })
    .setIssuer("plantd").setAudience("plantd").setSubject("user:mallory")
    .sign(new TextEncoder().encode(SECRET));
}

Deno.test("a token without exp is refused: it would be a credential for ever", async () => {
  const verifier = new TokenVerifier({ ...BASE, secret: SECRET });
  const now = Math.floor(Date.now() / 1000);
  await refused(verifier, await timed({ iat: now }), /no 'exp' claim/);
  await refused(verifier, await timed({}), /no 'exp' claim/);
  assert.equal(
    (await verifier.verify(await timed({ iat: now, exp: now + 60 }))).id,
    "user:mallory",
  );
});

Deno.test("iat or nbf beyond the clock skew in the future is refused; within it passes", async () => {
  const verifier = new TokenVerifier({ ...BASE, secret: SECRET, clockSkewS: 60 });
  const now = Math.floor(Date.now() / 1000);
  const year = 365 * 86_400;
  await refused(verifier, await timed({ iat: now + year, exp: now + year + 600 }), /'iat'.*future/);
  await refused(verifier, await timed({ iat: now + 120, exp: now + 900 }), /'iat'.*future/);
  await refused(verifier, await timed({ nbf: now + 120, exp: now + 900 }), /nbf/);
  assert.ok(await verifier.verify(await timed({ iat: now + 30, exp: now + 900 })));
  assert.ok(await verifier.verify(await timed({ nbf: now + 30, exp: now + 900 })));
});

Deno.test("a token living longer than jwt_max_lifetime_s is refused (exp - iat, or exp - now)", async () => {
  const verifier = new TokenVerifier({ ...BASE, secret: SECRET, maxLifetimeS: 3600 });
  const now = Math.floor(Date.now() / 1000);
  await refused(verifier, await timed({ iat: now, exp: now + 3601 }), /3601 s .*3600 s allowed/);
  // Issued long ago, still valid for a while: the lifetime counts from iat.
  await refused(verifier, await timed({ iat: now - 7200, exp: now + 60 }), /longer than/);
  await refused(verifier, await timed({ exp: now + 10 * 86_400 }), /exp - now/);
  assert.ok(await verifier.verify(await timed({ iat: now, exp: now + 3600 })));
  assert.ok(await verifier.verify(await timed({ exp: now + 3000 })));
  // The default: a day.
  const byDefault = new TokenVerifier({ ...BASE, secret: SECRET });
  await refused(byDefault, await timed({ iat: now, exp: now + 86_400 + 1 }), /86400 s allowed/);
  assert.ok(await byDefault.verify(await timed({ iat: now, exp: now + 86_400 })));
});

Deno.test("tokenSettingsFrom: a key that cannot be read, is no PEM key, or does not fit jwt_algorithm is a ConfigError naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const base = { jwt_issuer: "plantd", jwt_audience: "plantd" };
    await Deno.writeTextFile(`${dir}/bad.pem`, "change-me\n");
    await assert.rejects(
      tokenSettingsFrom({ ...base, jwt_algorithm: "EdDSA", jwt_private_key: `${dir}/bad.pem` }),
      (error) =>
        error instanceof ConfigError && /jwt_private_key .* is not a PEM/.test(error.message),
    );
    await assert.rejects(
      tokenSettingsFrom({ ...base, jwt_algorithm: "EdDSA", jwt_public_key: `${dir}/missing.pem` }),
      (error) => error instanceof ConfigError && /jwt_public_key: cannot read/.test(error.message),
    );
    const { publicKey } = generateKeyPairSync("ed25519");
    const spki = publicKey.export({ type: "spki", format: "pem" }) as string;
    await assert.rejects(
      tokenSettingsFrom({ ...base, jwt_algorithm: "ES256", jwt_public_key: spki }),
      (error) =>
        error instanceof ConfigError && /ed25519 key, but jwt_algorithm ES256/.test(error.message),
    );
    const ok = await tokenSettingsFrom({ ...base, jwt_algorithm: "EdDSA", jwt_public_key: spki });
    assert.equal(ok?.publicKey, spki);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
