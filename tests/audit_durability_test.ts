// deno-lint-ignore-file no-explicit-any -- the tests read JSON bodies of many shapes
/**
 * Issue 16: audit rows when the auth database cannot write them (a full
 * disk, simulated by a trigger that fails every insert into `audit_events`
 * the way a full disk fails it, on libSQL and on PostgreSQL). An admin
 * action whose `attempt` row cannot be stored is refused with 503 and
 * changes nothing; logins and failures go on, their events waiting in a
 * bounded queue that is written once the database takes them again, the
 * overflow dropped, counted and shown on /healthz.
 */
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";
import { bearer, call, tokenWith, withSecuredSystem } from "./_auth.ts";
import { waitFor } from "./_helpers.ts";
import { freshDatabase } from "./_postgres.ts";

const PASSWORD = "correct horse battery";
const QUEUE_MAX = 100;

/** Makes every insert into the audit table fail as a full disk does, and undoes it. */
interface DiskFull {
  fill(): Promise<void>;
  free(): Promise<void>;
  close(): Promise<void>;
}

function libsqlFull(path: string): DiskFull {
  const client = createClient({ url: `file:${path}` });
  return {
    fill: async () => {
      await client.execute(
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
      );
    },
    free: async () => void await client.execute("DROP TRIGGER audit_full"),
    close: () => Promise.resolve(client.close()),
  };
}

async function auditLog(url: string): Promise<any> {
  const response = await fetch(`${url}/healthz`);
  const body = await response.json();
  return body.checks.find((c: { name: string }) => c.name === "audit_log");
}

for (const kind of ["libsql", "postgres"] as const) {
  Deno.test(`${kind}: with audit rows failing, admin actions get 503 and change nothing; logins go on, their events queued, bounded, written when the database takes them again`, async () => {
    const dir = await Deno.makeTempDir();
    const db = kind === "postgres" ? await freshDatabase() : undefined;
    const authDb = db?.url ?? `${dir}/auth.db`;
    const disk: DiskFull = db
      ? {
        fill: async () => {
          await db.sql.unsafe(`create function plantd_auth.audit_full() returns trigger
            language plpgsql as $$ begin
              raise exception 'could not extend file: No space left on device' using errcode = '53100';
            end $$`);
          await db.sql.unsafe(`create trigger audit_full before insert on plantd_auth.audit_events
            for each statement execute function plantd_auth.audit_full()`);
        },
        free: async () => {
          await db.sql.unsafe("drop trigger audit_full on plantd_auth.audit_events");
        },
        close: () => Promise.resolve(),
      }
      : libsqlFull(authDb);
    try {
      await withSecuredSystem(async ({ url, registry }) => {
        const admin = bearer(await tokenWith(["*"], { sub: "user:root" }));
        const made = await call(url, "POST", "/api/auth/users", {
          username: "ada",
          password: PASSWORD,
          roles: ["viewer"],
        }, admin);
        assert.equal(made.status, 201, JSON.stringify(made.body));
        assert.equal((await auditLog(url)).status, "UP");

        await disk.fill();
        // An admin action whose audit row cannot be written is not made.
        const role = await call(url, "PUT", "/api/auth/roles/line1", {
          permissions: ["state:scope:line1:read"],
        }, admin);
        assert.equal(role.status, 503, JSON.stringify(role.body));
        assert.equal(role.body.error.code, "AUTH_STORE_UNAVAILABLE");
        assert.match(
          role.body.error.message,
          /audit log cannot be written, so nothing was changed/,
        );
        const disable = await call(url, "PATCH", "/api/auth/users/ada", { disabled: true }, admin);
        assert.equal(disable.status, 503);

        // Failures flood the queue past its bound: the oldest are dropped, counted.
        for (let i = 0; i < QUEUE_MAX + 20; i++) {
          const refused = await call(url, "GET", "/api/auth/me", undefined, bearer(`bad-${i}`));
          assert.equal(refused.status, 401);
        }
        // Logins go on (ada was not disabled), audited into the queue.
        for (let i = 0; i < 3; i++) {
          const login = await call(url, "POST", "/api/auth/login", {
            username: "ada",
            password: PASSWORD,
          });
          assert.equal(login.status, 200, JSON.stringify(login.body));
        }
        const down = await auditLog(url);
        assert.equal(down.status, "DOWN");
        assert.equal(down.required, false);
        assert.match(down.output, /writes fail: .*(full|No space)/);
        const dropped = await registry.getSingleMetric("gateway_audit_events_dropped_total")!
          .get();
        assert.ok(dropped.values[0]!.value >= 20, JSON.stringify(dropped.values));
        assert.match(down.output, /[1-9]\d* dropped since start/);

        // The database takes rows again: the queue is written by itself.
        await disk.free();
        await waitFor(async () => / 0 waiting/.test(` ${(await auditLog(url)).output}`), {
          what: "the queued audit events written",
        });
        const logins = await call(url, "GET", "/api/audit?action=auth.login", undefined, admin);
        assert.equal(logins.body.events.length, 3, JSON.stringify(logins.body));
        // Still DOWN: events were lost, which an operator must see.
        assert.match((await auditLog(url)).output, /dropped since start/);

        // Nothing was changed by the refused actions; with the audit back they work.
        const roles = await call(url, "GET", "/api/auth/roles", undefined, admin);
        assert.equal(roles.body.roles.line1, undefined);
        const users = await call(url, "GET", "/api/auth/users", undefined, admin);
        assert.equal(users.body.users.find((u: any) => u.username === "ada")?.disabled, false);
        const again = await call(url, "PUT", "/api/auth/roles/line1", {
          permissions: ["state:scope:line1:read"],
        }, admin);
        assert.equal(again.status, 200);
        await waitFor(async () => {
          const rows = await call(url, "GET", "/api/audit?action=admin.role.put", undefined, admin);
          return rows.body.events.map((e: any) => e.outcome).sort().join() === "attempt,success";
        }, { what: "the attempt and the success rows of the role put" });
      }, { gateway: { auth_db: authDb, audit_queue_max: QUEUE_MAX } });
    } finally {
      await disk.close();
      await db?.drop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
