/**
 * The gateway's REST API and WebSocket (docs/websocket.md) as a
 * {@link Backend}. Errors keep the gateway's codes; a gateway that cannot be
 * reached or does not answer in time is UNREACHABLE or TIMEOUT.
 *
 * @module
 */
import type { Health } from "../telemetry/health.ts";
import type {
  AlarmsOperation,
  Backend,
  BusLine,
  DlqOperation,
  Entry,
  Frame,
  HistoryRecord,
  ServiceRow,
  SubscribeOptions,
} from "./backend.ts";
import { apiFailure, CliError, EXIT, unreachable } from "./errors.ts";

/** Extra time given to the HTTP exchange beyond the request's own timeout. */
const HTTP_MARGIN_MS = 1000;

function reasonOf(error: unknown): string {
  // Deno's fetch says "fetch failed" and puts the reason in `cause`.
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : undefined;
  const message = cause?.message ?? (error instanceof Error ? error.message : String(error));
  if (/connection refused/i.test(message)) return "connection refused";
  if (/tcp connect error|failed to connect/i.test(message)) return "connection failed";
  if (/dns error|failed to lookup|name or service not known/i.test(message)) {
    return "unknown host";
  }
  return message.split("\n")[0]!;
}

/** The gateway at `url` (e.g. http://127.0.0.1:8080). */
export class GatewayBackend implements Backend {
  readonly target: string;
  #url: URL;
  #timeoutMs: number;
  #what: string;
  #token: string | undefined;
  #renew: (() => Promise<string>) | undefined;

  /**
   * `what` names the peer in messages; `token` (an access token or API key) is
   * sent as a bearer. `renew`, for a login's access token, gives a fresh one:
   * a subscription sends it before the one it authenticated with expires.
   */
  constructor(
    url: string,
    timeoutMs: number,
    what = "gateway",
    token?: string,
    renew?: () => Promise<string>,
  ) {
    this.#what = what;
    this.#token = token;
    this.#renew = renew;
    try {
      this.#url = new URL(url);
    } catch {
      throw new CliError(`bad ${what} URL '${url}'`, "USAGE", EXIT.USAGE);
    }
    if (this.#url.protocol !== "http:" && this.#url.protocol !== "https:") {
      throw new CliError(`bad ${what} URL '${url}': expected http:// or https://`, "USAGE", 2);
    }
    this.target = this.#url.origin + this.#url.pathname.replace(/\/$/, "");
    this.#timeoutMs = timeoutMs;
  }

