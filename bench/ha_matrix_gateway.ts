/**
 * The gateway rows of bench/ha_matrix.ts: a broker and a state worker (in
 * this process, tests/_system.ts), two `main.ts gateway` processes sharing a
 * private redis-server and an auth database on PostgreSQL (reached through a
 * TcpProxy), and HTTP state writes (`PUT /api/state/…`, open loop, a token
 * from a login) through each gateway. Each repetition breaks one thing for
 * `downMs` and repairs it; replies are counted by status, per gateway and per
 * phase (before, during, after), and recovery is the repair to the first 200
 * of a request sent after it (for the auth database: of a login).
 *
 * @module
 */
import postgres from "postgres";
import { SECRET } from "../tests/_auth.ts";
import { freePort, spawnWatched, type WatchedChild } from "../tests/_helpers.ts";
import { databaseUrl } from "../tests/_postgres.ts";
import { RedisServer } from "../tests/_redis.ts";
import { startSystem, type System } from "../tests/_system.ts";
import { TcpProxy } from "../tests/_tcp_proxy.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PASSWORD = "correct horse battery";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, timeoutMs: number, ready: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (Date.now() > deadline) {
      throw new Error(`bench:ha:matrix: ${what} not within ${timeoutMs} ms`);
    }
    await sleep(25);
  }
}

interface Reply {
  sentAt: number;
  doneAt: number;
  status: number | string;
}

/** A gateway process that can be SIGKILLed and restarted on its port. */
class GatewayProcess {
  readonly port = freePort();
  child!: WatchedChild;
  readonly url: string;
  #env: Record<string, string>;

  constructor(env: Record<string, string>) {
    this.url = `http://127.0.0.1:${this.port}`;
    this.#env = env;
    this.start();
  }

  start(): void {
    this.child = spawnWatched(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--config", `${ROOT}deno.json`, `${ROOT}main.ts`, "gateway"],
        cwd: ROOT,
        env: { ...this.#env, PLANTD_GATEWAY_PORT: String(this.port) },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }),
    );
  }

  async live(): Promise<boolean> {
    try {
      await (await fetch(`${this.url}/livez`)).body?.cancel();
      return true;
    } catch {
      return false;
    }
  }
}

/** Open-loop HTTP writes through one gateway, each reply's status kept. */
class HttpLoad {
  readonly replies: Reply[] = [];
  #stopped = false;
  #loop: Promise<void>;
  #inFlight = new Set<Promise<void>>();
  #n = 0;

  constructor(url: string, token: string, scope: string, rate: number) {
    const interval = 1000 / rate;
    this.#loop = (async () => {
      let due = Date.now();
      while (!this.#stopped) {
        while (due <= Date.now()) {
          const p: Promise<void> = this.#one(url, token, scope).finally(() =>
            this.#inFlight.delete(p)
          );
          this.#inFlight.add(p);
          due += interval;
        }
        await sleep(Math.max(1, due - Date.now()));
      }
    })();
  }

  async #one(url: string, token: string, scope: string): Promise<void> {
    const key = `k${++this.#n}`;
    const reply: Reply = { sentAt: Date.now(), doneAt: 0, status: 0 };
    try {
      const response = await fetch(`${url}/api/state/${scope}/${key}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ value: key }),
        signal: AbortSignal.timeout(5000),
      });
      await response.body?.cancel();
      reply.status = response.status;
    } catch (error) {
      reply.status = error instanceof Error ? error.name : "error";
    }
    reply.doneAt = Date.now();
    this.replies.push(reply);
  }

  okSince(since: number): number {
    return this.replies.filter((r) => r.status === 200 && r.sentAt >= since).length;
  }

  firstOkSince(since: number): number | null {
    const oks = this.replies.filter((r) => r.status === 200 && r.sentAt >= since).map((r) =>
      r.doneAt
    );
    return oks.length ? Math.min(...oks) - since : null;
  }

  /** Replies by status, of requests sent in [from, to). */
  statuses(from: number, to: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.replies) {
      if (r.sentAt < from || r.sentAt >= to) continue;
      out[String(r.status)] = (out[String(r.status)] ?? 0) + 1;
    }
    return out;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
    await Promise.all(this.#inFlight);
  }
}

async function login(
  url: string,
  timeoutMs = 5000,
): Promise<{ status: number | string; token?: string; code?: string; ms: number }> {
  const start = Date.now();
  try {
    const response = await fetch(`${url}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "root", password: PASSWORD }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = await response.json();
    return {
      status: response.status,
      token: body.access_token,
      code: body.error?.code,
      ms: Date.now() - start,
    };
  } catch (error) {
    return { status: error instanceof Error ? error.name : "error", ms: Date.now() - start };
  }
}

