/**
 * `deno task bench:ha:matrix`: the failure matrix of docs/ha.md, measured.
 * Each scenario runs real `main.ts` processes on loopback under steady state
 * writes (open loop, a fresh key each, through an MdpClient as the gateway
 * sends them; bench/ha_failover.ts's WriteLoad), breaks one thing, repairs
 * it, and checks every write against the store afterwards:
 *
 * - `passive`: SIGKILL of the passive broker of a pair (libSQL state worker);
 * - `both-brokers`: both brokers SIGKILLed, restarted after `down_ms`;
 * - `partition`: the brokers' state channel cut (a TcpProxy in front of each
 *   `state_bind`, paused for `down_ms`) while clients reach both; the pair's
 *   states are polled every 25 ms for two actives; at the end of the cut one
 *   probe request is sent to the passive broker alone (a client that lost
 *   the active one), then the link heals;
 * - `pg-one`: SIGKILL of one of two state workers on PostgreSQL, restarted;
 * - `pg-both`: both PostgreSQL state workers SIGKILLed, restarted after `down_ms`;
 * - `pg-down`: PostgreSQL unreachable (a TcpProxy in front of it, paused for `down_ms`);
 * - `libsql`: SIGKILL of the only (libSQL) state worker, restarted at once;
 * - `disk-full`: a libSQL worker with `max_db_bytes` written until full;
 * - `bus-kill`: the bus process (deployments run the buses apart) SIGKILLed under a publisher,
 *   restarted after `down_ms`: messages a subscriber missed, time to the first after the restart;
 * - `gateway-kill`, `redis-down`, `authdb-down`: bench/ha_matrix_gateway.ts.
 *
 * Per repetition: writes failed (by error), lost (acknowledged, not in the
 * store), duplicated (revision above 1), phantoms (applied after the caller
 * was told it failed), and recovery: from the repair (restart, link back) to
 * the first acknowledgement of a write sent after it, and from the failure.
 * The raw result goes to bench/results/ha-matrix-<time>.json with provenance.
 *
 * Environment: BENCH_HA_MATRIX_REPS (3), BENCH_HA_MATRIX_ONLY (comma list of
 * scenarios), BENCH_HA_MATRIX_RATE (writes/s, 100), BENCH_HA_MATRIX_DOWN_MS
 * (outage length, 3000), BENCH_HA_MATRIX_PG (admin URL,
 * postgres://postgres@127.0.0.1:5432/postgres).
 *
 * @module
 */
import postgres from "postgres";
import { MdpClient } from "../mdp/client.ts";
import { Publisher } from "../bus/publisher.ts";
import { Subscriber } from "../bus/subscriber.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import {
  BrokerProcess,
  checkWrites,
  type PairPorts,
  pairPorts,
  startStateProcess,
  WriteLoad,
  type WriteRecord,
} from "../tests/_pair.ts";
import { freePort, spawnWatched, type WatchedChild } from "../tests/_helpers.ts";
import { spawnPgState } from "../tests/_state_pg.ts";
import { TcpProxy } from "../tests/_tcp_proxy.ts";
import { wantsHelp } from "../config/load.ts";
import { provenance } from "./harness.ts";
import { median } from "./_stats.ts";
import { gatewayScenarios } from "./ha_matrix_gateway.ts";

if (wantsHelp(Deno.args)) {
  console.log(`usage: deno task bench:ha:matrix

Failure scenarios on real processes (brokers, state workers, buses, gateways, PostgreSQL,
Redis): writes failed, lost, duplicated, phantoms, and recovery times (docs/ha.md).

environment:
  BENCH_HA_MATRIX_REPS     repetitions of each scenario (3)
  BENCH_HA_MATRIX_ONLY     comma list of scenarios (all)
  BENCH_HA_MATRIX_RATE     writes per second (100)
  BENCH_HA_MATRIX_DOWN_MS  outage length (3000)
  BENCH_HA_MATRIX_PG       PostgreSQL admin URL (postgres://postgres@127.0.0.1:5432/postgres)`);
  Deno.exit(0);
}

