/**
 * Who may serve what: which worker, known by the CURVE public key it
 * authenticated with, may register (send READY for) which service.
 *
 * Names under `org.plantd.` are system services (the state service, modules
 * that ask for protection): a key serves one only with a grant naming it or a
 * pattern covering it. Any other name may be served by any authenticated key.
 * Patterns follow mdp/service_pattern.ts. Plaintext peers have no key: a
 * broker without CURVE has no policy.
 *
 * @module
 */
import { z } from "zod";
import { Z85_KEY_PATTERN } from "../transport/curve.ts";
import { patternCovers, servicePattern } from "../mdp/service_pattern.ts";

/** Prefix of the services only granted keys may serve. */
export const SYSTEM_SERVICE_PREFIX = "org.plantd.";

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
