/**
 * `main.ts state`: the `org.plantd.State` worker over its store: the embedded
 * libSQL one, or PostgreSQL shared with other state workers when `db` is a
 * postgres:// URL.
 *
 * @module
 */
import { Registry } from "prom-client";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { type StateConfig, stateConfig } from "../config/components.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { busClientCurve } from "../config/curve.ts";
import { Publisher } from "../bus/publisher.ts";
import {
  ChangeKey,
  ChangeSigner,
  type ChangeSink,
  publishChanges,
  startHeartbeats,
} from "../state/changes.ts";
import { stateBusKey } from "../config/state_bus.ts";
import type { StateBackend } from "../state/backend.ts";
import { openStateDatabase } from "../state/db.ts";
import { openPgStateDatabase } from "../state/db_pg.ts";
import { purgeIntervalMs, startKeyPurge } from "../state/idempotency.ts";
import { PgStateStore, type PgStoreOptions } from "../state/store_pg.ts";
import { storageFailure } from "../storage/failure.ts";
import { isPostgresUrl, redactUrl } from "../storage/postgres.ts";
import { tokenSettingsFrom } from "../auth/tokens.ts";
import { serviceTokenCheck } from "../auth/call_credentials.ts";
import { STATE_SERVICE, StateOperations } from "../state/operations.ts";
import { StateStore, type StoreOptions } from "../state/store.ts";
import { startStateWorker } from "../state/worker.ts";
import { WriteHealth } from "../storage/write_health.ts";
import { checkTracker } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import { stateMetrics } from "../state/state_metrics.ts";
import { startHealthServer } from "./health_server.ts";
import type { Running } from "./running.ts";
import { logWorkerEvents, workerOptions } from "./worker_options.ts";

