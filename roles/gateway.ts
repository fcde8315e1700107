/**
 * `main.ts gateway`: the HTTP/WebSocket gateway in front of the broker and
 * the buses.
 *
 * @module
 */
import { Registry } from "prom-client";
import { processMetrics } from "../telemetry/process_metrics.ts";
import { HashPool } from "../auth/hash_pool.ts";
import { type AuditStatus, AuthStore } from "../auth/store.ts";
import { TokenIssuer, tokenSettingsFrom } from "../auth/tokens.ts";
import { ConfigError } from "../config/load.ts";
import { busClientCurve, clientCurve } from "../config/curve.ts";
import { type GatewayConfig, gatewayConfig } from "../config/components.ts";
import { metricsAccess } from "../config/metrics_token.ts";
import { isLoopback } from "../transport/loopback.ts";
import { wireHeartbeat } from "./wire_heartbeat.ts";
import { stateBusKey } from "../config/state_bus.ts";
import { createApp } from "../gateway/app.ts";
import { Guard } from "../gateway/auth/guard.ts";
import { Revocations } from "../gateway/auth/revocations.ts";
import { authStoreHealth } from "../gateway/auth/store_health.ts";
import { createCounters } from "../gateway/shared/counters.ts";
import { chooseSessions } from "../gateway/shared/auth_db_sessions.ts";
import { BusHub } from "../gateway/bus_hub.ts";
import { BusOutlet } from "../gateway/bus_outlet.ts";
import { TopicHistory } from "../gateway/shared/history.ts";
import { RedisLink } from "../gateway/shared/redis.ts";
import { redisStateCache } from "../gateway/shared/redis_state_cache.ts";
import { ServiceDirectory } from "../mdp/directory.ts";
import { StateCoherence } from "../gateway/state_coherence.ts";
import { stateCacheMetrics } from "../gateway/state_cache_metrics.ts";
import { EXTENSION } from "../mdp/negotiation.ts";
import { StateCache } from "../gateway/state_read_cache.ts";
import { loggedStateBusGate } from "../gateway/state_bus_gate.ts";
import { ChangeKey } from "../state/changes.ts";
import { CLOSE, STATE_BUS, type WsSession } from "../gateway/ws.ts";
import { MdpClient } from "../mdp/client.ts";
import { openMetricsReader } from "../metrics/open.ts";
import { text } from "../mdp/protocol.ts";
import { STATE_SERVICE } from "../state/operations.ts";
import { gatewayMetrics } from "../gateway/gateway_metrics.ts";
import { type Check, checkTracker, serveOrExplain } from "../telemetry/health.ts";
import { logger } from "../telemetry/log.ts";
import type { Running } from "./running.ts";

/** Health checks the gateway's host process adds (buses it runs, the state store in dev). */
export type ExtraChecks = () => Check[] | Promise<Check[]>;

