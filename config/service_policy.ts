/**
 * The broker's service policy from its configuration: the `service_policy`
 * grants plus those of `service_policy_file` (YAML or JSON: a list of
 * `{key, services}`), checked with the same schema.
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { type ServiceGrant, serviceGrants, ServicePolicy } from "../broker/service_policy.ts";
import type { ReadTextFile } from "./curve.ts";
import { ConfigError } from "./load.ts";

/** The keys of a broker configuration this module reads. */
export interface ServicePolicyConfig {
  service_policy?: readonly ServiceGrant[] | undefined;
  service_policy_file?: string | undefined;
}

/** `config` with one more grant: `key` may serve `services`. */
export function withGrant<T extends ServicePolicyConfig>(
  config: T,
  key: string,
  services: string[],
): T {
  return { ...config, service_policy: [...(config.service_policy ?? []), { key, services }] };
}

/** The grants of a policy file; a ConfigError naming `service_policy_file` when it is bad. */
export function readPolicyFile(file: string, read: ReadTextFile): ServiceGrant[] {
  const bad = (why: string) =>
    new ConfigError(`broker config: bad 'service_policy_file' ${file}: ${why}`);
  let data: unknown;
  try {
    data = parseYaml(read(file)) ?? [];
  } catch (error) {
    throw bad((error as Error).message);
  }
  const result = serviceGrants.safeParse(data);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const at = issue.path.length > 0 ? ` at ${issue.path.join(".")}` : "";
    throw bad(`${issue.message}${at}`);
  }
  return result.data;
}

/**
 * The policy of a broker, or undefined for a plaintext one. A policy
 * configured without CURVE is a ConfigError: plaintext peers have no key.
 */
export function servicePolicyOf(
  config: ServicePolicyConfig,
  curve: boolean,
  read: ReadTextFile = Deno.readTextFileSync,
): ServicePolicy | undefined {
  const file = config.service_policy_file;
  if (!curve) {
    if ((config.service_policy ?? []).length > 0 || file !== undefined) {
      const key = file !== undefined ? "service_policy_file" : "service_policy";
      throw new ConfigError(
        `broker config: '${key}' needs curve_secret_key (or _file): plaintext peers have no key to grant`,
      );
    }
    return undefined;
  }
  const grants = [...(config.service_policy ?? [])];
  if (file !== undefined) grants.push(...readPolicyFile(file, read));
  return new ServicePolicy(grants);
}
