/**
 * Service name patterns, one rule wherever a set of Majordomo services is
 * named: the broker's service policy and re-queue list, and `service:call:`
 * permission grants. A pattern is a whole name, or a name whose last
 * dot-separated segment is `*`, standing for one or more whole segments:
 * `org.plantd.module.*` covers `org.plantd.module.Echo` and
 * `org.plantd.module.a.b`, not `org.plantd.module` and not
 * `org.plantd.moduleX.Y`; `*` alone covers every name.
 *
 * @module
 */
import { z } from "zod";

/** A service name, or one whose last dot-separated segment is `*`. */
export const servicePattern = z.string().regex(
  /^([^\s.*]+\.)*([^\s.*]+|\*)$/,
  "expected a service name or a pattern ending in a '*' segment, such as org.plantd.module.*",
);

/** Whether `pattern` covers `service` (see the module's rules). */
export function patternCovers(pattern: string, service: string): boolean {
  if (pattern === "*") return service.length > 0;
  if (!pattern.endsWith(".*")) return pattern === service;
  const prefix = pattern.slice(0, -1); // keeps the dot: "org.plantd.module."
  return service.length > prefix.length && service.startsWith(prefix);
}