const ROOT = new URL("..", import.meta.url).pathname;
const env = (name: string, fallback: string) => Deno.env.get(name) ?? fallback;
const settings = {
  reps: Number(env("BENCH_HA_MATRIX_REPS", "3")),
  rate: Number(env("BENCH_HA_MATRIX_RATE", "100")),
  downMs: Number(env("BENCH_HA_MATRIX_DOWN_MS", "3000")),
  timeoutMs: 3000,
  heartbeatMs: 1000,
  pgAdmin: env("BENCH_HA_MATRIX_PG", "postgres://postgres@127.0.0.1:5432/postgres"),
};
const only = Deno.env.get("BENCH_HA_MATRIX_ONLY")?.split(",");
const log = (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
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

/** One repetition of a scenario. */
interface Rep {
  attempted: number;
  acked: number;
  failed: number;
  failedApplied: number;
  lost: number;
  duplicated: number;
  phantoms: number;
  errors: Record<string, number>;
  /** Failure to the first acknowledgement of a write sent after it. */
  fromFailureMs: number | null;
  /** Repair (restart, link back) to the first acknowledgement of a write sent after it. */
  fromRepairMs: number | null;
  /** Longest stretch without any acknowledgement, from the failure on. */
  longestGapMs: number;
  extra: Record<string, unknown>;
}

function errorsOf(records: readonly WriteRecord[]): Record<string, number> {
  const errors: Record<string, number> = {};
  for (const record of records) {
    if (record.error === undefined) continue;
    const kind = record.error.replace(/\s+/g, " ").slice(0, 80);
    errors[kind] = (errors[kind] ?? 0) + 1;
  }
  return errors;
}

function longestGap(records: readonly WriteRecord[], since: number): number {
  const acks = records.flatMap((r) => r.ackedAt === undefined ? [] : [r.ackedAt]).sort((a, b) =>
    a - b
  );
  let last = since;
  let gap = 0;
  for (const at of acks) {
    if (at < since) continue;
    gap = Math.max(gap, at - last);
    last = at;
  }
  return gap;
}

async function ensureScope(client: MdpClient, scope: string): Promise<void> {
  await until("the state service", 60_000, async () => {
    try {
      const [reply] = await client.request(STATE_SERVICE, [
        "create-scope",
        JSON.stringify({ service: scope }),
      ], { timeoutMs: 2000 });
      return JSON.parse(text(reply!)).success === true;
    } catch {
      return false;
    }
  });
}

/**
 * One repetition: writes flow, `fail` breaks something and repairs it,
 * returning when it broke and when it was repaired; writes go on until
 * `after` were acknowledged after the repair.
 */
async function rep(
  client: MdpClient,
  scope: string,
  fail: (
    load: WriteLoad,
  ) => Promise<{ failedAt: number; repairedAt: number; extra?: Rep["extra"] }>,
): Promise<Rep> {
  await ensureScope(client, scope);
  const load = new WriteLoad(client, scope, {
    rate: settings.rate,
    maxInFlight: 1024,
    timeoutMs: settings.timeoutMs,
  });
  let outcome;
  try {
    await until("writes before the failure", 30_000, () => load.acked >= settings.rate);
    outcome = await fail(load);
    await until(
      "writes after the repair",
      60_000,
      () => load.ackedSince(outcome!.repairedAt) >= settings.rate,
    );
  } finally {
    await load.stop();
  }
  const check = await checkWrites(client, scope, load.records);
  const first = (since: number) => {
    const at = load.firstAckSince(since);
    return at === undefined ? null : at - since;
  };
  return {
    attempted: check.attempted,
    acked: check.acked,
    failed: check.failed,
    failedApplied: check.failedApplied,
    lost: check.lost.length,
    duplicated: check.duplicated.length,
    phantoms: check.phantoms.length,
    errors: errorsOf(load.records),
    fromFailureMs: first(outcome.failedAt),
    fromRepairMs: first(outcome.repairedAt),
    longestGapMs: longestGap(load.records, outcome.failedAt),
    extra: outcome.extra ?? {},
  };
}

function brokerProcess(endpoint: string): WatchedChild {
  return spawnWatched(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "broker",
        "--endpoint",
        endpoint,
        "--health-port",
        String(freePort()),
        "--buses",
        "[]",
        "--heartbeat-interval-ms",
        "200",
        "--heartbeat-liveness",
        "10",
        "--log-level",
        "warn",
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }),
  );
}

async function healthUp(port: number): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    await response.body?.cancel();
    return response.status === 200;
  } catch {
    return false;
  }
}

type Scenario = (reps: number) => Promise<Rep[]>;

