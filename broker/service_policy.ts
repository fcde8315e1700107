/**
 * Who may serve what: which worker, known by the CURVE public key it
 * authenticated with, may register (send READY for) which service.
 *
 * Names under `org.plantd.` are system services (the state service, modules
 * that ask for protection): a key serves one only with a grant naming it or a
 * pattern covering it. Any other name may be served by any authenticated key.
 * A pattern is a whole name, or a name whose last segment is `*`, standing
 * for one or more whole segments: `org.plantd.module.*` covers
 * `org.plantd.module.Echo` and `org.plantd.module.a.b`, not
 * `org.plantd.module` and not `org.plantd.moduleX.Y`; `*` alone covers every
 * name. Plaintext peers have no key: a broker without CURVE has no policy.
 *
 * @module
 */
import { z } from "zod";
import { Z85_KEY_PATTERN } from "../transport/curve.ts";

/** Prefix of the services only granted keys may serve. */
export const SYSTEM_SERVICE_PREFIX = "org.plantd.";

/** A service name, or one whose last dot-separated segment is `*`. */
export const servicePattern = z.string().regex(
  /^([^\s.*]+\.)*([^\s.*]+|\*)$/,
  "expected a service name or a pattern ending in a '*' segment, such as org.plantd.module.*",
);

/** One grant: a client public key and the services it may serve. */
export const serviceGrant = z.strictObject({
  key: z.string().regex(Z85_KEY_PATTERN, "expected a CURVE public key: 40 characters of Z85"),
  services: z.array(servicePattern).min(1),
});

/** A policy as configured: a list of grants (a key may appear more than once). */
export const serviceGrants = z.array(serviceGrant);

export type ServiceGrant = z.infer<typeof serviceGrant>;

/** Why a READY was refused (the label of the refusal counter). */
export type RefusalReason = "not_granted" | "reserved" | "revoked" | "key_changed";

/** Whether `pattern` covers `service` (see the module's rules). */
export function patternCovers(pattern: string, service: string): boolean {
  if (pattern === "*") return service.length > 0;
  if (!pattern.endsWith(".*")) return pattern === service;
  const prefix = pattern.slice(0, -1); // keeps the dot: "org.plantd.module."
  return service.length > prefix.length && service.startsWith(prefix);
}

/** An immutable policy; the broker swaps in a new one on reload. */
export class ServicePolicy {
  readonly #grants = new Map<string, string[]>();

  constructor(grants: readonly ServiceGrant[] = []) {
    for (const grant of grants) {
      const patterns = this.#grants.get(grant.key) ?? [];
      patterns.push(...grant.services);
      this.#grants.set(grant.key, patterns);
    }
  }

  /** Keys named in the policy. */
  get keys(): number {
    return this.#grants.size;
  }

  /** Whether the peer with `peerKey` (none: unauthenticated) may serve `service`. */
  allows(peerKey: string | undefined, service: string): boolean {
    if (!service.startsWith(SYSTEM_SERVICE_PREFIX)) return peerKey !== undefined;
    if (peerKey === undefined) return false;
    return this.#grants.get(peerKey)?.some((p) => patternCovers(p, service)) ?? false;
  }
}
