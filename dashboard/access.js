// What the signed-in principal may do, from GET /api/auth/me's permissions:
// used to hide panels whose API would refuse the user anyway.

/**
 * Whether `permissions` grant `needed`: the exact name, `*`, or a grant whose
 * trailing `*` covers the rest (`events:*`). The gateway decides; this only
 * spares people panels that would answer 403.
 */
export function can(me, needed) {
  if (!me?.auth_enabled) return true;
  return (me.permissions ?? []).some((grant) =>
    grant === needed || grant === "*" ||
    (grant.endsWith(":*") && needed.startsWith(grant.slice(0, -1)))
  );
}