/** A pair with a libSQL state worker; `ports` per broker (the partition points peers at proxies). */
async function withPair<T>(
  body: (pair: {
    brokers: Record<"primary" | "backup", BrokerProcess>;
    client: MdpClient;
    ports: PairPorts;
  }) => Promise<T>,
  portsFor?: (ports: PairPorts) => Record<"primary" | "backup", PairPorts>,
): Promise<T> {
  const ports = pairPorts();
  const perRole = portsFor?.(ports) ?? { primary: ports, backup: ports };
  const dir = await Deno.makeTempDir({ prefix: "bench-ha-matrix-" });
  const brokers = {
    primary: new BrokerProcess(perRole.primary, "primary", settings.heartbeatMs),
    backup: new BrokerProcess(perRole.backup, "backup", settings.heartbeatMs),
  };
  const endpoints = [ports.primary.endpoint, ports.backup.endpoint];
  const state = startStateProcess(endpoints, `${dir}/state.db`);
  const client = new MdpClient(endpoints, { timeoutMs: settings.timeoutMs });
  try {
    await brokers.primary.waitState("active", 60_000);
    await brokers.backup.waitState("passive", 60_000);
    return await body({ brokers, client, ports });
  } finally {
    await client.close();
    await state.stop("SIGKILL");
    await brokers.primary.kill();
    await brokers.backup.kill();
    await Deno.remove(dir, { recursive: true });
  }
}

const passive: Scenario = (reps) =>
  withPair(async ({ brokers, client }) => {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `passive-${i}`, async () => {
          const victim = (await brokers.primary.state()) === "active" ? "backup" : "primary";
          const failedAt = Date.now();
          await brokers[victim].kill();
          await sleep(settings.downMs);
          const repairedAt = Date.now();
          brokers[victim].restart();
          await brokers[victim].waitState("passive", 60_000);
          return { failedAt, repairedAt, extra: { victim, rejoinMs: Date.now() - repairedAt } };
        }),
      );
      log(`passive ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  });

const bothBrokers: Scenario = (reps) =>
  withPair(async ({ brokers, client }) => {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `both-${i}`, async () => {
          const failedAt = Date.now();
          await Promise.all([brokers.primary.kill(), brokers.backup.kill()]);
          await sleep(settings.downMs);
          const repairedAt = Date.now();
          brokers.primary.restart();
          brokers.backup.restart();
          await brokers.primary.waitState("active", 60_000);
          const primaryActiveMs = Date.now() - repairedAt;
          await brokers.backup.waitState("passive", 60_000);
          return { failedAt, repairedAt, extra: { primaryActiveMs } };
        }),
      );
      log(`both-brokers ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  });

const partition: Scenario = async (reps) => {
  // Each broker reaches its peer's state channel through a proxy that can be cut.
  const proxies: TcpProxy[] = [];
  try {
    return await withPair(async ({ brokers, client, ports }) => {
      const out: Rep[] = [];
      for (let i = 0; i < reps; i++) {
        out.push(
          await rep(client, `partition-${i}`, async () => {
            // Poll both brokers for two actives (split brain) across the cut.
            let polling = true;
            let bothActiveMs = 0;
            let maxBothActiveStretchMs = 0;
            let stretchStart: number | undefined;
            const poller = (async () => {
              while (polling) {
                const [p, b] = await Promise.all([brokers.primary.state(), brokers.backup.state()]);
                const now = Date.now();
                if (p === "active" && b === "active") {
                  stretchStart ??= now;
                } else if (stretchStart !== undefined) {
                  bothActiveMs += now - stretchStart;
                  maxBothActiveStretchMs = Math.max(maxBothActiveStretchMs, now - stretchStart);
                  stretchStart = undefined;
                }
                await sleep(25);
              }
            })();
            const failedAt = Date.now();
            await Promise.all(proxies.map((p) => p.pause()));
            await sleep(settings.downMs);
            const statesAtCutEnd = {
              primary: await brokers.primary.state(),
              backup: await brokers.backup.state(),
            };
            // A client that lost the active broker votes at the passive one alone.
            const probe = new MdpClient(ports.backup.endpoint, { timeoutMs: 2000 });
            let probeReply: string;
            try {
              const [reply] = await probe.request(STATE_SERVICE, [
                "state-get",
                JSON.stringify({ service: `partition-${i}`, key: "k1" }),
              ]);
              probeReply = JSON.parse(text(reply!)).success === true ? "served" : "error reply";
            } catch (error) {
              probeReply = error instanceof Error ? error.message.slice(0, 80) : String(error);
            } finally {
              await probe.close();
            }
            const statesAfterProbe = {
              primary: await brokers.primary.state(),
              backup: await brokers.backup.state(),
            };
            const repairedAt = Date.now();
            for (const p of proxies) p.resume();
            await brokers.primary.waitState("active", 60_000);
            await brokers.backup.waitState("passive", 60_000);
            const healedMs = Date.now() - repairedAt;
            polling = false;
            await poller;
            if (stretchStart !== undefined) bothActiveMs += Date.now() - stretchStart;
            return {
              failedAt,
              repairedAt,
              extra: {
                statesAtCutEnd,
                probeReply,
                statesAfterProbe,
                healedMs,
                bothActiveMs,
                maxBothActiveStretchMs,
              },
            };
          }),
        );
        log(`partition ${i + 1}: ${JSON.stringify(out.at(-1))}`);
      }
      return out;
    }, (ports) => {
      const toPrimary = new TcpProxy({
        hostname: "127.0.0.1",
        port: Number(new URL(ports.primary.stateBind.replace("tcp", "http")).port),
      });
      const toBackup = new TcpProxy({
        hostname: "127.0.0.1",
        port: Number(new URL(ports.backup.stateBind.replace("tcp", "http")).port),
      });
      proxies.push(toPrimary, toBackup);
      return {
        primary: {
          ...ports,
          backup: { ...ports.backup, stateBind: `tcp://127.0.0.1:${toBackup.port}` },
        },
        backup: {
          ...ports,
          primary: { ...ports.primary, stateBind: `tcp://127.0.0.1:${toPrimary.port}` },
        },
      };
    });
  } finally {
    for (const p of proxies) await p.close();
  }
};