interface Setup {
  system: System;
  gateways: [GatewayProcess, GatewayProcess];
  redis: RedisServer;
  authProxy: TcpProxy;
  token: string;
}

async function withGateways<T>(
  pgAdmin: string,
  body: (setup: Setup) => Promise<T>,
): Promise<T> {
  const admin = postgres(pgAdmin, { max: 1, onnotice: () => {} });
  const name = `hlp_hamatrix_auth_${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  await admin.unsafe(`create database ${name}`);
  const target = new URL(pgAdmin);
  const authProxy = new TcpProxy({ hostname: target.hostname, port: Number(target.port || 5432) });
  const direct = databaseUrl(name);
  const proxied = new URL(direct);
  proxied.port = String(authProxy.port);
  const redis = new RedisServer();
  await redis.start();
  let system: System | undefined;
  const gateways: GatewayProcess[] = [];
  try {
    const added = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "user-add", "--username", "root", "--roles", "admin"]
        .concat(["--auth-db", direct]),
      cwd: ROOT,
      env: { PLANTD_USER_PASSWORD: PASSWORD },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!added.success) throw new Error(new TextDecoder().decode(added.stderr));
    system = await startSystem({ state: { jwt_secret: SECRET } });
    const env = {
      PLANTD_GATEWAY_BROKER_ENDPOINT: system.brokerEndpoint,
      PLANTD_GATEWAY_BUSES: JSON.stringify(system.backends),
      PLANTD_GATEWAY_METRICS_DB: "",
      PLANTD_GATEWAY_LOG_LEVEL: "error",
      PLANTD_GATEWAY_STATE_BUS_SECRET: system.stateBusSecret,
      PLANTD_GATEWAY_JWT_SECRET: SECRET,
      PLANTD_GATEWAY_AUTH_DB: proxied.toString(),
      PLANTD_REDIS_URL: redis.url,
      // Request replays of the bench are not abuse.
      PLANTD_GATEWAY_RATE_LIMIT_PER_IP: "100000",
    };
    gateways.push(new GatewayProcess(env), new GatewayProcess(env));
    for (const g of gateways) await until("a gateway's /livez", 60_000, () => g.live());
    const first = await login(gateways[0]!.url);
    if (!first.token) throw new Error(`login: ${JSON.stringify(first)}`);
    return await body({
      system,
      gateways: gateways as [GatewayProcess, GatewayProcess],
      redis,
      authProxy,
      token: first.token,
    });
  } finally {
    for (const g of gateways) await g.child.stop("SIGKILL");
    await system?.stop();
    await redis.stop();
    await authProxy.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end({ timeout: 1 });
  }
}

/** One repetition: loads through both gateways, `fail` breaks and repairs. */
async function gatewayRep(
  setup: Setup,
  scope: string,
  rate: number,
  fail: () => Promise<{ failedAt: number; repairedAt: number; extra?: Record<string, unknown> }>,
) {
  const loads = setup.gateways.map((g) => new HttpLoad(g.url, setup.token, scope, rate));
  let outcome;
  try {
    await until("writes before", 30_000, () => loads.every((l) => l.okSince(0) >= rate));
    outcome = await fail();
    await until(
      "writes after the repair",
      60_000,
      () => loads.every((l) => l.okSince(outcome!.repairedAt) >= rate),
    );
  } finally {
    for (const l of loads) await l.stop();
  }
  const end = Date.now() + 1;
  return {
    gateways: loads.map((l) => ({
      during: l.statuses(outcome.failedAt, outcome.repairedAt),
      after: l.statuses(outcome.repairedAt, end),
      before: l.statuses(0, outcome.failedAt),
      fromRepairMs: l.firstOkSince(outcome.repairedAt),
    })),
    extra: outcome.extra ?? {},
  };
}

/** The gateway scenarios, by name; each returns its repetitions. */
export function gatewayScenarios(
  settings: { pgAdmin: string; downMs: number; rate: number },
  log: (line: string) => void,
): Record<string, (reps: number) => Promise<unknown[]>> {
  const rate = Math.max(10, Math.round(settings.rate / 4));
  return {
    "gateway-kill": (reps) =>
      withGateways(settings.pgAdmin, async (setup) => {
        const out = [];
        for (let i = 0; i < reps; i++) {
          out.push(
            await gatewayRep(setup, `gwkill${i}`, rate, async () => {
              const victim = setup.gateways[1];
              const failedAt = Date.now();
              await victim.child.stop("SIGKILL");
              await sleep(settings.downMs);
              const repairedAt = Date.now();
              victim.start();
              await until("the restarted gateway", 60_000, () => victim.live());
              return { failedAt, repairedAt, extra: { restartToLiveMs: Date.now() - repairedAt } };
            }),
          );
          log(`gateway-kill ${i + 1}: ${JSON.stringify(out.at(-1))}`);
        }
        return out;
      }),
    "redis-down": (reps) =>
      withGateways(settings.pgAdmin, async (setup) => {
        const out = [];
        for (let i = 0; i < reps; i++) {
          out.push(
            await gatewayRep(setup, `redis${i}`, rate, async () => {
              const failedAt = Date.now();
              await setup.redis.stop();
              await sleep(settings.downMs / 2);
              const loginDuring = await login(setup.gateways[0].url);
              await sleep(settings.downMs / 2);
              const repairedAt = Date.now();
              await setup.redis.start();
              return {
                failedAt,
                repairedAt,
                extra: { loginDuring: { status: loginDuring.status, code: loginDuring.code } },
              };
            }),
          );
          log(`redis-down ${i + 1}: ${JSON.stringify(out.at(-1))}`);
        }
        return out;
      }),
    "authdb-down": (reps) =>
      withGateways(settings.pgAdmin, async (setup) => {
        const out = [];
        for (let i = 0; i < reps; i++) {
          out.push(
            await gatewayRep(setup, `authdb${i}`, rate, async () => {
              const failedAt = Date.now();
              await setup.authProxy.pause();
              await sleep(settings.downMs / 2);
              // Given long enough to see what a login gets, however long that takes.
              const loginDuring = await login(setup.gateways[0].url, 30_000);
              await sleep(settings.downMs / 2);
              const repairedAt = Date.now();
              setup.authProxy.resume();
              let loginAfter = await login(setup.gateways[0].url);
              while (loginAfter.status !== 200 && Date.now() - repairedAt < 60_000) {
                await sleep(25);
                loginAfter = await login(setup.gateways[0].url);
              }
              return {
                failedAt,
                repairedAt,
                extra: {
                  loginDuring: {
                    status: loginDuring.status,
                    code: loginDuring.code,
                    ms: loginDuring.ms,
                  },
                  loginBackMs: Date.now() - repairedAt,
                },
              };
            }),
          );
          log(`authdb-down ${i + 1}: ${JSON.stringify(out.at(-1))}`);
        }
        return out;
      }),
  };
}
