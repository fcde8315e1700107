/**
 * `plant login`, `logout` and `profile …` end to end: the real CLI in a
 * subprocess with an XDG_CONFIG_HOME of each test's own, against a secured
 * system (tests/_auth.ts) where a login is needed.
 */
import assert from "node:assert/strict";
import { call, tokenWith, withSecuredSystem } from "../tests/_auth.ts";
import { freePort, waitFor } from "../tests/_helpers.ts";
import { assertFails, assertOk, json, run, runWithInput, Streaming } from "./_plant.ts";
import { updateProfiles } from "./profiles.ts";

const PASSWORD = "correct horse battery";

/** A config folder of its own, and the profiles file in it. */
function configHome(): { env: Record<string, string>; file: string } {
  const dir = Deno.makeTempDirSync({ prefix: "plant-profiles-" });
  return { env: { XDG_CONFIG_HOME: dir }, file: `${dir}/plant/profiles.json` };
}

// deno-lint-ignore no-explicit-any
function readFile(file: string): any {
  return JSON.parse(Deno.readTextFileSync(file));
}

function closedGateway(): string {
  return `http://127.0.0.1:${freePort()}`;
}

Deno.test("plant profile: set, use, ls, unset and rm; file mode 0600, refused when others can read it; unknown names list the choices", async () => {
  const { env, file } = configHome();
  const plant = (args: string[], extra: Record<string, string> = {}) =>
    run(args, { ...env, ...extra });
  const [a, b, c] = [closedGateway(), closedGateway(), closedGateway()];

  assert.match((await plant(["profile", "ls"])).stdout, /no profiles in .*profiles\.json/);
  // The first profile set becomes the current one.
  assertOk(await plant(["--profile", "lab", "profile", "set", "gateway", a]));
  assertOk(await plant(["--profile", "lab", "profile", "set", "scope", "boiler"]));
  assertOk(await plant(["--profile", "mill", "profile", "set", "gateway", b]));
  assert.equal(Deno.statSync(file).mode! & 0o777, 0o600);
  assert.equal(Deno.statSync(file.replace(/\/profiles\.json$/, "")).mode! & 0o777, 0o700);
  assert.deepEqual(readFile(file), {
    current: "lab",
    profiles: { lab: { gateway: a, scope: "boiler" }, mill: { gateway: b } },
  });

  // Which gateway a command uses: the profile's, PLANTD_CLI_GATEWAY over it, --gateway over both.
  assertFails(await plant(["services"]), 3, new RegExp(`cannot reach the gateway at ${a}`));
  assertFails(
    await plant(["services"], { PLANT_PROFILE: "mill" }),
    3,
    new RegExp(`gateway at ${b}`),
  );
  assertFails(
    await plant(["--profile", "lab", "services"], { PLANT_PROFILE: "mill" }),
    3,
    new RegExp(`gateway at ${a}`),
  );
  assertFails(
    await plant(["services"], { PLANTD_CLI_GATEWAY: c }),
    3,
    new RegExp(`gateway at ${c}`),
  );
  assertFails(await plant(["--gateway", c, "services"]), 3, new RegExp(`gateway at ${c}`));
  assertOk(await plant(["profile", "use", "mill"]));
  assertFails(await plant(["services"]), 3, new RegExp(`gateway at ${b}`));
  // A profile's broker: broker mode, unless a gateway is given.
  assertOk(await plant(["--profile", "mill", "profile", "set", "broker", "tcp://127.0.0.1:1"]));
  assert.equal(readFile(file).profiles.mill.gateway, undefined, "a broker replaces the gateway");
  assertFails(await plant(["services"]), 3, /cannot reach the broker at tcp:\/\/127\.0\.0\.1:1/);
  assertFails(
    await plant(["services"], { PLANTD_CLI_GATEWAY: c }),
    3,
    new RegExp(`gateway at ${c}`),
  );

  const ls = json(await plant(["profile", "ls", "--json"]));
  assert.equal(ls.current, "mill");
  assert.deepEqual(Object.keys(ls.profiles), ["lab", "mill"]);
  const table = (await plant(["profile", "ls"])).stdout;
  assert.match(table, /^\s+lab\s+http:\/\/127\.0\.0\.1:\d+\s+boiler\s+-$/m);
  assert.match(table, /^\*\s+mill\s+broker tcp:\/\/127\.0\.0\.1:1\s+-\s+-$/m);

  // Unknown names and keys list the valid ones; bad values say what is expected.
  assertFails(
    await plant(["--profile", "nope", "services"]),
    2,
    /unknown profile 'nope' \(profiles: lab, mill\)/,
  );
  assertFails(
    await plant(["services"], { PLANT_PROFILE: "nope" }),
    2,
    /unknown profile 'nope' \(profiles: lab, mill\)/,
  );
  assertFails(
    await plant(["profile", "use", "nope"]),
    2,
    /unknown profile 'nope' \(profiles: lab, mill\)/,
  );
  assertFails(
    await plant(["profile", "rm", "nope"]),
    2,
    /unknown profile 'nope' \(profiles: lab, mill\)/,
  );
  assertFails(
    await plant(["profile", "set", "colour", "red"]),
    2,
    /unknown profile key 'colour' \(keys: gateway, broker, dialect, scope, timeout, token\)/,
  );
  assertFails(await plant(["profile", "set", "timeout", "soon"]), 2, /timeout expects a positive/);
  assertFails(await plant(["profile", "set", "gateway", "ftp://x"]), 2, /http:\/\/ or https:\/\//);
  assertFails(await plant(["profile", "set", "dialect", "mdp9"]), 2, /one of plantd, mdp01, mdp02/);
  assertFails(await plant(["--profile", "a/b", "profile", "ls"]), 2, /bad profile name 'a\/b'/);

  assertOk(await plant(["--profile", "lab", "profile", "unset", "scope"]));
  assert.deepEqual(readFile(file).profiles.lab, { gateway: a });
  assertOk(await plant(["profile", "rm", "mill"]));
  assert.deepEqual(readFile(file), { profiles: { lab: { gateway: a } } });
  assertOk(await plant(["profile", "use", "lab"]));

  // Others can read the file (it may hold logins): refused until it is 0600 again.
  Deno.chmodSync(file, 0o644);
  assertFails(
    await plant(["services"]),
    1,
    /profiles\.json can be read by others \(mode 644\) and holds credentials: chmod 600 /,
  );
  Deno.chmodSync(file, 0o600);
  assertFails(await plant(["services"]), 3, new RegExp(`gateway at ${a}`));

  // Without XDG_CONFIG_HOME: ~/.config.
  const home = Deno.makeTempDirSync({ prefix: "plant-home-" });
  assertOk(
    await run(["profile", "set", "scope", "x"], { XDG_CONFIG_HOME: "", HOME: home }),
  );
  assert.equal(Deno.statSync(`${home}/.config/plant/profiles.json`).mode! & 0o777, 0o600);
});

Deno.test("plant login: the profile keeps a refreshed login (never the password), its default scope serves state and sub, logout ends it on the gateway", async () => {
  await withSecuredSystem(async (system) => {
    const admin = { authorization: `Bearer ${await tokenWith(["auth:admin"])}` };
    const created = await call(system.url, "POST", "/api/auth/users", {
      username: "ada",
      password: PASSWORD,
      roles: ["operator"],
    }, admin);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { env, file } = configHome();
    const plant = (args: string[], extra: Record<string, string> = {}) =>
      run(args, { ...env, ...extra });

    // No terminal and no --password-stdin: says how to script it.
    assertFails(
      await plant(["--gateway", system.url, "login", "--username", "ada"]),
      2,
      /no terminal to ask the password on: give --username NAME and the password on stdin with --password-stdin/,
    );
    const wrong = await runWithInput(
      ["--gateway", system.url, "login", "--username", "ada", "--password-stdin"],
      env,
      "not it\n",
    );
    assertFails(wrong, 1, /Wrong username or password/);
    const login = await runWithInput(
      [
        "--profile",
        "plant1",
        "--gateway",
        system.url,
        "login",
        "--username",
        "ada",
        "--password-stdin",
      ],
      env,
      `${PASSWORD}\n`,
    );
    assertOk(login);
    assert.match(login.stdout, new RegExp(`logged in to ${system.url} as ada \\(profile 'plant1'`));
    assert.equal(Deno.statSync(file).mode! & 0o777, 0o600);
    const text = Deno.readTextFileSync(file);
    assert.ok(!text.includes(PASSWORD), "the password is not stored");
    const first = readFile(file).profiles.plant1;
    assert.equal(first.gateway, system.url);
    assert.equal(first.session.username, "ada");

    // The login and the profile's default scope serve state without flags.
    assertFails(
      await plant(["state", "get", "k"]),
      2,
      /no state scope: .*plant profile set scope SCOPE \(profile 'plant1'\)/,
    );
    assertOk(await plant(["profile", "set", "scope", "boiler"]));
    assertOk(await plant(["state", "set", "k", "v"]));
    assert.equal(json(await plant(["--json", "state", "get", "k"])).scope, "boiler");
    // --service still wins over the profile's scope.
    assertOk(await plant(["state", "set", "k", "w", "--service", "other"]));
    assert.equal(json(await plant(["--json", "state", "get", "k", "-s", "other"])).value, "w");

    // plant sub through the gateway: the login goes in the WebSocket's first message.
    const sub = new Streaming(["sub", "event", "alarm.", "-n", "1"], env);
    await sub.subscribed();
    const published = await call(system.url, "POST", "/api/buses/event/messages", {
      topic: "alarm.pump",
      payload: "dry",
    }, { authorization: `Bearer ${first.session.access_token}` });
    assert.equal(published.status, 202, JSON.stringify(published.body));
    const streamed = await sub.result();
    assertOk(streamed);
    assert.equal(streamed.stdout, "alarm.pump dry\n");

    // An access token about to expire is traded for new tokens before the request.
    const data = readFile(file);
    data.profiles.plant1.session.expires_at = 0;
    Deno.writeTextFileSync(file, JSON.stringify(data));
    assertOk(await plant(["state", "get", "k"]));
    const refreshed = readFile(file).profiles.plant1.session;
    assert.notEqual(refreshed.refresh_token, first.session.refresh_token, "refreshed");
    assert.ok(refreshed.expires_at > Date.now());
    // Several plant processes refreshing at once: one refresh, the others use it (a second
    // use of the same refresh token would end the login as stolen).
    data.profiles.plant1.session = { ...refreshed, expires_at: 0 };
    Deno.writeTextFileSync(file, JSON.stringify(data));
    const many = await Promise.all([1, 2, 3].map(() => plant(["state", "get", "k"])));
    for (const r of many) assertOk(r);
    assertOk(await plant(["state", "get", "k"]));

    // The login goes only to the gateway it came from, not to one given by flag.
    const seen: Array<string | null> = [];
    const elsewhere = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
      seen.push(request.headers.get("authorization"));
      return Response.json({ services: [] });
    });
    try {
      const other = `http://127.0.0.1:${elsewhere.addr.port}`;
      assertOk(await plant(["--gateway", other, "services"]));
      assertOk(await plant(["services"], { PLANTD_CLI_GATEWAY: other }));
      assert.deepEqual(seen, [null, null]);
    } finally {
      await elsewhere.shutdown();
    }

    // logout ends the login on the gateway: neither its tokens nor a copy of the file work.
    const before = readFile(file).profiles.plant1.session;
    const out = await plant(["logout"]);
    assertOk(out);
    assert.match(out.stdout, /logged out of .* \(profile 'plant1'\)/);
    assert.equal(readFile(file).profiles.plant1.session, undefined);
    const me = await call(system.url, "GET", "/api/auth/me", undefined, {
      authorization: `Bearer ${before.access_token}`,
    });
    assert.equal(me.status, 401, JSON.stringify(me.body));
    const reuse = await call(system.url, "POST", "/api/auth/refresh", {
      refresh_token: before.refresh_token,
    });
    assert.equal(reuse.status, 401, JSON.stringify(reuse.body));
    assertFails(await plant(["state", "get", "k"]), 1, /Authentication required/);
    assert.match((await plant(["logout"])).stdout, /profile 'plant1' is not logged in/);

    // A login ended elsewhere (an admin disabling the user): the next refresh says so.
    const again = await runWithInput(
      ["login", "--username", "ada", "--password-stdin"],
      env,
      `${PASSWORD}\n`,
    );
    assertOk(again);
    const disabled = await call(
      system.url,
      "PATCH",
      "/api/auth/users/ada",
      { disabled: true },
      admin,
    );
    assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
    const stale = readFile(file);
    stale.profiles.plant1.session.expires_at = 0;
    Deno.writeTextFileSync(file, JSON.stringify(stale));
    assertFails(
      await plant(["state", "get", "k"]),
      1,
      /the login of profile 'plant1' was ended on the gateway .*: plant login --profile plant1/,
    );
    assert.equal(readFile(file).profiles.plant1.session, undefined);
  });
});

