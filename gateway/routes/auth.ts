/**
 * `/api/auth` and `/api/audit`: logging in without an outside identity
 * provider, and the admin API for users, roles, API keys and the audit log.
 *
 * Login answers an access token (a JWT, also set as an HttpOnly cookie for
 * the dashboard) and a refresh token (opaque, kept in the session store by
 * its SHA-256, also an HttpOnly cookie limited to /api/auth). Logins are
 * limited per client address (whatever the username) and per username, and
 * hash in the store's pool (auth/hash_pool.ts): a full pool answers 503 at
 * once. Refreshing rotates the refresh token within its family and re-reads
 * the user's roles; a rotated token presented again revokes the whole
 * family (`auth.refresh.reuse`). Logging out ends the family and voids its
 * access tokens (their `sid`); disabling, deleting, or changing a user's
 * roles or password voids all of theirs (the session epoch, see
 * gateway/auth/revocations.ts). Admin routes need `auth:admin`, the audit
 * log `audit:read`.
 *
 * @module
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { HashPoolBusy } from "../../auth/hash_pool.ts";
import { PERMISSIONS } from "../../auth/permissions.ts";
import { randomToken, sha256Hex } from "../../auth/secrets.ts";
import { AuthStoreError, type UserView } from "../../auth/store.ts";
import { AuthError } from "../../auth/tokens.ts";
import { ApiError } from "../errors.ts";
import type { RateCounters } from "../shared/counters.ts";
import type { SessionStore } from "../shared/sessions.ts";
import { ACCESS_COOKIE, type Guard, REFRESH_COOKIE } from "../auth/guard.ts";
import { authorize } from "../auth/http.ts";
import { errorResponses, jsonResponse as json } from "./schemas.ts";

/** What the auth routes need. */
export interface AuthRoutesDeps {
  guard: Guard;
  sessions: SessionStore;
  counters: RateCounters;
  accessTtlS: number;
  refreshTtlS: number;
  /**
   * Seconds after its rotation during which a rotated refresh token
   * presented again gets new tokens of its login rather than ending it.
   */
  refreshReuseGraceS: number;
  /** Cookies get `Secure` (the gateway serves TLS). */
  secureCookies: boolean;
  /** Login attempts per minute from one client address, whatever the username. */
  loginPerIp: number;
  /** Login attempts per minute for one username, from anywhere. */
  loginPerUser: number;
  /** A login refused by a limit or a full hash pool, for metrics. */
  loginRefused?(kind: "login_ip" | "login_user" | "login_busy"): void;
}

const LOGIN_WINDOW_MS = 60_000;

const body = <T extends z.ZodType>(schema: T) => ({
  body: { content: { "application/json": { schema } }, required: true },
});

const Username = z.string().min(1).max(64);
const Password = z.string().min(1).max(1024);
const RoleName = z.string().min(1).max(64);
const Permission = z.string().min(1).max(1024);

const TokenReply = z.object({
  access_token: z.string(),
  token_type: z.literal("Bearer"),
  expires_at: z.number().int().openapi({ description: "ms since the epoch" }),
  refresh_token: z.string(),
  refresh_expires_at: z.number().int(),
}).openapi("TokenReply");

const UserSchema = z.object({
  id: z.string(),
  username: z.string(),
  roles: z.array(z.string()),
  disabled: z.boolean(),
  created_at: z.number().int(),
  updated_at: z.number().int(),
}).openapi("User");

const ApiKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  roles: z.array(z.string()),
  created_by: z.string(),
  created_at: z.number().int(),
  expires_at: z.number().int().nullable(),
  revoked_at: z.number().int().nullable(),
}).openapi("ApiKey");

const AuditSchema = z.object({
  id: z.number().int(),
  time: z.number().int(),
  actor: z.string(),
  action: z.string(),
  target: z.string(),
  outcome: z.string(),
  ip: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
}).openapi("AuditEvent");