/** One broker, two state workers on a fresh PostgreSQL database reached through a proxy. */
async function withPg<T>(
  body: (pg: {
    client: MdpClient;
    workers: { child: WatchedChild; healthPort: number; restart(): void }[];
    proxy: TcpProxy;
  }) => Promise<T>,
): Promise<T> {
  const admin = postgres(settings.pgAdmin, { max: 1, onnotice: () => {} });
  const name = `hlp_hamatrix_${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  await admin.unsafe(`create database ${name}`);
  const target = new URL(settings.pgAdmin);
  const proxy = new TcpProxy({ hostname: target.hostname, port: Number(target.port || 5432) });
  const url = new URL(settings.pgAdmin);
  url.port = String(proxy.port);
  url.pathname = `/${name}`;
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const broker = brokerProcess(endpoint);
  const workers = [0, 1].map(() => {
    const healthPort = freePort();
    const worker = {
      healthPort,
      child: spawnPgState(url.toString(), endpoint, healthPort),
      restart() {
        worker.child = spawnPgState(url.toString(), endpoint, healthPort);
      },
    };
    return worker;
  });
  const client = new MdpClient(endpoint, { timeoutMs: settings.timeoutMs });
  try {
    for (const w of workers) {
      await until("a PostgreSQL state worker", 60_000, () => healthUp(w.healthPort));
    }
    return await body({ client, workers, proxy });
  } finally {
    await client.close();
    for (const w of workers) await w.child.stop("SIGKILL");
    await broker.stop("SIGKILL");
    await proxy.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end({ timeout: 1 });
  }
}

const pgOne: Scenario = (reps) =>
  withPg(async ({ client, workers }) => {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `pg-one-${i}`, async () => {
          const w = workers[i % 2]!;
          const failedAt = Date.now();
          await w.child.stop("SIGKILL");
          await sleep(settings.downMs);
          const repairedAt = Date.now();
          w.restart();
          await until("the restarted worker", 60_000, () => healthUp(w.healthPort));
          return { failedAt, repairedAt, extra: { restartToHealthyMs: Date.now() - repairedAt } };
        }),
      );
      log(`pg-one ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  });

const pgBoth: Scenario = (reps) =>
  withPg(async ({ client, workers }) => {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `pg-both-${i}`, async () => {
          const failedAt = Date.now();
          await Promise.all(workers.map((w) => w.child.stop("SIGKILL")));
          await sleep(settings.downMs);
          const repairedAt = Date.now();
          for (const w of workers) w.restart();
          return { failedAt, repairedAt };
        }),
      );
      log(`pg-both ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  });

const pgDown: Scenario = (reps) =>
  withPg(async ({ client, workers, proxy }) => {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `pg-down-${i}`, async () => {
          const failedAt = Date.now();
          await proxy.pause();
          await sleep(settings.downMs);
          const healthDuring = await Promise.all(workers.map((w) => healthUp(w.healthPort)));
          const repairedAt = Date.now();
          proxy.resume();
          return { failedAt, repairedAt, extra: { workersHealthyDuringOutage: healthDuring } };
        }),
      );
      log(`pg-down ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  });

