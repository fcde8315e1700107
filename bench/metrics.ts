/**
 * `deno task bench:metrics`: points/s from the metric bus into PostgreSQL
 * through the real ingester component (`main.ts metrics` in a child
 * process), next to the ceiling: a plain multi-row INSERT loop written
 * directly with `postgres` in this process, same table, batch size and
 * number of connections, no bus and no parsing; and paced runs at defaults
 * with loss counted. Runs on bench/harness.ts: ceiling, ingest and paced runs
 * interleave in rotating order; median and range over rounds.
 *
 * A saturated ingest run publishes `points` points as fast as one publisher
 * can (high-water marks off everywhere and a buffer for every point, so
 * nothing is lost on the way: not the defaults, and labelled so) and ends
 * when the ingester's `metrics_points_written_total` reaches them all: the
 * rate is points over the time from the first publish to the last commit.
 * A run also checks that the database holds every point. A paced run
 * publishes at a fixed rate through a bus, publisher and ingester at their
 * defaults and counts what was not written as lost.
 *
 * @module
 */
import postgres from "postgres";
import { Bus } from "../bus/bus.ts";
import { Publisher } from "../bus/publisher.ts";
import { openPgWriter } from "../metrics/pg.ts";
import { connectableEndpoint } from "../roles/running.ts";
import { cpuTicks, num, ticksOfCommand, ticksPerSecond } from "./_stats.ts";
import { Child, filesystemOf, freePort, type Metrics, runBench } from "./harness.ts";

/** Points per saturated run: the `points` setting, set when the bench starts. */
let POINTS = 300_000;
const WARMUP_POINTS = 20_000;
const BATCH = 5000;
const CONNECTIONS = 2;
const TARGET_RATE = 100_000;
const TARGET_SHARE = 0.7;
const T0 = Date.UTC(2024, 0, 1);
const DEVICES = 20;
const CHANNELS = 10;