const login = createRoute({
  method: "post",
  path: "/api/auth/login",
  summary: "Log in with a username and password",
  request: body(z.object({ username: Username, password: Password }).openapi("Login")),
  responses: {
    200: json(TokenReply, "Tokens (also set as HttpOnly cookies)"),
    ...errorResponses(400, 401, 415, 429, 503),
  },
});

const refresh = createRoute({
  method: "post",
  path: "/api/auth/refresh",
  summary: "Trade a refresh token (body or cookie) for new tokens",
  request: {
    body: {
      content: {
        "application/json": { schema: z.object({ refresh_token: z.string().optional() }) },
      },
      required: false,
    },
  },
  responses: { 200: json(TokenReply, "New tokens"), ...errorResponses(401, 415, 503) },
});

const logout = createRoute({
  method: "post",
  path: "/api/auth/logout",
  summary: "End the session of a refresh token (body or cookie)",
  request: {
    body: {
      content: {
        "application/json": { schema: z.object({ refresh_token: z.string().optional() }) },
      },
      required: false,
    },
  },
  responses: {
    200: json(z.object({ status: z.literal("logged out") }), "Logged out"),
    ...errorResponses(415),
  },
});

const me = createRoute({
  method: "get",
  path: "/api/auth/me",
  summary: "Who the caller is and what it may do",
  responses: {
    200: json(
      z.object({
        auth_enabled: z.boolean(),
        login_available: z.boolean(),
        id: z.string(),
        name: z.string(),
        kind: z.string(),
        roles: z.array(z.string()),
        permissions: z.array(z.string()),
        expires_at: z.number().int().optional(),
      }),
      "The principal",
    ),
    ...errorResponses(401),
  },
});

const listUsers = createRoute({
  method: "get",
  path: "/api/auth/users",
  summary: "List users (auth:admin)",
  responses: {
    200: json(z.object({ users: z.array(UserSchema) }), "Users"),
    ...errorResponses(401, 403),
  },
});

const createUser = createRoute({
  method: "post",
  path: "/api/auth/users",
  summary: "Create a user (auth:admin)",
  request: body(
    z.object({ username: Username, password: Password, roles: z.array(RoleName).max(64) })
      .openapi("NewUser"),
  ),
  responses: { 201: json(UserSchema, "Created"), ...errorResponses(400, 401, 403, 409, 415, 503) },
});

const UsernameParam = z.object({
  username: Username.openapi({ param: { name: "username", in: "path" } }),
});

const updateUser = createRoute({
  method: "patch",
  path: "/api/auth/users/{username}",
  summary: "Change a user's roles, password or disabled flag (auth:admin)",
  request: {
    params: UsernameParam,
    ...body(
      z.object({
        roles: z.array(RoleName).max(64).optional(),
        password: Password.optional(),
        disabled: z.boolean().optional(),
      }).openapi("UserChange"),
    ),
  },
  responses: { 200: json(UserSchema, "Changed"), ...errorResponses(400, 401, 403, 404, 415, 503) },
});

const deleteUser = createRoute({
  method: "delete",
  path: "/api/auth/users/{username}",
  summary: "Delete a user and end its sessions (auth:admin)",
  request: { params: UsernameParam },
  responses: {
    200: json(z.object({ username: z.string(), status: z.literal("deleted") }), "Deleted"),
    ...errorResponses(401, 403, 404, 503),
  },
});

const listRoles = createRoute({
  method: "get",
  path: "/api/auth/roles",
  summary: "Roles with their permissions (auth:admin)",
  responses: {
    200: json(z.object({ roles: z.record(z.string(), z.array(z.string())) }), "Roles"),
    ...errorResponses(401, 403),
  },
});

const RoleParam = z.object({ name: RoleName.openapi({ param: { name: "name", in: "path" } }) });

const putRole = createRoute({
  method: "put",
  path: "/api/auth/roles/{name}",
  summary: "Define or redefine a role (auth:admin)",
  request: {
    params: RoleParam,
    ...body(z.object({ permissions: z.array(Permission).max(1024) })),
  },
  responses: {
    200: json(z.object({ name: z.string(), permissions: z.array(z.string()) }), "Defined"),
    ...errorResponses(400, 401, 403, 415, 503),
  },
});

