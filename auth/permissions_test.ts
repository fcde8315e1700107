import assert from "node:assert/strict";
import {
  allows,
  grantCovers,
  isPermission,
  permissionsOf,
  statePermissions,
} from "./permissions.ts";

Deno.test("a grant covers itself, its wildcards and nothing else", () => {
  assert(grantCovers("state:data:read", "state:data:read"));
  assert(grantCovers("*", "state:data:read"));
  assert(grantCovers("state:*", "state:data:read"));
  assert(grantCovers("state:*", "state:scope:plant:read"));
  assert(grantCovers("state:data:*", "state:data:write"));
  assert(grantCovers("state:scope:*:read", "state:scope:plant:read"));
  assert.ok(!grantCovers("state:data:read", "state:data:write"));
  assert.ok(!grantCovers("state:data", "state:data:read"));
  assert.ok(!grantCovers("state:scope:*:read", "state:scope:plant:write"));
  assert.ok(!grantCovers("state:scope:plant:read", "state:scope:plant2:read"));
  assert.ok(!grantCovers("service:call:a", "service:call:ab"));
  assert.ok(!grantCovers("state:*", "service:call:x"));
});

Deno.test("scope grants match whole scope names: state:scope:plant:* is not plant:x", () => {
  assert(grantCovers("state:scope:plant:*", "state:scope:plant:read"));
  assert(grantCovers("state:scope:plant:*", "state:scope:plant:admin"));
  assert.ok(!grantCovers("state:scope:plant:*", "state:scope:plant:x:read"));
  assert.ok(!grantCovers("state:scope:plant:*", "state:scope:plant:x:admin"));
  assert.ok(!allows(["state:scope:plant:*"], ...statePermissions("state-set", "plant:x")!));
  assert(allows(["state:scope:plant:*"], ...statePermissions("state-set", "plant")!));
  // A scope name with colons is one name, granted whole.
  assert(grantCovers("state:scope:plant:x:write", "state:scope:plant:x:write"));
  assert(grantCovers("state:scope:plant:x:*", "state:scope:plant:x:delete"));
  assert.ok(!grantCovers("state:scope:plant:x:*", "state:scope:plant:read"));
  assert.ok(!grantCovers("state:scope:plant:read", "state:scope:plant:x:read"));
  // `*` as the scope: every scope, whatever its name.
  assert(grantCovers("state:scope:*:read", "state:scope:plant:x:read"));
  assert.ok(!grantCovers("state:scope:*:read", "state:scope:plant:x:write"));
  assert(grantCovers("state:scope:*:*", "state:scope:a:b:c:admin"));
  // Wider grants unchanged.
  assert(grantCovers("state:scope:*", "state:scope:plant:x:read"));
  assert(grantCovers("state:scope:*", "state:scope:create"));
  assert(grantCovers("state:*", "state:scope:plant:x:read"));
  assert(grantCovers("*", "state:scope:plant:x:read"));
  assert.ok(!grantCovers("state:scope:plant:*", "state:scope:create"));
});

Deno.test("service grants match whole service names or a dotted namespace", () => {
  assert(grantCovers("service:call:org.plantd.module.Echo", "service:call:org.plantd.module.Echo"));
  assert.ok(
    !grantCovers("service:call:org.plantd.module.Echo", "service:call:org.plantd.module.EchoX"),
  );
  // Service names may hold colons: a trailing `*` segment is no prefix match.
  assert.ok(!grantCovers("service:call:a:*", "service:call:a:b"));
  assert.ok(!grantCovers("service:call:a", "service:call:a:b"));
  assert(grantCovers("service:call:a:b", "service:call:a:b"));
  assert(grantCovers("service:call:org.plantd.module.*", "service:call:org.plantd.module.Echo"));
  assert(grantCovers("service:call:org.plantd.*", "service:call:org.plantd.module.Echo"));
  assert.ok(!grantCovers("service:call:org.plantd.module.*", "service:call:org.plantd.moduleX"));
  assert.ok(!grantCovers("service:call:org.plantd.module.*", "service:call:org.plantd.module."));
  assert.ok(!grantCovers("service:call:org.plantd.*", "service:list"));
  assert(grantCovers("service:call:*", "service:call:a:b"));
  assert(grantCovers("service:*", "service:call:org.plantd.State"));
  assert(grantCovers("service:*", "service:list"));
});

Deno.test("bus grants are topic prefixes: a subscription never reaches past its grant", () => {
  assert(grantCovers("bus:subscribe:event:plant1.", "bus:subscribe:event:plant1."));
  assert(grantCovers("bus:subscribe:event:plant1.", "bus:subscribe:event:plant1.pump"));
  assert(grantCovers("bus:subscribe:event:plant1.*", "bus:subscribe:event:plant1.pump"));
  assert.ok(!grantCovers("bus:subscribe:event:plant1.", "bus:subscribe:event:plant"));
  assert.ok(!grantCovers("bus:subscribe:event:plant1.", "bus:subscribe:event:"));
  assert.ok(!grantCovers("bus:subscribe:event:plant1.", "bus:subscribe:metric:plant1."));
  assert.ok(!grantCovers("bus:subscribe:event:plant1.", "bus:publish:event:plant1."));
  // Topics may contain colons.
  assert(grantCovers("bus:subscribe:event:a:b", "bus:subscribe:event:a:b:c"));
  assert.ok(!grantCovers("bus:subscribe:event:a:b", "bus:subscribe:event:a:c"));
  // Whole buses.
  assert(grantCovers("bus:subscribe:event", "bus:subscribe:event:"));
  assert(grantCovers("bus:subscribe:event:*", "bus:subscribe:event:x"));
  assert(grantCovers("bus:subscribe:*", "bus:subscribe:metric:x"));
  assert(grantCovers("bus:*", "bus:publish:metric:x"));
  assert.ok(!grantCovers("bus:subscribe:*", "bus:publish:metric:x"));
});

Deno.test("state operations need the permission Go plantd meant, not admin", () => {
  assert.deepEqual(statePermissions("state-get", "plant")?.[0], "state:data:read");
  assert.deepEqual(statePermissions("state-set", "plant")?.[0], "state:data:write");
  assert(allows(["state:scope:plant:read"], ...statePermissions("state-get", "plant")!));
  assert.ok(!allows(["state:scope:plant:read"], ...statePermissions("state-set", "plant")!));
  assert.ok(!allows(["state:scope:plant:read"], ...statePermissions("state-get", "other")!));
  assert(allows(["state:scope:plant:admin"], ...statePermissions("delete-scope", "plant")!));
  assert(allows(["state:admin:full"], ...statePermissions("list-scopes", undefined)!));
  assert.deepEqual(statePermissions("no-such-op", "plant"), null);
});

Deno.test("roles expand to permissions; unknown roles grant nothing", () => {
  assert.deepEqual(permissionsOf(["viewer", "nope"], {}).includes("state:data:read"), true);
  assert.deepEqual(permissionsOf(["custom"], { custom: ["a:b"] }), ["a:b"]);
  assert.deepEqual(permissionsOf(["nope"], {}), []);
  assert(isPermission("state:scope:plant:read"));
  assert.ok(!isPermission("state data"));
  assert.ok(!isPermission(""));
});