const libsql: Scenario = async (reps) => {
  const dir = await Deno.makeTempDir({ prefix: "bench-ha-matrix-" });
  const endpoint = `tcp://127.0.0.1:${freePort()}`;
  const broker = brokerProcess(endpoint);
  let state = startStateProcess([endpoint], `${dir}/state.db`);
  const client = new MdpClient(endpoint, { timeoutMs: settings.timeoutMs });
  try {
    const out: Rep[] = [];
    for (let i = 0; i < reps; i++) {
      out.push(
        await rep(client, `libsql-${i}`, async () => {
          const failedAt = Date.now();
          await state.stop("SIGKILL");
          // Restarted at once, as a supervisor would.
          state = startStateProcess([endpoint], `${dir}/state.db`);
          return { failedAt, repairedAt: Date.now() };
        }),
      );
      log(`libsql ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    }
    return out;
  } finally {
    await client.close();
    await state.stop("SIGKILL");
    await broker.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
};

/** Writes until the store refuses; then reads, and a restart with room, are checked. */
const diskFull: Scenario = async (reps) => {
  const out: Rep[] = [];
  for (let i = 0; i < reps; i++) {
    const dir = await Deno.makeTempDir({ prefix: "bench-ha-matrix-" });
    const endpoint = `tcp://127.0.0.1:${freePort()}`;
    const broker = brokerProcess(endpoint);
    const spawn = (maxBytes: number) =>
      spawnWatched(
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "main.ts",
            "state",
            "--broker-endpoint",
            endpoint,
            "--db",
            `${dir}/state.db`,
            "--max-db-bytes",
            String(maxBytes),
            "--health-port",
            "0",
            "--bus-endpoint",
            "",
            "--log-level",
            "warn",
          ],
          cwd: ROOT,
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }),
      );
    let state = spawn(128 * 1024);
    const client = new MdpClient(endpoint, { timeoutMs: settings.timeoutMs });
    try {
      out.push(
        await rep(client, `disk-${i}`, async (load) => {
          // Full: the first refused write.
          await until("the store to fill", 120_000, () => load.records.some((r) => r.error));
          const failedAt = load.records.find((r) => r.error)!.failedAt!;
          await sleep(1000);
          // Reads still answer while full.
          let readOk = false;
          try {
            const [reply] = await client.request(STATE_SERVICE, [
              "state-get",
              JSON.stringify({ service: `disk-${i}`, key: "k1" }),
            ]);
            readOk = JSON.parse(text(reply!)).success === true;
          } catch {
            readOk = false;
          }
          // Room made: the operator raises the limit and restarts the worker.
          const repairedAt = Date.now();
          await state.stop("SIGTERM");
          state = spawn(0);
          return { failedAt, repairedAt, extra: { readWhileFull: readOk } };
        }),
      );
      log(`disk-full ${i + 1}: ${JSON.stringify(out.at(-1))}`);
    } finally {
      await client.close();
      await state.stop("SIGKILL");
      await broker.stop("SIGKILL");
      await Deno.remove(dir, { recursive: true });
    }
  }
  return out;
};

/**
 * The bus process (compose/k8s run the buses apart from the broker pair, one
 * process): SIGKILLed under a publisher at 100 messages/s, restarted after
 * the outage; what a subscriber misses, and how soon after the restart
 * messages flow again (ZeroMQ reconnects both sides by itself).
 */