const deleteRole = createRoute({
  method: "delete",
  path: "/api/auth/roles/{name}",
  summary: "Delete a defined role (auth:admin)",
  request: { params: RoleParam },
  responses: {
    200: json(z.object({ name: z.string(), status: z.literal("deleted") }), "Deleted"),
    ...errorResponses(401, 403, 404, 503),
  },
});

const listKeys = createRoute({
  method: "get",
  path: "/api/auth/api-keys",
  summary: "API keys, without their secrets (auth:admin)",
  responses: {
    200: json(z.object({ api_keys: z.array(ApiKeySchema) }), "Keys"),
    ...errorResponses(401, 403),
  },
});

const createKey = createRoute({
  method: "post",
  path: "/api/auth/api-keys",
  summary: "Create an API key; the key is in this reply only (auth:admin)",
  request: body(
    z.object({
      name: z.string().min(1).max(128),
      roles: z.array(RoleName).min(1).max(64),
      expires_at: z.number().int().positive().optional(),
    }).openapi("NewApiKey"),
  ),
  responses: {
    201: json(z.object({ key: z.string(), api_key: ApiKeySchema }), "Created"),
    ...errorResponses(400, 401, 403, 415, 503),
  },
});

const revokeKey = createRoute({
  method: "delete",
  path: "/api/auth/api-keys/{id}",
  summary: "Revoke an API key (auth:admin)",
  request: {
    params: z.object({
      id: z.string().min(1).max(64).openapi({ param: { name: "id", in: "path" } }),
    }),
  },
  responses: {
    200: json(z.object({ id: z.string(), status: z.literal("revoked") }), "Revoked"),
    ...errorResponses(401, 403, 404, 503),
  },
});

const audit = createRoute({
  method: "get",
  path: "/api/audit",
  summary: "Audit events, newest first (audit:read)",
  request: {
    query: z.object({
      actor: z.string().max(256).optional(),
      action: z.string().max(256).optional(),
      from: z.iso.datetime({ offset: true }).optional(),
      to: z.iso.datetime({ offset: true }).optional(),
      before: z.coerce.number().int().positive().optional()
        .openapi({ description: "Only events with a smaller id (the next page)" }),
      limit: z.coerce.number().int().min(1).max(1000).default(100),
    }),
  },
  responses: {
    200: json(z.object({ events: z.array(AuditSchema) }), "Events"),
    ...errorResponses(400, 401, 403),
  },
});

function storeError(error: unknown): never {
  if (error instanceof AuthStoreError) {
    throw new ApiError(
      error.code === "CONFLICT"
        ? "CONFLICT"
        : error.code === "NOT_FOUND"
        ? "NOT_FOUND"
        : "BAD_REQUEST",
      error.message,
    );
  }
  throw error;
}