Deno.test("plant login on a terminal: the password prompt does not echo", async () => {
  await withSecuredSystem(async (system) => {
    const admin = { authorization: `Bearer ${await tokenWith(["auth:admin"])}` };
    const created = await call(system.url, "POST", "/api/auth/users", {
      username: "bob",
      password: PASSWORD,
      roles: ["viewer"],
    }, admin);
    assert.equal(created.status, 201);
    const { env, file } = configHome();
    const main = new URL("./main.ts", import.meta.url).pathname;
    // script(1) gives the child a terminal; what it echoes comes back on stdout.
    const child = new Deno.Command("script", {
      args: [
        "-qec",
        `${Deno.execPath()} run -A ${main} --gateway ${system.url} login --username bob`,
        "/dev/null",
      ],
      env: { ...env, NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let seen = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    // The password only once the prompt is there, with echo already off.
    while (!seen.includes("password: ")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(`${PASSWORD}\r`));
    for (let r = await reader.read(); !r.done; r = await reader.read()) seen += r.value;
    await writer.close().catch(() => {});
    const status = await child.status;
    await child.stderr.cancel();
    assert.equal(status.code, 0, seen);
    assert.match(seen, /logged in to .* as bob/);
    assert.ok(!seen.includes(PASSWORD), `the password was echoed: ${JSON.stringify(seen)}`);
    assert.equal(readFile(file).profiles.default.session.username, "bob");
  });
});

Deno.test("plant sub of a login outlives its access token: a fresh one is sent before it expires", async () => {
  await withSecuredSystem(async (system) => {
    const admin = { authorization: `Bearer ${await tokenWith(["auth:admin"])}` };
    const created = await call(system.url, "POST", "/api/auth/users", {
      username: "cy",
      password: PASSWORD,
      roles: ["viewer"],
    }, admin);
    assert.equal(created.status, 201);
    const { env, file } = configHome();
    assertOk(
      await runWithInput(
        ["--gateway", system.url, "login", "--username", "cy", "--password-stdin"],
        env,
        `${PASSWORD}\n`,
      ),
    );
    const first = readFile(file).profiles.default.session;
    const sub = new Streaming(["sub", "event", "alarm.", "-n", "1"], env);
    await sub.subscribed();
    // The gateway closes a socket whose token expired (4001): past that, it must still be open.
    await waitFor(() => Date.now() > first.expires_at + 2000, {
      timeoutMs: 60_000,
      what: "the first access token to expire",
    });
    const publisher = { authorization: `Bearer ${await tokenWith(["bus:publish:*"])}` };
    const published = await call(system.url, "POST", "/api/buses/event/messages", {
      topic: "alarm.pump",
      payload: "dry",
    }, publisher);
    assert.equal(published.status, 202, JSON.stringify(published.body));
    const streamed = await sub.result();
    assertOk(streamed);
    assert.equal(streamed.stdout, "alarm.pump dry\n");
    assert.notEqual(readFile(file).profiles.default.session.access_token, first.access_token);
  }, { gateway: { access_token_ttl_s: 10 } });
});

Deno.test("profiles: one change at a time (a second plant waits for the first's write, then reads it)", async () => {
  const { file } = configHome();
  const gate = Promise.withResolvers<void>();
  const entered = Promise.withResolvers<void>();
  const first = updateProfiles(file, async (data) => {
    entered.resolve();
    await gate.promise;
    return { data: { ...data, current: "first" }, result: undefined };
  });
  await entered.promise;
  const second = updateProfiles(file, (data) => Promise.resolve({ result: data.current }));
  // The second waits on the OS lock: a blocked flock of the lock file's inode shows as
  // "->" in /proc/locks.
  const inode = Deno.statSync(file.replace(/profiles\.json$/, "profiles.lock")).ino;
  await waitFor(
    () =>
      Deno.readTextFileSync("/proc/locks").split("\n")
        .some((l) => /-> FLOCK/.test(l) && l.includes(`:${inode} `)),
    { what: "the second change to wait for the lock" },
  );
  gate.resolve();
  await first;
  assert.equal(await second, "first");
});