/** Starts the gateway; waits for the broker with a visible retry. */
export async function startGateway(
  config: GatewayConfig,
  extraChecks: ExtraChecks = () => [],
  registry: Registry = new Registry(),
): Promise<Running & { port: number; url: string }> {
  const log = logger("gateway");
  const brokerCurve = clientCurve("gateway", config);
  const busCurve = busClientCurve("gateway", config);
  const busKey = stateBusKey("gateway", config);
  const settings = await tokenSettingsFrom(config);
  if (!settings && !isLoopback(config.host)) {
    throw new ConfigError(
      `gateway: host ${config.host} is not loopback, so authentication is required: ` +
        "set jwt_secret (PLANTD_GATEWAY_JWT_SECRET), jwt_public_key, jwt_private_key or jwks_url",
    );
  }
  if (settings && config.access_token_ttl_s > config.jwt_max_lifetime_s) {
    // Its own tokens would be refused by itself and by the state worker.
    throw new ConfigError(
      `gateway: access_token_ttl_s (${config.access_token_ttl_s}) is over jwt_max_lifetime_s ` +
        `(${config.jwt_max_lifetime_s}): lower the first or raise the second`,
    );
  }
  // Beyond loopback /metrics is never open: a scraper uses metrics_token (or a telemetry:read credential).
  if (config.public_metrics && !isLoopback(config.host)) {
    throw new ConfigError(
      `gateway: public_metrics (PLANTD_GATEWAY_PUBLIC_METRICS) would serve /metrics to anyone on ` +
        `${config.host}: turn it off and give the scraper metrics_token (PLANTD_GATEWAY_METRICS_TOKEN)`,
    );
  }
  const metricsToken = metricsAccess(gatewayConfig, config).token;
  if ((config.tls_cert === undefined) !== (config.tls_key === undefined)) {
    throw new ConfigError("gateway: tls_cert and tls_key go together: set both or neither");
  }
  const tls = config.tls_cert && config.tls_key
    ? {
      cert: await Deno.readTextFile(config.tls_cert),
      key: await Deno.readTextFile(config.tls_key),
    }
    : undefined;
  if (!registry.getSingleMetric("process_cpu_seconds_total")) {
    processMetrics(registry);
  }
  const metrics = gatewayMetrics(registry);
  // Redis shared by replicas (gateway/shared/): every use falls back in process while it is down.
  const redis = config.redis_url
    ? new RedisLink({ url: config.redis_url, keyPrefix: config.redis_key_prefix })
    : undefined;
  redis?.watch((up) => {
    if (up) log.info("redis up at {url}", { url: redis.url });
    else log.warn("redis down ({error}): in-process fallbacks", { error: redis.lastError });
  });
  // argon2id in Web Workers: a login flood must not stall the event loop.
  const hashPool = new HashPool({
    workers: config.hash_workers,
    maxPending: config.hash_max_pending,
  });
  if (config.session_store === "redis" && !redis) {
    throw new ConfigError("gateway: session_store is redis: set redis_url (PLANTD_REDIS_URL)");
  }
  // A PostgreSQL auth database that is away at start is waited for, not fatal: /healthz says so.
  const authStore = await AuthStore.open(config.auth_db, config.auth_db_token, hashPool, {
    lazy: true,
    auditQueueMax: config.audit_queue_max,
    onAuditDropped: (count) => metrics.auditDropped?.(count),
    onUnreachable: (error) =>
      log.warn("{error}; logins and API keys answer 503 until it is back", {
        error: error.message,
      }),
  });
  const authHealth = authStoreHealth(authStore);
  const revocations = settings
    ? await Revocations.start({
      store: authStore,
      ...(redis ? { link: redis } : {}),
      pollMs: config.revocation_poll_ms,
    })
    : undefined;
  const guard = new Guard(authStore, settings, metrics, {
    callTokenTtlS: config.call_token_ttl_s,
    ...(revocations ? { revocations } : {}),
  });
  if (settings && !guard.calls) {
    log.warn(
      "authentication is on, but with no jwt_private_key (or jwt_secret) the gateway cannot sign " +
        "call credentials: requests to {service} carry none, and a state service that checks " +
        "tokens refuses them. Set jwt_private_key and give the state service its public key " +
        "(PLANTD_STATE_JWT_PUBLIC_KEY)",
      { service: STATE_SERVICE },
    );
  }
  const pruneAudit = async () => {
    if (config.audit_retention_days <= 0) return;
    try {
      const deleted = await authStore.pruneAudit(
        Date.now() - config.audit_retention_days * 86_400_000,
      );
      if (deleted > 0) log.info("deleted {deleted} audit events past retention", { deleted });
    } catch (error) {
      log.error("audit retention failed: {error}", { error: String(error) });
    }
  };
  await pruneAudit();
  const users = await authStore.countUsers().catch(() => undefined);
  if (settings && users === 0 && TokenIssuer.possible(settings)) {
    log.warn("authentication is on and there are no users yet: create an admin with `{command}`", {
      command: "deno task user:add --username admin --roles admin",
    });
  }
  const counters = createCounters(redis);
  const { sessions: userSessions, where: sessionsIn } = chooseSessions(
    config.session_store,
    authStore,
    redis,
  );
  const client = new MdpClient(config.broker_endpoint, {
    timeoutMs: config.request_timeout_ms,
    dialect: config.broker_dialect,
    extensions: config.broker_extensions,
    onFailover: ({ from, to, reason }) =>
      log.warn("broker connection moved from {from} to {to}: {reason}", { from, to, reason }),
    ...(brokerCurve ? { curve: brokerCurve } : {}),
    transport: config.mdp_transport,
    wireHeartbeat: wireHeartbeat(config),
  });
  const directory = new ServiceDirectory(
    (service, body, timeoutMs) =>
      client.request(service, body, { timeoutMs: timeoutMs ?? config.request_timeout_ms }),
    {
      connected: () => client.connected,
      listed: () => {
        const features = client.knownFeatures;
        return features && features.extensions.has(EXTENSION.brokerService);
      },
    },
  );
  await directory.start();
  if (!directory.brokerReachable) {
    log.warn("broker at {endpoint} not answering yet ({error}); retrying every second", {
      endpoint: config.broker_endpoint,
      error: directory.lastError,
    });
  }
  const historyBuses = config.history_max_messages > 0
    ? config.history_buses.filter((bus) => bus in config.buses)
    : [];
  const history = historyBuses.length > 0
    ? new TopicHistory({
      buses: historyBuses,
      maxMessages: config.history_max_messages,
      maxAgeMs: config.history_max_age_ms,
      ...(redis ? { link: redis } : {}),
    })
    : undefined;
  // The read cache needs the state bus's change events (so a key to verify them): without them it stays off.
  const coherence = new StateCoherence({
    workers: () => directory.workers(STATE_SERVICE),
    onLost: (reason) => {
      stateCache?.flush();
      countFlush?.(reason);
    },
  });
  const stateCache =
    config.state_cache_ttl_ms > 0 && config.buses[STATE_BUS] !== undefined && busKey
      ? new StateCache({
        ttlMs: config.state_cache_ttl_ms,
        ...(config.state_cache_coherent_ttl_ms > 0
          ? { coherentTtlMs: config.state_cache_coherent_ttl_ms, coherent: () => coherence.check() }
          : {}),
        ...(redis ? { shared: redisStateCache(redis, config.state_cache_ttl_ms) } : {}),
      })
      : undefined;
  const countFlush = stateCache ? stateCacheMetrics(registry, stateCache, coherence) : undefined;
  // Silent publishers and unseen workers show on a timer, not only when a read misses.
  const coherenceTimer = stateCache ? setInterval(() => coherence.check(), 250) : undefined;
  // Only the state service speaks for state: its change events are checked before anything reads them.
  const stateGate = config.buses[STATE_BUS] !== undefined
    ? loggedStateBusGate({
      ...(busKey ? { key: new ChangeKey(busKey.key) } : {}),
      maxSkewMs: config.state_bus_max_skew_ms,
      ...(stateCache ? { stream: coherence } : {}),
      count: (reason) => metrics.busRejected?.(STATE_BUS, reason),
      log,
    })
    : undefined;
  if (stateGate && !busKey) {
    log.warn(
      "no state bus key: every state change event is dropped (no live updates, no read cache refresh): set state_bus_secret (PLANTD_GATEWAY_STATE_BUS_SECRET), state_bus_secret_file or jwt_secret, the same as the state service's",
    );
  }
  const hub = new BusHub(config.buses, config.envelopes, {
    ...(stateGate ? { admit: { [STATE_BUS]: (message) => stateGate.admit(message) } } : {}),
    // State changes are few, and a watch must see a change made right after
    // it was acknowledged (the dashboard edits, then watches, then others write).
    everything: [STATE_BUS],
    ...(history ? { history } : {}),
    ...(busCurve ? { curve: busCurve } : {}),
  });
  const outlet = new BusOutlet(config.publish_buses, busCurve);
  const stopCacheFeed = stateCache
    ? hub.listen(STATE_BUS, "", ({ message }) => {
      try {
        stateCache.apply(JSON.parse(text(message.payload)));
      } catch {
        // not a change event: ignore
      }
    })
    : undefined;
  const check = checkTracker();
  let storeCheck = {
    ok: false,
    output: "not checked yet",
    at: 0,
    writeFailure: undefined as string | undefined,
  };
  const stateStore = async (): Promise<void> => {
    if (Date.now() - storeCheck.at < 2000) return;
    try {
      const [reply] = await client.request(STATE_SERVICE, ["health", "{}"], { timeoutMs: 1000 });
      const parsed = JSON.parse(text(reply!));
      const failure = parsed?.data?.write_failure;
      storeCheck = {
        ok: parsed?.data?.store_available === true,
        output: "store not available",
        at: Date.now(),
        writeFailure: typeof failure === "string" ? failure : undefined,
      };
    } catch (error) {
      storeCheck = {
        ok: false,
        output: (error as Error).message,
        at: Date.now(),
        writeFailure: undefined,
      };
    }
  };
  const checks = async (): Promise<Check[]> => {
    const stateWorkers = directory.workers(STATE_SERVICE);
    if (stateWorkers > 0) await stateStore();
    const auth = await authHealth();
    return [
      check("broker_connection", directory.brokerReachable, directory.lastError),
      check("state_worker", stateWorkers > 0, "no org.plantd.State worker registered"),
      check("state_store", stateWorkers > 0 && storeCheck.ok, storeCheck.output),
      // Not required: reads are still served while the state service cannot write.
      check(
        "state_writes",
        storeCheck.writeFailure === undefined,
        `state writes fail: ${storeCheck.writeFailure}`,
        false,
      ),
      // Not required: tokens verified already are still served; logins and new API keys get 503.
      check("auth_db", auth.ok, auth.output, false),
      // Not required: audit events wait in a bounded queue; admin actions wait for theirs.
      auditCheck(check, authStore.auditStatus()),
      // Not required: without Redis the gateway serves from its fallbacks.
      ...(redis ? [check("redis", redis.up, redis.lastError, false)] : []),
      ...await extraChecks(),
    ];
  };
  const sessions = new Set<WsSession>();
  // GET /api/metrics reads the metrics store directly (read only, opened on first use).
  const metricsStore = openMetricsReader({
    databaseUrl: config.metrics_database_url,
    db: config.metrics_db,
  });
  const app = createApp({
    client,
    directory,
    hub,
    registry,
    metrics,
    checks,
    metricsStore,
    ...(stateCache ? { stateCache } : {}),
    guard,
    counters,
    sessions: userSessions,
    outlet,
    options: {
      requestTimeoutMs: config.request_timeout_ms,
      maxBodyBytes: config.max_body_bytes,
      stateCacheMaxReplies: config.state_cache_max_replies,
      allowedOrigins: config.allowed_origins,
      ws: {
        maxBufferedBytes: config.ws_max_buffered_bytes,
        maxMessageBytes: config.ws_max_message_bytes,
        maxSubscriptions: config.ws_max_subscriptions,
        maxMessagesPerSecond: config.ws_max_messages_per_s,
        maxPendingRequests: config.ws_max_pending_requests,
      },
      security: {
        accessTtlS: config.access_token_ttl_s,
        refreshTtlS: config.refresh_token_ttl_s,
        tls: tls !== undefined,
        trustedProxies: config.trusted_proxies,
        rateLimitWindowMs: config.rate_limit_window_ms,
        rateLimitPerIp: config.rate_limit_per_ip,
        rateLimitPerToken: config.rate_limit_per_token,
        wsMaxConnections: config.ws_max_connections,
        wsMaxPerUser: config.ws_max_per_user,
        publicMetrics: config.public_metrics,
        metricsToken,
        loginPerIp: config.login_per_ip,
        loginPerUser: config.login_per_user,
        refreshReuseGraceS: config.refresh_reuse_grace_s,
      },
    },
  }, sessions);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = serveOrExplain(app, "gateway", config.host, config.port, tls);
  } catch (error) {
    directory.stop();
    clearInterval(coherenceTimer);
    await hub.close();
    await outlet.close();
    await redis?.close();
    await client.close();
    await metricsStore?.close();
    await revocations?.close();
    hashPool.close();
    await authStore.close();
    throw error;
  }
  const pruning = setInterval(pruneAudit, 3_600_000);
  const url = `${tls ? "https" : "http"}://${
    config.host.includes(":") ? `[${config.host}]` : config.host
  }:${server.addr.port}`;
  log.info("gateway listening on {url}", {
    url,
    authentication: settings ? "on" : "off (loopback only)",
    state_changes: stateGate
      ? busKey ? `verified (key from ${busKey.source})` : "dropped (no state bus key)"
      : "no state bus",
    broker: config.broker_endpoint,
    buses: config.buses,
    auth_db: `${authStore.backend} ${authStore.location}`,
    sessions: sessionsIn,
  });
  return {
    port: server.addr.port,
    url,
    async close() {
      for (const session of [...sessions]) session.close(CLOSE.GOING_AWAY, "gateway shutting down");
      await server.shutdown();
      directory.stop();
      clearInterval(coherenceTimer);
      stopCacheFeed?.();
      await hub.close();
      await outlet.close();
      await redis?.close();
      await client.close();
      await metricsStore?.close();
      await counters.close();
      await userSessions.close();
      clearInterval(pruning);
      await revocations?.close();
      hashPool.close();
      await authStore.close();
      log.info("gateway stopped");
    },
  };
}

/**
 * The `audit_log` check: DOWN while queued audit events cannot be written,
 * and for good once any was dropped (the audit trail has a hole: an operator
 * must know; it clears at the next start).
 */
function auditCheck(check: ReturnType<typeof checkTracker>, status: AuditStatus): Check {
  const ok = status.failing === undefined && status.dropped === 0;
  const parts = [
    ...(status.failing === undefined ? [] : [`writes fail: ${status.failing}`]),
    `${status.waiting} waiting`,
    `${status.dropped} dropped since start`,
  ];
  return check("audit_log", ok, parts.join("; "), false);
}