/** Starts the state service; `changes` receives committed changes (the state bus). */
export async function startState(
  config: StateConfig,
  changes?: ChangeSink,
  registry: Registry = new Registry(),
): Promise<Running & { store: StateBackend }> {
  const log = logger("state");
  // Read (and checked) before anything opens: a bad token file is a config error.
  const access = metricsAccess(stateConfig, config);
  const options = workerOptions(config, "state");
  const busCurve = busClientCurve("state", config);
  const busKey = stateBusKey("state", config);
  // Gateways drop change events they cannot verify (docs/security.md).
  const signer = busKey ? new ChangeSigner(new ChangeKey(busKey.key)) : undefined;
  processMetrics(registry);
  const metrics = stateMetrics(registry);
  // Changes go to the state bus as [scope, json] unless the caller takes them.
  const publisher = !changes && config.bus_endpoint !== ""
    ? new Publisher(config.bus_endpoint, {
      form: "frames",
      sendHighWaterMark: 100_000,
      ...(busCurve ? { curve: busCurve } : {}),
    })
    : undefined;
  const sink = changes ?? publisher;
  const writeHealth = new WriteHealth(log);
  const windowMs = config.idempotency_window_s * 1000;
  const storeOptions: StoreOptions = {
    idempotencyWindowMs: windowMs,
    historyPerKey: config.history_per_key,
    onCommit: (writes, seconds, wrote) => {
      metrics.commit(writes, seconds);
      if (wrote) writeHealth.succeeded();
    },
    onCommitError: (error, writes) => writeHealth.failed(error, writes),
    onChanges: sink ? (list) => publishChanges(sink, list, signer) : undefined,
  };
  const { store, db } = await openStore(config, {
    ...storeOptions,
    onReachable: () => writeHealth.reachable(),
  });
  const settings = await tokenSettingsFrom(config);
  // Call credentials of the gateway (bound to one request, used once) and Go clients' own tokens.
  // Several workers on one PostgreSQL store share the ids taken: a replay to another is refused.
  const ledger = store instanceof PgStateStore
    ? { claim: store.claimCallCredential.bind(store) }
    : undefined;
  const verify = settings
    ? serviceTokenCheck(settings, STATE_SERVICE, ledger ? { ledger } : {})
    : undefined;
  const audit = logger("state", "audit");
  const operations = new StateOperations(store, {
    maxValueBytes: config.max_value_bytes,
    writeFailure: () => writeHealth.failing,
    ...(verify ? { verify } : {}),
  }, {
    ...metrics,
    refused: (code, operation, scope, reason) => {
      metrics.refused?.(code, operation, scope, reason);
      audit.warn("{operation} on {scope} refused: {code}", { code, operation, scope, reason });
    },
    // A replay is also logged, with its reason, as a refusal (above).
    callReused: (use) => metrics.callReused?.(use),
    changed: (principal, operation, scope) =>
      audit.info("{operation} on {scope} by {actor}", { actor: principal.id, operation, scope }),
  });
  const worker = startStateWorker(
    config.broker_endpoint,
    operations,
    options,
    logWorkerEvents(log),
  );
  if (!busKey && sink) {
    log.warn(
      "change events are published unsigned, so gateways drop them: set state_bus_secret (PLANTD_STATE_STATE_BUS_SECRET), state_bus_secret_file or jwt_secret, the same as the gateway's",
    );
  }
  const check = checkTracker();
  const health = startHealthServer(
    "state",
    config.health_host,
    config.health_port,
    async () => {
      let storeError: string | undefined;
      try {
        await store.ping();
      } catch (error) {
        storeError = `${storageFailure(error)}: ${(error as Error).message}`;
        // Writes fail as well: logged (with its cause, once a minute) and named by store_writes.
        writeHealth.unreachable(error);
      }
      return [
        check("store", storeError === undefined, storeError),
        writeHealth.check(),
        check("broker_connection", worker.connected, "not registered at the broker"),
      ];
    },
    registry,
    access,
  );
  // Started last, so a failure above leaves no timer running.
  const stopHeartbeats = sink && signer
    ? startHeartbeats(sink, signer, {
      everyMs: config.bus_heartbeat_ms,
      workers: config.concurrency,
    })
    : undefined;
  const purge = startKeyPurge(store, {
    intervalMs: purgeIntervalMs(windowMs),
    onPurged: (count) => metrics.keysPurged(count),
    onError: (error) =>
      log.warn("purging expired idempotency keys failed: {error}", { error: String(error) }),
  });
  log.info("state service on {db} serving via {endpoint}", {
    db,
    endpoint: config.broker_endpoint,
    scopes: (await store.scopes()).length,
    changes: publisher ? publisher.endpoint : changes ? "in process" : "off",
    authentication: verify ? "tokens required" : "off",
    idempotency_window_s: config.idempotency_window_s,
    history_per_key: config.history_per_key,
    change_signatures: busKey ? `on (key from ${busKey.source})` : "off",
    change_heartbeat_ms: stopHeartbeats ? config.bus_heartbeat_ms : "off",
    health: health.port ? `http://${config.health_host}:${health.port}/healthz` : "off",
  });
  return {
    store,
    async close() {
      stopHeartbeats?.();
      await health.close();
      await worker.close();
      await purge.stop();
      await store.close();
      await publisher?.close();
      log.info("state service stopped");
    },
  };
}

/**
 * The configured store: PostgreSQL for a postgres:// URL (several workers may
 * share it), else libSQL (this worker alone: its file is locked). `db` is the
 * location for logs, without a password.
 */
async function openStore(
  config: StateConfig,
  options: PgStoreOptions,
): Promise<{ store: StateBackend; db: string }> {
  if (isPostgresUrl(config.db)) {
    let open;
    try {
      open = await openPgStateDatabase({ url: config.db, poolSize: config.db_pool_size });
    } catch (error) {
      // The URL as given may hold a password: never in a message.
      throw new Error(
        `cannot open the state database ${redactUrl(config.db)}: ${storageFailure(error)}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
    return { store: new PgStateStore(open, options), db: open.url };
  }
  const open = await openStateDatabase({
    location: config.db,
    authToken: config.db_auth_token,
    synchronous: config.synchronous,
    maxBytes: config.max_db_bytes,
  });
  return { store: await StateStore.load(open, options), db: open.url };
}