function databaseUrl(admin: string, name: string): string {
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

interface Row {
  time: number;
  device: string;
  channel: string;
  value: number;
  tags: string | null;
}

const TAGS = '{"line":"a"}';

/** Point i of a run: 20 devices x 10 channels, one point per ms; tags as the seed form has them. */
function row(i: number, offset: number, tagged = false): Row {
  return {
    time: T0 + offset + i,
    device: `press-${i % DEVICES}`,
    channel: `ch-${(i / DEVICES | 0) % CHANNELS}`,
    value: (i % 1000) / 8,
    tags: tagged ? TAGS : null,
  };
}

/** What Go plantd's logger publishes for point i. */
function goPayload(r: Row): string {
  return `{"time":"${
    new Date(r.time).toISOString()
  }","device":"${r.device}","channel":"${r.channel}","value":${r.value}}`;
}

/** The seed's richer form for point i, with tags. */
function seedPayload(r: Row): string {
  return `{"timestamp":"${
    new Date(r.time).toISOString()
  }","service_name":"${r.device}","metric_name":"${r.channel}","value":${r.value},"tags":${TAGS}}`;
}

// ---------------------------------------------------------------------------
// The ceiling: a multi-row INSERT loop straight on `postgres`.

type Insert = (sql: postgres.Sql, rows: Row[]) => Promise<unknown>;

/** One statement, five array parameters: what the ingester sends too. */
const unnestInsert: Insert = (sql, rows) =>
  sql`insert into metrics (time, device, channel, value, tags)
    select to_timestamp(t / 1000.0), d, c, v, g::jsonb
    from unnest(${rows.map((r) => r.time)}::float8[], ${rows.map((r) => r.device)}::text[],
      ${rows.map((r) => r.channel)}::text[], ${rows.map((r) => r.value)}::float8[],
      ${rows.map((r) => r.tags)}::text[]) as u(t, d, c, v, g)`;

/** `insert … values (…), (…)` with postgres.js's row helper: five parameters per row. */
const valuesInsert: Insert = (sql, rows) =>
  sql`insert into metrics ${
    sql(
      rows.map((r) => ({
        time: new Date(r.time),
        device: r.device,
        channel: r.channel,
        value: r.value,
        tags: r.tags,
      })),
    )
  }`;

/** One measured run, with CPU time per point of each party (µs). */
interface Run {
  rate: number;
  /** The ingester process, or this process for the ceiling's client. */
  mainUs: number;
  /** This process while ingesting: the publisher and the bus proxy thread. */
  publisherUs: number;
  /** Every process named postgres on the machine (ours and, alas, other users'). */
  postgresUs: number;
}

/** utime + stime ticks of every postgres process. */
const postgresTicks = () => ticksOfCommand("postgres");

/** Starts CPU accounting; the returned function gives µs per point since. */
async function cpuMeter(mainPid: number | "self") {
  const perTick = 1e6 / await ticksPerSecond();
  const main = cpuTicks(mainPid) ?? 0;
  const self = cpuTicks("self") ?? 0;
  const pg = postgresTicks();
  return (points: number) => ({
    mainUs: ((cpuTicks(mainPid) ?? 0) - main) * perTick / points,
    publisherUs: mainPid === "self" ? 0 : ((cpuTicks("self") ?? 0) - self) * perTick / points,
    postgresUs: (postgresTicks() - pg) * perTick / points,
  });
}

/** Rows in the metrics table. */
async function countRows(sql: postgres.Sql): Promise<number> {
  return (await sql`select count(*)::int as n from metrics`)[0]!.n;
}

/** Where a direct run writes its batches. */
interface Sink {
  write(rows: Row[]): Promise<unknown>;
  count(): Promise<number>;
  close(): Promise<void>;
}

/** An INSERT loop on a plain `postgres` client. */
function insertSink(url: string, insert: Insert): Sink {
  const sql = postgres(url, { max: CONNECTIONS, onnotice: () => {} });
  return {
    write: (rows) => insert(sql, rows),
    count: () => countRows(sql),
    close: () => sql.end(),
  };
}

/** The ingester's own writer, fed rows from memory. */
async function writerSink(url: string): Promise<Sink> {
  const writer = await openPgWriter(url, { mode: "off", connections: CONNECTIONS });
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  return {
    write: (rows) => writer.write(rows),
    count: () => countRows(sql),
    close: async () => {
      await writer.close();
      await sql.end();
    },
  };
}

async function ceiling(
  url: string,
  sink: Sink | Promise<Sink>,
  batch: number,
  tagged = false,
): Promise<Run> {
  const direct = await sink;
  try {
    const rows = Array.from({ length: POINTS }, (_, i) => row(i, 0, tagged));
    await truncate(url);
    let next = 0;
    const meter = await cpuMeter("self");
    const started = performance.now();
    await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
      while (next < rows.length) {
        const from = next;
        next += batch;
        await direct.write(rows.slice(from, from + batch));
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const cpu = meter(POINTS);
    const n = await direct.count();
    if (n !== POINTS) throw new Error(`ceiling stored ${n} of ${POINTS} points`);
    return { rate: POINTS / seconds, ...cpu };
  } finally {
    await direct.close();
  }
}

async function truncate(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql`truncate metrics`;
  } finally {
    await sql.end();
  }
}

// ---------------------------------------------------------------------------
// The ingester component in a child process.

/** The ingester component (`main.ts metrics`) in a child process, with `env` as its config. */
class Ingester {
  readonly child: Child;
  readonly metricsUrl: string;

  constructor(env: Record<string, string>, port: number) {
    this.metricsUrl = `http://127.0.0.1:${port}/metrics`;
    this.child = new Child({
      name: "ingester",
      script: "main.ts",
      args: ["metrics"],
      env: { ...env, PLANTD_METRICS_HEALTH_PORT: String(port), PLANTD_METRICS_LOG_LEVEL: "warn" },
      stopBy: "SIGTERM",
    });
  }

  async counters(query = ""): Promise<Record<string, number>> {
    const text = await (await fetch(this.metricsUrl + query)).text();
    const out: Record<string, number> = {};
    for (const line of text.split("\n")) {
      const match = /^(metrics_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/.exec(line);
      if (match) out[match[1]!] = Number(match[2]);
    }
    return out;
  }

  /** Points dropped and rejected so far (every reason). */
  async lostCounts(): Promise<{ dropped: number; rejected: number }> {
    const counters = await this.counters();
    const sum = (prefix: string) =>
      Object.entries(counters).filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
    return { dropped: sum("metrics_points_dropped"), rejected: sum("metrics_points_rejected") };
  }

  /** Polled every 10 ms: asks for the one counter, so the ingester does not collect the rest. */
  async written(): Promise<number> {
    const name = "metrics_points_written_total";
    return (await this.counters(`?name=${name}`))[name] ?? 0;
  }

  async waitWritten(count: number, timeoutMs = 120_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      let written = -1;
      try {
        written = await this.written();
      } catch {
        // not listening yet
      }
      if (written >= count) return performance.now();
      if (performance.now() > deadline) {
        throw new Error(`ingester wrote ${written} of ${count} points in ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /**
   * Waits until `written` reaches `count` or stops moving for a second;
   * returns it and when it last moved.
   */
  async settleWritten(count: number, timeoutMs = 60_000): Promise<{ written: number; at: number }> {
    const deadline = performance.now() + timeoutMs;
    let last = -1;
    let at = performance.now();
    while (performance.now() < deadline) {
      const written = await this.written();
      if (written !== last) {
        last = written;
        at = performance.now();
      }
      if (written >= count || performance.now() - at > 1000) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return { written: last, at };
  }

  stop(): Promise<void> {
    return this.child.stop(10_000);
  }
}

const encoder = new TextEncoder();

/** The payloads of `count` points from `offset`, encoded before the clock starts. */
function payloads(count: number, offset: number, payload: (r: Row) => string): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => encoder.encode(payload(row(i, offset))));
}

/** Publishes the payloads, yielding now and then so the poll keeps running. */
async function publish(publisher: Publisher, messages: Uint8Array[]): Promise<void> {
  for (let i = 0; i < messages.length; i++) {
    publisher.publish("org.plantd.Metric", messages[i]!);
    if (i % 20_000 === 19_999) await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

async function ingestRun(
  ingester: Ingester,
  publisher: Publisher,
  sql: postgres.Sql,
  payload: (r: Row) => string,
  round: number,
): Promise<Run> {
  await sql`truncate metrics`;
  const messages = payloads(POINTS, (round + 1) * 10_000_000, payload);
  const before = await ingester.written();
  const meter = await cpuMeter(ingester.child.pid);
  const started = performance.now();
  const publishing = publish(publisher, messages);
  const ended = await ingester.waitWritten(before + POINTS);
  await publishing;
  const cpu = meter(POINTS);
  const n = await countRows(sql);
  if (n !== POINTS) throw new Error(`the database holds ${n} of ${POINTS} points`);
  return { rate: POINTS / ((ended - started) / 1000), ...cpu };
}

/**
 * A paced run at defaults: `rate` points/s for `seconds` through a bus, a
 * publisher and an ingester all at their defaults; what was not written is lost.
 */
async function pacedRun(
  ingester: Ingester,
  publisher: Publisher,
  sql: postgres.Sql,
  rate: number,
  seconds: number,
): Promise<Metrics> {
  await sql`truncate metrics`;
  const count = Math.round(rate * seconds);
  // Timestamps of now: the default retention (30 days) keeps them.
  const offset = Date.now() - T0;
  const messages = payloads(count, offset, goPayload);
  const before = await ingester.written();
  const lostBefore = await ingester.lostCounts();
  const started = performance.now();
  let sent = 0;
  while (sent < count) {
    const due = Math.min(count, Math.ceil((performance.now() - started) * rate / 1000));
    for (; sent < due; sent++) publisher.publish("org.plantd.Metric", messages[sent]!);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const published = performance.now();
  const settled = await ingester.settleWritten(before + count);
  const written = settled.written - before;
  const lostAfter = await ingester.lostCounts();
  return {
    "offered points/s": count / ((published - started) / 1000),
    "written points/s": written / ((settled.at - started) / 1000),
    lost: count - written,
    "lost %": (count - written) / count * 100,
    dropped: lostAfter.dropped - lostBefore.dropped,
    rejected: lostAfter.rejected - lostBefore.rejected,
  };
}

const asMetrics = (run: Run): Metrics => ({
  "points/s": run.rate,
  "cpu.main": run.mainUs,
  "cpu.publisher": run.publisherUs,
  "cpu.postgres": run.postgresUs,
});

await runBench({
  name: "metrics",
  title: "Metrics ingest (deno task bench:metrics)",
  command: "`deno task bench:metrics` (bench/metrics.ts)",
  servers: ["postgres"],
  settings: {
    points: { env: "BENCH_POINTS", default: 300_000, help: "points per saturated run" },
    pg_url: {
      env: "BENCH_PG_URL",
      default: "postgres://postgres@127.0.0.1:5432/postgres",
      help: "admin URL of the server (a fresh database is created and dropped)",
    },
    paced_rates: {
      env: "BENCH_PACED_RATES",
      default: "20000,100000",
      help: "points/s of the paced runs at defaults",
    },
    paced_seconds: { env: "BENCH_PACED_SECONDS", default: 3, help: "length of a paced run" },
  },
}, async (bench) => {
  POINTS = bench.settings.points;
  const admin = postgres(bench.settings.pg_url, { max: 1, onnotice: () => {} });
  const name = `plantd_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await admin.unsafe(`create database ${name}`);
  const url = databaseUrl(bench.settings.pg_url, name);
  const version = (await admin`select current_setting('server_version') as v`)[0]!.v;
  const dataDirectory = (await admin`select current_setting('data_directory') as d`)[0]!.d;
  const fsync = (await admin`select current_setting('fsync') as f`)[0]!.f;
  const synchronousCommit = (await admin`select current_setting('synchronous_commit') as s`)[0]!.s;
  const pacedRates = bench.settings.paced_rates.split(",").map(Number).filter((n) => n > 0);
  // Saturated runs: high-water marks off everywhere and a buffer for every point, so nothing
  // is lost and the rate is what the slowest part allows (not the defaults: labelled).
  const bus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
    sendHighWaterMark: 0,
    receiveHighWaterMark: 0,
  });
  // Paced runs: bus, publisher and ingester at their defaults.
  const defaultBus = Bus.start({
    name: "metric",
    frontend: "tcp://127.0.0.1:*",
    backend: "tcp://127.0.0.1:*",
  });
  let ingester: Ingester | undefined;
  let defaultIngester: Ingester | undefined;
  const single = new Publisher(connectableEndpoint(bus.frontend), { sendHighWaterMark: 0 });
  const frames = new Publisher(connectableEndpoint(bus.frontend), {
    form: "frames",
    sendHighWaterMark: 0,
  });
  const paced = new Publisher(connectableEndpoint(defaultBus.frontend));
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  let dropped = 0;
  let rejected = 0;
  const bufferPoints = POINTS * 2 + WARMUP_POINTS * 4;
  try {
    // The schema exactly as the ingester makes it (migrations, BRIN index).
    await (await openPgWriter(url, { mode: "off" })).close();
    ingester = new Ingester({
      PLANTD_METRICS_DATABASE_URL: url,
      PLANTD_METRICS_BUS_ENDPOINT: connectableEndpoint(bus.backend),
      PLANTD_METRICS_RECEIVE_HWM: "0",
      PLANTD_METRICS_BUFFER_POINTS: String(bufferPoints),
      PLANTD_METRICS_BATCH_SIZE: String(BATCH),
      PLANTD_METRICS_WRITE_CONCURRENCY: String(CONNECTIONS),
      PLANTD_METRICS_TIMESCALEDB: "off",
      // The points are from 2024: no retention delete in the middle of a run.
      PLANTD_METRICS_RETENTION_DAYS: "0",
    }, freePort());
    defaultIngester = new Ingester({
      PLANTD_METRICS_DATABASE_URL: url,
      PLANTD_METRICS_BUS_ENDPOINT: connectableEndpoint(defaultBus.backend),
    }, freePort());
    // Warm up: subscription in place, JIT warm, connections open.
    const warm = async (
      target: Ingester,
      probe: Publisher,
      bulk: Array<[Publisher, (r: Row) => string]>,
    ) => {
      await target.waitWritten(0, 30_000);
      const before = await target.written();
      let sent = 0;
      while (await target.written() === before) {
        probe.publish("org.plantd.Metric", goPayload(row(0, Date.now() - T0)));
        sent++;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // Points published before the subscription took are lost; the rest must
      // be written before any run counts rows.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const base = await target.written();
      if (base > before + sent) throw new Error(`warm-up: ${base - before} written of ${sent}`);
      let k = 2;
      for (const [publisher, payload] of bulk) {
        await publish(publisher, payloads(WARMUP_POINTS, -WARMUP_POINTS * k, payload));
        k += 2;
      }
      await target.waitWritten(base + WARMUP_POINTS * bulk.length);
    };
    await warm(ingester, single, [[single, goPayload], [frames, seedPayload]]);
    // At defaults a burst would overflow the high-water marks: a short paced run instead.
    await warm(defaultIngester, paced, []);
    await pacedRun(defaultIngester, paced, sql, pacedRates[0] ?? 20_000, 1);
    // Warm the direct paths too.
    await ceiling(url, insertSink(url, unnestInsert), BATCH);
    await ceiling(url, insertSink(url, valuesInsert), 2000);
    await ceiling(url, writerSink(url), BATCH);
    const lostAtStart = await ingester.lostCounts();

    const points = num(POINTS);
    const saturated = `${points} points, receive_hwm 0, buffer_points ${num(bufferPoints)}, ` +
      "bus and publisher HWM 0, retention_days 0 (not defaults)";
    bench.row(
      "ceiling-go",
      "ceiling: `postgres`, INSERT … SELECT FROM unnest(5 arrays) per batch, Go form rows",
    );
    bench.row(
      "ingest-go",
      `bus → ingester → PostgreSQL, Go logger payload (single frame); ${saturated}`,
    );
    bench.row("ceiling-seed", "ceiling: same, rows with tags (jsonb) as the seed form has them");
    bench.row(
      "ingest-seed",
      `bus → ingester → PostgreSQL, seed payload with tags (two frames); ${saturated}`,
    );
    bench.row(
      "values",
      "for reference: `postgres`, INSERT … VALUES (…),(…) via sql(rows), 2000 rows, Go form rows",
    );
    bench.row(
      "writer",
      "for reference: the ingester's writer (unnest INSERT, arrays built by it) fed rows from " +
        "memory, Go form rows",
    );
    for (const rate of pacedRates) {
      bench.row(
        `paced/${rate}`,
        "bus → ingester → PostgreSQL at defaults (HWMs 1,000 / receive_hwm 100,000, " +
          "buffer_points 500,000), Go logger payload, paced",
        { "offered points/s": rate },
      );
    }
    type Unit = { key: string; measure: (round: number) => Promise<Metrics> };
    const units: Unit[] = [
      {
        key: "ceiling-go",
        measure: async () => asMetrics(await ceiling(url, insertSink(url, unnestInsert), BATCH)),
      },
      {
        key: "ingest-go",
        measure: async (round) =>
          asMetrics(await ingestRun(ingester!, single, sql, goPayload, round)),
      },
      {
        key: "ceiling-seed",
        measure: async () =>
          asMetrics(await ceiling(url, insertSink(url, unnestInsert), BATCH, true)),
      },
      {
        key: "ingest-seed",
        measure: async (round) =>
          asMetrics(await ingestRun(ingester!, frames, sql, seedPayload, round + 100)),
      },
      {
        key: "values",
        measure: async () => asMetrics(await ceiling(url, insertSink(url, valuesInsert), 2000)),
      },
      {
        key: "writer",
        measure: async () => asMetrics(await ceiling(url, writerSink(url), BATCH)),
      },
      ...pacedRates.map((rate) => ({
        key: `paced/${rate}`,
        measure: () => pacedRun(defaultIngester!, paced, sql, rate, bench.settings.paced_seconds),
      })),
    ];
    await bench.rounds(units, (unit, round) => unit.measure(round));
    const lostAtEnd = await ingester.lostCounts();
    dropped = lostAtEnd.dropped - lostAtStart.dropped;
    rejected = lostAtEnd.rejected - lostAtStart.rejected;
  } finally {
    await ingester?.stop();
    await defaultIngester?.stop();
    await single.close();
    await frames.close();
    await paced.close();
    await sql.end();
    await bus.close();
    await defaultBus.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  }

  const med = (key: string, metric: string) => bench.stats(key, metric).median;
  /** Where the CPU goes, and what that allows on this machine's cores. */
  const budget = (form: string, ingest: string, direct: string) => {
    const cores = navigator.hardwareConcurrency;
    const ingestUs = med(ingest, "cpu.main") + med(ingest, "cpu.publisher") +
      med(ingest, "cpu.postgres");
    const directUs = med(direct, "cpu.main") + med(direct, "cpu.postgres");
    return `${form}, CPU per point (medians): ingest ${num(ingestUs, 1)} µs in all (ingester ${
      num(med(ingest, "cpu.main"), 1)
    }, publisher + bus ${num(med(ingest, "cpu.publisher"), 1)}, PostgreSQL ${
      num(med(ingest, "cpu.postgres"), 1)
    }), the ceiling ${num(directUs, 1)} µs (client ${num(med(direct, "cpu.main"), 1)}, ` +
      `PostgreSQL ${num(med(direct, "cpu.postgres"), 1)}). With every party sharing ${cores} ` +
      `cores, that alone puts ingest at about ${num(directUs / ingestUs * 100)}% of the ` +
      `ceiling; the ingester's own cost allows about ${
        num(1e6 / med(ingest, "cpu.main"))
      } points/s on a core of its own.`;
  };
  const cpuColumns = [
    { header: "CPU µs/point: ingester (or client)", show: "median:cpu.main", decimals: 1 },
    { header: "publisher + bus", show: "median:cpu.publisher", decimals: 1 },
    { header: "PostgreSQL", show: "median:cpu.postgres", decimals: 1 },
  ];
  return {
    description: `${num(POINTS)} points per saturated run, batches of ${BATCH}, ${CONNECTIONS} ` +
      `connections, PostgreSQL ${version} (plain tables with a BRIN index on time; the ` +
      `saturated ingester runs with timescaledb off), data directory on ` +
      `${filesystemOf(dataDirectory)} (fsync ${fsync}, synchronous_commit ${synchronousCommit}). ` +
      "The ingester is `main.ts metrics` in its own process; points go publisher (payloads " +
      "encoded before the clock starts) → metric bus (XSUB/XPUB proxy, in the bench process) → " +
      "ingester → PostgreSQL; a saturated run publishes as fast as one publisher can and ends " +
      "when the ingester has committed the last point. The ceiling is a plain multi-row INSERT " +
      "loop written directly with `postgres` from rows in memory (same table, rows, batch size " +
      "and connections; no bus, no JSON). PostgreSQL's CPU column counts every postgres process " +
      "on the machine, other users' too. The paced runs use a second bus, publisher and " +
      `ingester at their defaults: ${bench.settings.paced_seconds} s at a fixed rate, and ` +
      "what the ingester did not write once its count stopped moving is lost.",
    tables: [
      {
        title: "Saturated, lossless",
        rows: ["ceiling-go", "ingest-go", "ceiling-seed", "ingest-seed", "values", "writer"],
        columns: [
          { header: "path", show: "label" },
          { header: "points/s (median)", show: "median:points/s" },
          { header: "range", show: "range:points/s" },
          ...cpuColumns,
        ],
        after: `Every saturated run checked that the database held all ${num(POINTS)} points; ` +
          `the ingester dropped ${dropped} and rejected ${rejected} points over the benchmark.`,
      },
      {
        title: "Paced, at defaults",
        rows: pacedRates.map((rate) => `paced/${rate}`),
        columns: [
          { header: "path", show: "label" },
          { header: "offered points/s", show: "param:offered points/s" },
          {
            header: "written points/s, first publish to last write (median)",
            show: "median:written points/s",
          },
          { header: "range", show: "range:written points/s" },
          { header: "lost % (median)", show: "median:lost %", decimals: 2 },
          { header: "lost % (max)", show: "max:lost %", decimals: 2 },
          { header: "dropped by the ingester (all runs)", show: "sum:dropped" },
        ],
      },
    ],
    notes: [
      budget("Go form", "ingest-go", "ceiling-go"),
      budget("Seed form", "ingest-seed", "ceiling-seed"),
    ],
    checks: [
      {
        name: `ingest >= ${num(TARGET_RATE)} points/s (slower of the two forms)`,
        value: { rows: ["ingest-go", "ingest-seed"], metric: "points/s", combine: "min" },
        op: ">=",
        target: TARGET_RATE,
      },
      {
        name: `ingest >= ${TARGET_SHARE * 100}% of the ceiling, Go form`,
        value: { rows: ["ingest-go"], metric: "points/s" },
        op: ">=",
        target: { rows: ["ceiling-go"], metric: "points/s" },
        factor: TARGET_SHARE,
      },
      {
        name: `ingest >= ${TARGET_SHARE * 100}% of the ceiling, seed form`,
        value: { rows: ["ingest-seed"], metric: "points/s" },
        op: ">=",
        target: { rows: ["ceiling-seed"], metric: "points/s" },
        factor: TARGET_SHARE,
      },
    ],
  };
});