const busKill = async (reps: number): Promise<unknown[]> => {
  const out: unknown[] = [];
  for (let i = 0; i < reps; i++) {
    const frontend = `tcp://127.0.0.1:${freePort()}`;
    const backend = `tcp://127.0.0.1:${freePort()}`;
    const spawn = () =>
      spawnWatched(
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "main.ts",
            "bus",
            "--buses",
            JSON.stringify([{ name: "event", frontend, backend }]),
            "--health-port",
            "0",
            "--log-level",
            "warn",
          ],
          cwd: ROOT,
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }),
      );
    let bus = spawn();
    const subscriber = new Subscriber(backend, { bus: "event", topics: ["ha."] });
    const publisher = new Publisher(frontend, { form: "frames" });
    const arrivals: { seq: number; at: number }[] = [];
    const reading = (async () => {
      for await (const message of subscriber) {
        arrivals.push({ seq: Number(text(message.payload)), at: Date.now() });
      }
    })();
    let seq = 0;
    const timer = setInterval(
      () => publisher.publish("ha.tick", String(seq++)),
      1000 / settings.rate,
    );
    try {
      await until("messages through the bus", 30_000, () => arrivals.length > 0);
      const killedAt = Date.now();
      const seqAtKill = seq;
      await bus.stop("SIGKILL");
      await sleep(settings.downMs);
      const restartedAt = Date.now();
      bus = spawn();
      await until(
        "messages again after the restart",
        60_000,
        () => arrivals.some((a) => a.at > restartedAt),
      );
      const first = arrivals.find((a) => a.at > restartedAt)!;
      const seqAtFirst = first.seq;
      const received = new Set(arrivals.map((a) => a.seq));
      let missed = 0;
      for (let s = seqAtKill; s < seqAtFirst; s++) if (!received.has(s)) missed++;
      const entry = {
        fromRepairMs: first.at - restartedAt,
        fromFailureMs: first.at - killedAt,
        publishedMeanwhile: seqAtFirst - seqAtKill,
        missed,
      };
      out.push(entry);
      log(`bus-kill ${i + 1}: ${JSON.stringify(entry)}`);
    } finally {
      clearInterval(timer);
      await publisher.close();
      await subscriber.close();
      await reading.catch(() => {});
      await bus.stop("SIGKILL");
    }
  }
  return out;
};

const scenarios: Record<string, (reps: number) => Promise<unknown[]>> = {
  passive,
  "both-brokers": bothBrokers,
  partition,
  "pg-one": pgOne,
  "pg-both": pgBoth,
  "pg-down": pgDown,
  libsql,
  "disk-full": diskFull,
  "bus-kill": busKill,
  ...gatewayScenarios(settings, log),
};

function spread(values: (number | null)[]) {
  const v = values.filter((x): x is number => x !== null);
  return v.length
    ? { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length }
    : null;
}

const watchdog = setTimeout(() => {
  console.error("bench:ha:matrix: watchdog expired");
  Deno.exit(2);
}, 30 * 60_000);
const startedAt = new Date().toISOString();
const loadBefore = (await Deno.readTextFile("/proc/loadavg")).trim();
const results: Record<string, unknown> = {};
for (const [name, scenario] of Object.entries(scenarios)) {
  if (only && !only.includes(name)) continue;
  log(`scenario ${name}`);
  try {
    const all = await scenario(settings.reps);
    if (!all.every((r) => typeof r === "object" && r !== null && "attempted" in r)) {
      results[name] = { reps: all };
      continue;
    }
    const reps = all as Rep[];
    results[name] = {
      reps,
      fromRepairMs: spread(reps.map((r) => r.fromRepairMs)),
      fromFailureMs: spread(reps.map((r) => r.fromFailureMs)),
      failed: spread(reps.map((r) => r.failed)),
      lost: reps.reduce((a, r) => a + r.lost, 0),
      duplicated: reps.reduce((a, r) => a + r.duplicated, 0),
      phantoms: reps.reduce((a, r) => a + r.phantoms, 0),
    };
  } catch (error) {
    log(`scenario ${name} failed: ${error instanceof Error ? error.stack : error}`);
    results[name] = { error: String(error) };
  }
}
clearTimeout(watchdog);
const loadAfter = (await Deno.readTextFile("/proc/loadavg")).trim();
const saved = {
  bench: "ha-matrix",
  time: startedAt,
  ...(await provenance()),
  loadavg: { before: loadBefore, after: loadAfter },
  settings,
  only: only ?? null,
  results,
};
await Deno.mkdir(`${ROOT}bench/results`, { recursive: true });
const path = `${ROOT}bench/results/ha-matrix-${startedAt.replace(/[:.]/g, "-")}.json`;
await Deno.writeTextFile(path, JSON.stringify(saved, null, 2) + "\n");
for (const [name, r] of Object.entries(results)) {
  const { reps: _, ...summary } = r as { reps?: unknown };
  console.log(`${name}: ${JSON.stringify(summary)}`);
}
console.log(`result: ${path}`);
Deno.exit(0);