/** Adds the auth and audit routes to `app`. */
export function authRoutes(app: OpenAPIHono, deps: AuthRoutesDeps): void {
  const { guard, sessions } = deps;
  const store = guard.store;

  /** The `attempt` row of an admin action, stored before the action is made (503 when not). */
  const adminAttempt = (c: Context, action: string, target: string, details?: object) =>
    guard.auditFirst({
      time: Date.now(),
      actor: c.get("principal").id,
      action,
      target,
      outcome: "attempt",
      ip: c.get("clientIp"),
      ...(details ? { details: { ...details } } : {}),
    });

  const adminAudit = (c: Context, action: string, target: string, details?: object) =>
    guard.audit({
      time: Date.now(),
      actor: c.get("principal").id,
      action,
      target,
      outcome: "success",
      ip: c.get("clientIp"),
      ...(details ? { details: { ...details } } : {}),
    });

  const cookie = (c: Context, name: string, value: string, maxAge: number, path: string) =>
    setCookie(c, name, value, {
      httpOnly: true,
      sameSite: "Strict",
      secure: deps.secureCookies,
      path,
      maxAge,
    });

  /**
   * Issues an access token and a new session of `family` (a new login when
   * none) for a user, and sets both cookies.
   */
  const issue = async (c: Context, user: UserView, family = randomToken(12)) => {
    const issuer = guard.issuer!;
    const permissions = await store.permissionsOf(user.roles);
    // The epoch read after the password check: a change in between voids this token too.
    const state = (await store.sessionStates([user.username])).get(user.username);
    if (!state?.active) throw new AuthError("AUTHENTICATION_FAILED", "Account not active");
    const access = await issuer.issue(
      {
        sub: `user:${user.username}`,
        name: user.username,
        roles: user.roles,
        perms: permissions,
        sep: state.epoch,
        sid: family,
      },
      deps.accessTtlS,
    );
    const refreshToken = randomToken(32);
    const now = Date.now();
    const refreshExpiresAt = now + deps.refreshTtlS * 1000;
    await sessions.put(await sha256Hex(refreshToken), {
      userId: user.id,
      username: user.username,
      family,
      createdAt: now,
      expiresAt: refreshExpiresAt,
    });
    cookie(c, ACCESS_COOKIE, access.token, deps.accessTtlS, "/");
    cookie(c, REFRESH_COOKIE, refreshToken, deps.refreshTtlS, "/api/auth");
    return {
      access_token: access.token,
      token_type: "Bearer" as const,
      expires_at: access.expiresAt,
      refresh_token: refreshToken,
      refresh_expires_at: refreshExpiresAt,
    };
  };

  const requireIssuer = () => {
    if (!guard.issuer) {
      throw new ApiError(
        "SERVICE_UNAVAILABLE",
        guard.enabled
          ? "Login needs jwt_secret or jwt_private_key (tokens come from an outside provider)"
          : "Authentication is off: set jwt_secret (or a key) to turn logins on",
      );
    }
  };

  const refreshTokenOf = async (c: Context): Promise<string | undefined> => {
    const type = c.req.header("content-type") ?? "";
    if (type.startsWith("application/json")) {
      const parsed = await c.req.json().catch(() => undefined) as
        | { refresh_token?: unknown }
        | undefined;
      if (typeof parsed?.refresh_token === "string") return parsed.refresh_token;
    }
    return getCookie(c, REFRESH_COOKIE);
  };

  /** Ends a login: its refresh tokens, and at once its access tokens on every gateway. */
  const endFamily = async (family: string) => {
    await sessions.deleteFamily(family);
    await guard.revocations?.revokeSession(family, Date.now() + deps.accessTtlS * 1000);
  };

  const limited = (
    kind: "login_ip" | "login_user" | "login_busy",
    message: string,
    seconds: number,
  ) => {
    deps.loginRefused?.(kind);
    return new ApiError(
      kind === "login_busy" ? "SERVICE_UNAVAILABLE" : "RATE_LIMITED",
      message,
      undefined,
      { "Retry-After": String(Math.max(1, Math.ceil(seconds))) },
    );
  };

  app.openapi(login, async (c) => {
    requireIssuer();
    const { username, password } = c.req.valid("json");
    const ip = c.get("clientIp");
    // Per address whatever the username (rotating names), then per username
    // whatever the address (one account guessed from many).
    const fromIp = await deps.counters.hit(`login-ip:${ip}`, LOGIN_WINDOW_MS);
    if (fromIp.count > deps.loginPerIp) {
      const seconds = Math.ceil(fromIp.resetMs / 1000);
      throw limited(
        "login_ip",
        `Too many logins from this address; retry in ${seconds} s`,
        seconds,
      );
    }
    const forUser = await deps.counters.hit(`login-user:${username}`, LOGIN_WINDOW_MS);
    if (forUser.count > deps.loginPerUser) {
      const seconds = Math.ceil(forUser.resetMs / 1000);
      throw limited("login_user", `Too many logins for this user; retry in ${seconds} s`, seconds);
    }
    const user = await store.checkPassword(username, password).catch((error) => {
      if (!(error instanceof HashPoolBusy)) throw error;
      throw limited("login_busy", "Too many logins waiting; retry in 1 s", 1);
    });
    if (!user) {
      const error = new AuthError("AUTHENTICATION_FAILED", "Wrong username or password");
      guard.failed(error, ip, `login ${username}`);
      throw error;
    }
    guard.audit({
      time: Date.now(),
      actor: `user:${username}`,
      action: "auth.login",
      target: `user:${username}`,
      outcome: "success",
      ip,
    });
    return c.json(await issue(c, user), 200);
  });

  app.openapi(refresh, async (c) => {
    requireIssuer();
    const token = await refreshTokenOf(c);
    const ip = c.get("clientIp");
    const id = token ? await sha256Hex(token) : undefined;
    const claimed = id ? await sessions.claim(id) : undefined;
    // Two tabs (or a retry after a lost answer) refreshing with one token
    // within seconds: the later one gets tokens of the same login too, as
    // Auth0's reuse interval and Okta's grace period do. Later reuse is theft.
    const graceful = claimed?.reused === true && deps.refreshReuseGraceS > 0 &&
      Date.now() - (claimed.rotatedAt ?? 0) <= deps.refreshReuseGraceS * 1000;
    if (claimed?.reused && !graceful) {
      // A rotated token came back: it was stolen, or the thief already used
      // its successor. Either way the whole login ends.
      const { record } = claimed;
      await endFamily(record.family);
      guard.audit({
        time: Date.now(),
        actor: `user:${record.username}`,
        action: "auth.refresh.reuse",
        target: `user:${record.username}`,
        outcome: "denied",
        ip,
        details: { family_created_at: record.createdAt },
      });
    }
    const session = claimed && (!claimed.reused || graceful) ? claimed.record : undefined;
    const user = session ? await store.user(session.username) : undefined;
    if (!id || !session || !user || user.disabled || user.id !== session.userId) {
      if (id && !claimed?.reused) await sessions.delete(id);
      const error = new AuthError("AUTHENTICATION_FAILED", "Refresh token is not valid");
      guard.failed(error, ip, "refresh");
      throw error;
    }
    if (graceful) {
      guard.audit({
        time: Date.now(),
        actor: `user:${session.username}`,
        action: "auth.refresh.grace",
        target: `user:${session.username}`,
        outcome: "success",
        ip,
        details: { rotated_ms_ago: Date.now() - (claimed!.rotatedAt ?? 0) },
      });
    }
    // The rotated token stays (marked) until it expires, so its reuse is seen.
    return c.json(await issue(c, user, session.family), 200);
  });

  app.openapi(logout, async (c) => {
    const token = await refreshTokenOf(c);
    const session = token ? await sessions.get(await sha256Hex(token)) : undefined;
    // The login of the refresh token, and the one of the access token used, if any.
    const families = new Set<string>();
    if (session) families.add(session.family);
    const sid = c.get("principal").session?.sid;
    if (sid) families.add(sid);
    for (const family of families) await endFamily(family);
    deleteCookie(c, ACCESS_COOKIE, { path: "/" });
    deleteCookie(c, REFRESH_COOKIE, { path: "/api/auth" });
    return c.json({ status: "logged out" as const }, 200);
  });

  app.openapi(me, (c) => {
    const principal = c.get("principal");
    if (guard.enabled && principal.permissions.length === 0 && principal.id === "anonymous") {
      throw new AuthError("AUTHENTICATION_REQUIRED", "Authentication required");
    }
    return c.json({
      auth_enabled: guard.enabled,
      login_available: guard.issuer !== undefined,
      id: principal.id,
      name: principal.name,
      kind: principal.kind,
      roles: principal.roles,
      permissions: principal.permissions,
      ...(principal.expiresAt ? { expires_at: principal.expiresAt } : {}),
    }, 200);
  });

  app.openapi(listUsers, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    return c.json({ users: await store.users() }, 200);
  });

  app.openapi(createUser, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { username, password, roles } = c.req.valid("json");
    await adminAttempt(c, "admin.user.create", `user:${username}`, { roles });
    const user = await store.createUser(username, password, roles).catch(storeError);
    await guard.revocations?.changed(); // a gateway may remember the name as deleted
    adminAudit(c, "admin.user.create", `user:${username}`, { roles });
    return c.json(user, 201);
  });

  app.openapi(updateUser, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { username } = c.req.valid("param");
    const change = c.req.valid("json");
    await adminAttempt(c, "admin.user.update", `user:${username}`, {
      ...(change.roles ? { roles: change.roles } : {}),
      ...(change.password !== undefined ? { password: "changed" } : {}),
      ...(change.disabled !== undefined ? { disabled: change.disabled } : {}),
    });
    const user = await store.updateUser(username, change).catch(storeError);
    // New roles, a new password or a disabled account: existing sessions end,
    // access tokens included (the store bumped the user's session epoch).
    const ended = await sessions.deleteUser(user.id);
    await guard.revocations?.changed();
    adminAudit(c, "admin.user.update", `user:${username}`, {
      ...(change.roles ? { roles: change.roles } : {}),
      ...(change.password !== undefined ? { password: "changed" } : {}),
      ...(change.disabled !== undefined ? { disabled: change.disabled } : {}),
      sessions_ended: ended,
    });
    return c.json(user, 200);
  });

  app.openapi(deleteUser, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { username } = c.req.valid("param");
    await adminAttempt(c, "admin.user.delete", `user:${username}`);
    const user = await store.deleteUser(username);
    if (!user) throw new ApiError("NOT_FOUND", `No user '${username}'`);
    await sessions.deleteUser(user.id);
    await guard.revocations?.changed();
    adminAudit(c, "admin.user.delete", `user:${username}`);
    return c.json({ username, status: "deleted" as const }, 200);
  });

  app.openapi(listRoles, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    return c.json({ roles: await store.roles() }, 200);
  });

  app.openapi(putRole, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { name } = c.req.valid("param");
    const { permissions } = c.req.valid("json");
    await adminAttempt(c, "admin.role.put", `role:${name}`, { permissions });
    await store.putRole(name, permissions).catch(storeError);
    adminAudit(c, "admin.role.put", `role:${name}`, { permissions });
    return c.json({ name, permissions }, 200);
  });

  app.openapi(deleteRole, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { name } = c.req.valid("param");
    await adminAttempt(c, "admin.role.delete", `role:${name}`);
    if (!await store.deleteRole(name)) throw new ApiError("NOT_FOUND", `No defined role '${name}'`);
    adminAudit(c, "admin.role.delete", `role:${name}`);
    return c.json({ name, status: "deleted" as const }, 200);
  });

  app.openapi(listKeys, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    return c.json({ api_keys: await store.apiKeys() }, 200);
  });

  app.openapi(createKey, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { name, roles, expires_at } = c.req.valid("json");
    // The key's id is made with it: the attempt names the key by its name.
    await adminAttempt(c, "admin.apikey.create", `apikey-name:${name}`, { name, roles });
    const { key, view } = await store.createApiKey(
      name,
      roles,
      c.get("principal").id,
      expires_at ?? null,
    ).catch(storeError);
    adminAudit(c, "admin.apikey.create", `apikey:${view.id}`, { name, roles });
    return c.json({ key, api_key: view }, 201);
  });

  app.openapi(revokeKey, async (c) => {
    authorize(c, guard, PERMISSIONS.authAdmin);
    const { id } = c.req.valid("param");
    await adminAttempt(c, "admin.apikey.revoke", `apikey:${id}`);
    if (!await store.revokeApiKey(id)) throw new ApiError("NOT_FOUND", `No active API key '${id}'`);
    guard.forgetApiKeys();
    adminAudit(c, "admin.apikey.revoke", `apikey:${id}`);
    return c.json({ id, status: "revoked" as const }, 200);
  });

  app.openapi(audit, async (c) => {
    authorize(c, guard, PERMISSIONS.auditRead);
    const q = c.req.valid("query");
    const events = await store.queryAudit({
      actor: q.actor,
      action: q.action,
      from: q.from ? Date.parse(q.from) : undefined,
      to: q.to ? Date.parse(q.to) : undefined,
      before: q.before,
      limit: q.limit,
    });
    return c.json({ events }, 200);
  });
}
