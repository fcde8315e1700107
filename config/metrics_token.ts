/**
 * The bearer secret that guards Prometheus `/metrics` on a health server (and
 * is accepted by the gateway's): given directly or as a file.
 *
 * @module
 */
import { z } from "zod";
import { ConfigError } from "./load.ts";
import type { ReadTextFile } from "./curve.ts";

const MIN = 32;

/** Keys of every component with a health or metrics server. */
export const metricsTokenShape = {
  /**
   * Bearer token `/metrics` requires (32+ characters). Required for /metrics
   * on a health_host other than loopback; when set, required on loopback too.
   */
  metrics_token: z.string().min(MIN, `metrics_token needs at least ${MIN} characters`).optional(),
  /** A file holding metrics_token (a mounted secret); surrounding whitespace is ignored. */
  metrics_token_file: z.string().min(1).optional(),
};

export interface MetricsTokenConfig {
  metrics_token?: string | undefined;
  metrics_token_file?: string | undefined;
}

/** What a health server needs to guard /metrics. */
export interface MetricsAccess {
  /** The token; undefined: none configured. */
  token: string | undefined;
  /** Where to set it, for the 403 of a non-loopback server without one. */
  setting: string;
}

/** The metrics token of a component: its value, read from the file if needed. */
export function metricsAccess(
  component: { name: string; envPrefix: string },
  config: MetricsTokenConfig,
  read: ReadTextFile = Deno.readTextFileSync,
): MetricsAccess {
  const { name, envPrefix } = component;
  const setting = `metrics_token (${envPrefix}_METRICS_TOKEN) or metrics_token_file`;
  if (config.metrics_token !== undefined && config.metrics_token_file !== undefined) {
    throw new ConfigError(`${name} config: set 'metrics_token' or 'metrics_token_file', not both`);
  }
  if (config.metrics_token_file === undefined) return { token: config.metrics_token, setting };
  let token: string;
  try {
    token = read(config.metrics_token_file).trim();
  } catch (error) {
    throw new ConfigError(
      `${name} config: cannot read 'metrics_token_file' ${config.metrics_token_file}: ${error}`,
    );
  }
  if (token.length < MIN) {
    throw new ConfigError(
      `${name} config: 'metrics_token_file' ${config.metrics_token_file} holds fewer than ${MIN} characters`,
    );
  }
  return { token, setting };
}
