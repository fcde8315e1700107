/**
 * The `auth_db` check of the gateway's `/healthz`: whether the auth database
 * answers. Read at most every `everyMs` (probes come often) and never waited
 * on longer than `timeoutMs`, so a database that hangs cannot hang the probe.
 *
 * @module
 */
import type { AuthStore } from "../../auth/store.ts";

/** What the check last found. */
export interface StoreHealth {
  ok: boolean;
  /** Why not, when not ok. */
  output: string;
}

/** A function that answers the auth database's health, refreshed when stale. */
export function authStoreHealth(
  store: AuthStore,
  options: { everyMs?: number; timeoutMs?: number } = {},
): () => Promise<StoreHealth> {
  const everyMs = options.everyMs ?? 2000;
  const timeoutMs = options.timeoutMs ?? 2000;
  let last: StoreHealth & { at: number } = { ok: false, output: "not checked yet", at: 0 };
  let checking: Promise<void> | undefined;
  const check = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`auth database did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([store.ping(), late]);
      last = { ok: true, output: "", at: Date.now() };
    } catch (error) {
      last = { ok: false, output: (error as Error).message, at: Date.now() };
    } finally {
      clearTimeout(timer);
    }
  };
  return async () => {
    if (Date.now() - last.at >= everyMs) {
      await (checking ??= check().finally(() => checking = undefined));
    }
    return { ok: last.ok, output: last.output };
  };
}