  /** One HTTP exchange; resolves with the parsed JSON of a 2xx, else throws the API error. */
  async #http(
    method: string,
    path: string,
    body?: string,
    headers: Record<string, string> = {},
    accept: (status: number) => boolean = (status) => status >= 200 && status < 300,
  ): Promise<{ status: number; json: unknown }> {
    const url = this.target + path;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        body,
        headers: this.#token ? { authorization: `Bearer ${this.#token}`, ...headers } : headers,
        signal: AbortSignal.timeout(this.#timeoutMs + HTTP_MARGIN_MS),
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw apiFailure(
          "TIMEOUT",
          `the ${this.#what} at ${this.target} did not answer within ${
            this.#timeoutMs + HTTP_MARGIN_MS
          } ms`,
        );
      }
      throw unreachable(this.#what, this.target, reasonOf(error));
    }
    const text = await response.text();
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new CliError(
        `unexpected answer from ${url}: HTTP ${response.status}, not JSON (is it a plantd ${this.#what}?)`,
        "UNEXPECTED",
      );
    }
    if (accept(response.status)) return { status: response.status, json };
    const error = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (typeof error?.code === "string" && typeof error.message === "string") {
      throw apiFailure(error.code, error.message);
    }
    throw new CliError(`unexpected answer from ${url}: HTTP ${response.status}`, "UNEXPECTED");
  }

  /**
   * POSTs `body` as JSON to `path` (the /api/auth routes); resolves with the
   * answer's JSON, or fails with the gateway's error code.
   */
  async postJson(path: string, body: unknown): Promise<unknown> {
    const { json } = await this.#http("POST", path, JSON.stringify(body), {
      "content-type": "application/json",
    });
    return json;
  }

  #scopePath(scope: string, key?: string): string {
    const base = `/api/state/${encodeURIComponent(scope)}`;
    return key === undefined ? base : `${base}/${encodeURIComponent(key)}`;
  }

  async services(names: string[] = []): Promise<ServiceRow[]> {
    const { json } = await this.#http("GET", "/api/services");
    return (json as { services: ServiceRow[] }).services
      .filter((s) => names.length === 0 || names.includes(s.name));
  }

  async call(service: string, operation: string, body: string): Promise<Frame[]> {
    const path = `/api/services/${encodeURIComponent(service)}/${
      encodeURIComponent(operation)
    }?timeout_ms=${this.#timeoutMs}`;
    const { json } = await this.#http("POST", path, body, { "content-type": "application/json" });
    return (json as { frames: Frame[] }).frames;
  }

  async dlq(
    operation: DlqOperation,
    params: Record<string, string | number>,
  ): Promise<Record<string, unknown>> {
    const id = encodeURIComponent(String(params.id ?? ""));
    const query = new URLSearchParams(
      Object.entries(params).filter(([k]) => k !== "id").map(([k, v]) => [k, String(v)]),
    ).toString();
    const [method, path] = {
      list: ["GET", `/api/dlq${query ? `?${query}` : ""}`],
      show: ["GET", `/api/dlq/${id}`],
      replay: ["POST", `/api/dlq/${id}/replay`],
      delete: ["DELETE", `/api/dlq/${id}`],
      purge: ["DELETE", `/api/dlq${query ? `?${query}` : ""}`],
    }[operation];
    const { json } = await this.#http(method!, path!);
    return json as Record<string, unknown>;
  }

  async events(query: Record<string, string>): Promise<Record<string, unknown>> {
    const { json } = await this.#http("GET", `/api/events?${new URLSearchParams(query)}`);
    return json as Record<string, unknown>;
  }

  async alarms(
    operation: AlarmsOperation,
    params: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const json = { "content-type": "application/json" };
    const id = encodeURIComponent(String(params.id ?? ""));
    let reply;
    if (operation === "list") {
      const query = new URLSearchParams(
        Object.entries(params).map(([k, v]) => [k, String(v)]),
      ).toString();
      reply = await this.#http("GET", `/api/alarms${query ? `?${query}` : ""}`);
    } else if (operation === "ack") {
      reply = await this.#http("POST", `/api/alarms/${id}/ack`, "{}", json);
    } else if (operation === "rules") {
      reply = await this.#http("GET", "/api/alarms/rules");
    } else if (operation === "rule-set") {
      const { id: ruleId, ...body } = params.rule as Record<string, unknown>;
      const path = `/api/alarms/rules/${encodeURIComponent(String(ruleId))}`;
      reply = await this.#http("PUT", path, JSON.stringify(body), json);
    } else {
      reply = await this.#http("DELETE", `/api/alarms/rules/${id}`);
    }
    return reply.json as Record<string, unknown>;
  }

  async health(): Promise<Health> {
    // 503 carries the document too: DOWN is an answer, not a transport failure.
    const { json } = await this.#http(
      "GET",
      "/healthz",
      undefined,
      {},
      (s) => s === 200 || s === 503,
    );
    const health = json as Health | undefined;
    if (!health || !Array.isArray(health.checks)) {
      throw new CliError(`unexpected answer from ${this.target}/healthz`, "UNEXPECTED");
    }
    return health;
  }

  async listScopes(): Promise<string[]> {
    const { json } = await this.#http("GET", "/api/state");
    return (json as { scopes: string[] }).scopes;
  }

  async listKeys(scope: string): Promise<string[]> {
    const { json } = await this.#http("GET", this.#scopePath(scope));
    return (json as { keys: string[] }).keys;
  }

  async createScope(scope: string): Promise<void> {
    await this.#http("PUT", this.#scopePath(scope));
  }

  async deleteScope(scope: string): Promise<void> {
    await this.#http("DELETE", this.#scopePath(scope));
  }

  async history(scope: string, key: string): Promise<HistoryRecord[]> {
    const { json } = await this.#http("GET", `${this.#scopePath(scope, key)}/history`);
    return (json as { entries: HistoryRecord[] }).entries;
  }

  async get(scope: string, key: string): Promise<Entry> {
    const { json } = await this.#http("GET", this.#scopePath(scope, key));
    return json as Entry;
  }

  async set(scope: string, key: string, value: string): Promise<number> {
    const { json } = await this.#http(
      "PUT",
      this.#scopePath(scope, key),
      JSON.stringify({ value }),
      { "content-type": "application/json" },
    );
    return (json as { revision: number }).revision;
  }

  async delete(scope: string, key: string): Promise<void> {
    await this.#http("DELETE", this.#scopePath(scope, key));
  }

  subscribe(bus: string, prefix: string, options: SubscribeOptions): Promise<void> {
    const url = this.target.replace(/^http/, "ws") + "/ws";
    return new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(url);
      let opened = false;
      let done = false;
      let subscribing = false;
      let renewTimer: ReturnType<typeof setTimeout> | undefined;
      const finish = (error?: CliError) => {
        if (done) return;
        done = true;
        clearTimeout(openTimer);
        clearTimeout(renewTimer);
        options.signal.removeEventListener("abort", onAbort);
        if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
          socket.close(1000, "bye");
        }
        if (error) reject(error);
        else resolve();
      };
      const onAbort = () => finish();
      options.signal.addEventListener("abort", onAbort, { once: true });
      const openTimer = setTimeout(() => {
        if (!opened) {
          finish(
            apiFailure("TIMEOUT", `no WebSocket welcome from ${url} within ${this.#timeoutMs} ms`),
          );
        }
      }, this.#timeoutMs);
      socket.onerror = (event) => {
        if (!opened) {
          const message = (event as ErrorEvent).message ?? "WebSocket failed";
          finish(unreachable("gateway", url, reasonOf(message)));
        }
      };
      socket.onclose = (event) => {
        if (done) return;
        const why = `${event.reason || "no reason given"} (${event.code})`;
        if (!opened) return finish(unreachable("gateway", url, why));
        finish(
          event.code === 1001 || event.code === 1006
            ? apiFailure("UNREACHABLE", `the gateway closed the connection: ${why}`)
            : new CliError(`the gateway closed the connection: ${why}`, "CLOSED"),
        );
      };
      socket.onmessage = (event) => {
        let message: Record<string, unknown>;
        try {
          message = JSON.parse(String(event.data));
        } catch {
          return finish(new CliError(`the gateway sent a message that is not JSON`, "UNEXPECTED"));
        }
        switch (message.type) {
          case "welcome":
            opened = true;
            clearTimeout(openTimer);
            // A WebSocket carries no header here: the credential goes in a first message.
            if (message.auth_required === true) {
              if (!this.#token) {
                return finish(
                  apiFailure(
                    "UNAUTHENTICATED",
                    "Authentication required: plant login, or --token / PLANTD_CLI_TOKEN",
                  ),
                );
              }
              socket.send(JSON.stringify({ type: "auth", id: "auth", token: this.#token }));
              return;
            }
            socket.send(JSON.stringify({ type: "subscribe", id: "sub", bus, prefix }));
            return;
          case "authenticated": {
            // The gateway closes the socket when the token expires: a fresh one before then.
            const expiresAt = Number(message.expires_at);
            const renew = this.#renew;
            if (renew && Number.isFinite(expiresAt)) {
              const delay = Math.max(1000, (expiresAt - Date.now()) * 0.8);
              renewTimer = setTimeout(() => {
                renew().then(
                  (token) => {
                    if (!done) socket.send(JSON.stringify({ type: "auth", id: "renew", token }));
                  },
                  (error) =>
                    finish(
                      error instanceof CliError
                        ? error
                        : apiFailure("UNAUTHENTICATED", String(error)),
                    ),
                );
              }, delay);
            }
            if (subscribing) return;
            subscribing = true;
            socket.send(JSON.stringify({ type: "subscribe", id: "sub", bus, prefix }));
            return;
          }
          case "subscribed":
            return options.onReady(url);
          case "message":
            return options.onMessage(
              {
                bus: String(message.bus),
                topic: String(message.topic),
                payload: String(message.payload),
                encoding: message.encoding === "base64" ? "base64" : "text",
              } satisfies BusLine,
            );
          case "error":
            return finish(apiFailure(String(message.code), String(message.message)));
        }
      };
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
