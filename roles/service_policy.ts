/**
 * Reloads the broker's service policy file on SIGHUP and whenever the file
 * (or, for a Kubernetes ConfigMap, its directory) changes. A file that fails
 * to load keeps the policy in force and logs an error; a good one replaces it
 * and the broker drops workers it no longer allows.
 *
 * @module
 */
import { basename, dirname } from "node:path";
import type { ServicePolicy } from "../broker/service_policy.ts";
import { type ServicePolicyConfig, servicePolicyOf } from "../config/service_policy.ts";
import { logger } from "../telemetry/log.ts";

/** Coalesces the several events of one save (truncate, write, rename) into one reload. */
const SETTLE_MS = 50;

/** A running reloader; `close()` stops watching. */
export interface PolicyReloader {
  /** Reloads now; true when the new policy is in force. */
  reload(): boolean;
  close(): void;
}

/**
 * Watches `config.service_policy_file` (nothing to watch without one) and
 * calls `apply` with each policy that loads; `reloaded` reports each attempt.
 */
export function watchServicePolicy(
  config: ServicePolicyConfig,
  apply: (policy: ServicePolicy) => void,
  reloaded: (ok: boolean) => void = () => {},
): PolicyReloader | undefined {
  const file = config.service_policy_file;
  if (file === undefined) return undefined;
  const log = logger("broker", "service-policy");
  const reload = (): boolean => {
    let policy: ServicePolicy | undefined;
    try {
      policy = servicePolicyOf(config, true);
    } catch (error) {
      log.error("service policy not reloaded, the previous one stays: {error}", {
        error: (error as Error).message,
        file,
      });
      reloaded(false);
      return false;
    }
    apply(policy!);
    log.info("service policy reloaded from {file}: {keys} keys", { file, keys: policy!.keys });
    reloaded(true);
    return true;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(reload, SETTLE_MS);
  };
  Deno.addSignalListener("SIGHUP", soon);
  const watcher = Deno.watchFs(dirname(file), { recursive: false });
  const name = basename(file);
  void (async () => {
    try {
      for await (const event of watcher) {
        // "..data" is the symlink a ConfigMap volume swaps on update.
        if (event.paths.some((p) => basename(p) === name || basename(p) === "..data")) soon();
      }
    } catch (error) {
      log.error("cannot watch {file}: {error}; SIGHUP still reloads", {
        file,
        error: (error as Error).message,
      });
    }
  })();
  return {
    reload,
    close() {
      clearTimeout(timer);
      Deno.removeSignalListener("SIGHUP", soon);
      watcher.close();
    },
  };
}
