/**
 * Call credentials alone: what the gateway signs (a standard JWS holding only
 * the call's permission) and every way the service refuses one.
 */
import assert from "node:assert/strict";
import {
  decodeProtectedHeader,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from "jose";
import {
  CALL_TYP,
  CallSigner,
  CallVerifier,
  requestJson,
  serviceTokenCheck,
  statePermissionFor,
} from "./call_credentials.ts";
import {
  AuthError,
  CallCredentialAsBearer,
  TokenIssuer,
  type TokenSettings,
  TokenVerifier,
} from "./tokens.ts";

const SECRET = "a-test-secret-that-is-32-bytes-long!";
const SETTINGS: TokenSettings = { secret: SECRET, issuer: "plantd", audience: "plantd" };
const SERVICE = "org.plantd.State";
const CALLER = { id: "user:ada", name: "ada" };

/** The credential in a request JSON made by `signer`. */
function credentialIn(json: string): string {
  const token = JSON.parse(json).token;
  assert.equal(typeof token, "string", `no token in ${json}`);
  return token;
}

async function refused(
  promise: Promise<unknown>,
  pattern: RegExp,
  code: AuthError["code"] = "AUTHENTICATION_FAILED",
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof AuthError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
}

/** A credential signed by hand (jose), to test claims the signer never makes. */
function handSigned(
  claims: Record<string, unknown>,
  options: { exp?: number | null; jti?: string | null; aud?: string; typ?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({
    perms: ["*"],
    op: "state-get",
    req: "x",
    name: "ada",
    ...claims,
  })
    .setProtectedHeader({ alg: "HS256", typ: options.typ ?? CALL_TYP })
    .setIssuer("plantd").setSubject("user:ada").setAudience(options.aud ?? SERVICE)
    .setIssuedAt(now);
  if (options.exp !== null) jwt = jwt.setExpirationTime(options.exp ?? now + 10);
  if (options.jti !== null) jwt = jwt.setJti(options.jti ?? crypto.randomUUID());
  return jwt.sign(new TextEncoder().encode(SECRET));
}

Deno.test("the signer drops the caller's token and adds a standard JWS with only the call's permission", async () => {
  const signer = new CallSigner(SETTINGS, 10);
  const json = signer.stateRequest(CALLER, SERVICE, "state-set-many", {
    service: "plant",
    entries: { k: "v" },
    token: "the-callers-bearer-token",
  });
  assert.ok(!json.includes("the-callers-bearer-token"), json);
  const token = credentialIn(json);
  assert.equal(decodeProtectedHeader(token).typ, CALL_TYP);
  // Verified by jose: an ordinary JWS, not a format of our own.
  const { payload } = await jwtVerify(token, new TextEncoder().encode(SECRET), {
    typ: CALL_TYP,
    audience: SERVICE,
    issuer: "plantd",
  });
  assert.equal(payload.sub, "user:ada");
  assert.equal(payload.name, "ada");
  assert.deepEqual(payload.perms, ["state:scope:plant:write"]);
  assert.equal(payload.op, "state-set-many");
  assert.equal(payload.exp! - payload.iat!, 10);
  assert.match(String(payload.jti), /^[0-9a-f-]{36}$/);
  assert.notEqual(
    JSON.parse(signer.stateRequest(CALLER, SERVICE, "state-get", { service: "p", key: "k" }))
      .token,
    JSON.parse(signer.stateRequest(CALLER, SERVICE, "state-get", { service: "p", key: "k" }))
      .token,
    "every call gets its own credential",
  );
  // The request itself is unchanged but for its token.
  const { token: _t, ...rest } = JSON.parse(json);
  assert.deepEqual(rest, { service: "plant", entries: { k: "v" } });
  // health needs no permission: no credential.
  assert.equal(signer.stateRequest(CALLER, SERVICE, "health", { token: "t" }), "{}");
  // An empty request gets the token as its only field.
  assert.ok(credentialIn(signer.stateRequest(CALLER, SERVICE, "list-scopes", {})));
});

Deno.test("private keys sign call credentials their public keys verify (ES256, EdDSA, RS256)", async () => {
  for (const algorithm of ["ES256", "EdDSA", "RS256"] as const) {
    const pair = await generateKeyPair(algorithm, { extractable: true });
    const privateKey = await exportPKCS8(pair.privateKey);
    const publicKey = await exportSPKI(pair.publicKey);
    const signer = new CallSigner({ ...SETTINGS, secret: undefined, privateKey, algorithm }, 5);
    const request = { service: "plant", key: "k" };
    const token = credentialIn(signer.stateRequest(CALLER, SERVICE, "state-get", request));
    assert.equal(decodeProtectedHeader(token).alg, algorithm);
    await jwtVerify(token, pair.publicKey, { typ: CALL_TYP, audience: SERVICE });
    const verifier = new CallVerifier(
      { issuer: "plantd", audience: "plantd", publicKey, algorithm },
      SERVICE,
    );
    const principal = await verifier.verify(token, "state-get", { ...request, token });
    assert.deepEqual(principal.permissions, ["state:scope:plant:read"], algorithm);
    // The gateway's HS256 secret is not what signed it: a state worker with only the secret refuses.
    await refused(
      new CallVerifier(SETTINGS, SERVICE).verify(token, "state-get", { ...request, token }),
      /No key|not valid/,
    );
  }
});

Deno.test("a call credential carries the narrowest permission of its operation", () => {
  assert.deepEqual(statePermissionFor("state-get-many", "plant"), ["state:scope:plant:read"]);
  assert.deepEqual(statePermissionFor("state-cas", "plant"), ["state:scope:plant:write"]);
  assert.deepEqual(statePermissionFor("delete", "plant"), ["state:scope:plant:delete"]);
  assert.deepEqual(statePermissionFor("create-scope", "plant"), ["state:scope:create"]);
  assert.deepEqual(statePermissionFor("delete-scope", "plant"), ["state:scope:delete"]);
  assert.deepEqual(statePermissionFor("list-scopes", undefined), ["state:scope:list"]);
  assert.deepEqual(statePermissionFor("state-get", undefined), ["state:data:read"]);
  assert.deepEqual(statePermissionFor("health", undefined), []);
  assert.deepEqual(statePermissionFor("no-such-op", "plant"), []);
});

Deno.test("the service accepts a call credential once, for its own request, before it expires", async () => {
  const signer = new CallSigner(SETTINGS, 10);
  const verifier = new CallVerifier(SETTINGS, SERVICE);
  const request = { service: "plant", key: "k" };
  const json = signer.stateRequest(CALLER, SERVICE, "state-get", request);
  const token = credentialIn(json);
  const principal = await verifier.verify(token, "state-get", JSON.parse(json));
  assert.equal(principal.id, "user:ada");
  assert.equal(principal.kind, "user");
  assert.deepEqual(principal.permissions, ["state:scope:plant:read"]);
  await refused(verifier.verify(token, "state-get", JSON.parse(json)), /already used/);

  // Bound to its operation and to its request's content.
  const read = credentialIn(signer.stateRequest(CALLER, SERVICE, "state-get", request));
  await refused(
    verifier.verify(read, "state-set", { ...request, value: "x", token: read }),
    /another request/,
    "PERMISSION_DENIED",
  );
  const set = signer.stateRequest(CALLER, SERVICE, "state-set", { ...request, value: "a" });
  await refused(
    verifier.verify(credentialIn(set), "state-set", { ...JSON.parse(set), value: "evil" }),
    /another request/,
    "PERMISSION_DENIED",
  );

  // Claims: expired, too long-lived, without exp or jti, another audience, not a call credential.
  const req = requestJson(request);
  const digest = credentialIn(signer.stateRequest(CALLER, SERVICE, "state-get", request));
  const boundReq = (await jwtVerify(digest, new TextEncoder().encode(SECRET))).payload.req;
  const now = Math.floor(Date.now() / 1000);
  const bound = { op: "state-get", req: boundReq };
  await refused(
    verifier.verify(await handSigned(bound, { exp: now - 1 }), "state-get", request),
    /expired/,
  );
  await refused(
    verifier.verify(await handSigned(bound, { exp: now + 3600 }), "state-get", request),
    /lives too long/,
  );
  await refused(
    verifier.verify(await handSigned(bound, { exp: null }), "state-get", request),
    /'exp'/,
  );
  await refused(
    verifier.verify(await handSigned(bound, { jti: null }), "state-get", request),
    /'jti'/,
  );
  await refused(
    verifier.verify(await handSigned(bound, { aud: "plantd" }), "state-get", request),
    /'aud'/,
  );
  await refused(
    verifier.verify(await handSigned(bound, { typ: "JWT" }), "state-get", request),
    /'typ'|not valid/,
  );
  // The hand-signed one with everything right passes: the refusals above are for their claim.
  assert.ok(await verifier.verify(await handSigned(bound), "state-get", JSON.parse(req)));
});

Deno.test("the gateway refuses a call credential as a bearer token, with a message saying so", async () => {
  const json = new CallSigner(SETTINGS, 10).stateRequest(CALLER, SERVICE, "list-scopes", {});
  // Even with jwt_audience set to the service's name: the typ refuses it.
  const verifier = new TokenVerifier({ ...SETTINGS, audience: SERVICE });
  await assert.rejects(verifier.verify(credentialIn(json)), (error: unknown) => {
    assert.ok(error instanceof CallCredentialAsBearer);
    assert.equal(error.code, "AUTHENTICATION_FAILED");
    assert.match(error.message, /call credential/);
    return true;
  });
});

Deno.test("a state service checks Go clients' access tokens as before, and call credentials apart", async () => {
  const check = serviceTokenCheck(SETTINGS, SERVICE);
  const access = (await new TokenIssuer(SETTINGS).issue(
    { sub: "user:go", name: "go", roles: [], perms: ["state:data:write"] },
    60,
  )).token;
  const principal = await check(access, "state-set", { service: "s", key: "k", token: access });
  assert.deepEqual(principal.permissions, ["state:data:write"]);
  // Reused: an access token is not single-use (Go clients send the same one with every request).
  assert.ok(await check(access, "state-get", { service: "s", key: "k", token: access }));
  const json = new CallSigner(SETTINGS, 10).stateRequest(CALLER, SERVICE, "list-scopes", {});
  assert.ok(await check(credentialIn(json), "list-scopes", JSON.parse(json)));
  await refused(check(credentialIn(json), "list-scopes", JSON.parse(json)), /already used/);
});

Deno.test("used credentials are remembered up to a bound; past it the service refuses, never forgets", async () => {
  const signer = new CallSigner(SETTINGS, 10);
  const verifier = new CallVerifier(SETTINGS, SERVICE, { maxSeen: 2 });
  const one = () => signer.stateRequest(CALLER, SERVICE, "list-scopes", {});
  for (let i = 0; i < 2; i++) {
    const json = one();
    await verifier.verify(credentialIn(json), "list-scopes", JSON.parse(json));
  }
  const json = one();
  await refused(verifier.verify(credentialIn(json), "list-scopes", JSON.parse(json)), /in flight/);
  assert.equal(verifier.remembered, 2);
});

Deno.test("call credential lifetimes outside 1..60 s are refused when the signer is made", () => {
  assert.throws(() => new CallSigner(SETTINGS, 0), RangeError);
  assert.throws(() => new CallSigner(SETTINGS, 61), RangeError);
  assert.throws(() => new CallSigner({ issuer: "plantd", audience: "plantd" }, 10), /jwt_/);
});
