/**
 * Named profiles of `plant`: where each plant is (gateway or broker), its
 * default state scope and timeout, and the login kept for it. One file,
 * `$XDG_CONFIG_HOME/plant/profiles.json` (`~/.config/plant/profiles.json`
 * without XDG_CONFIG_HOME), created with mode 0600 in a 0700 folder; a file
 * that others can read is refused, as ssh refuses such a key, since it holds
 * refresh tokens.
 *
 * Writes go to a temporary file renamed over the old one, under an OS lock
 * on a separate `profiles.lock` (never renamed, so every process locks the
 * same file): two `plant` processes refreshing one login at once would
 * otherwise present the same refresh token twice, which the gateway takes
 * for theft and answers by ending the login.
 *
 * @module
 */
import { z } from "zod";
import { type Dialect, DIALECTS } from "../mdp/protocol.ts";
import { CliError, EXIT, UsageError } from "./errors.ts";
import { checkEndpoint } from "./net.ts";

/** A login kept in a profile (the answer of /api/auth/login or /api/auth/refresh). */
export const Session = z.object({
  /** The gateway that issued it: the only one it is sent to. */
  gateway: z.string(),
  username: z.string(),
  access_token: z.string(),
  /** ms since the epoch */
  expires_at: z.number(),
  refresh_token: z.string(),
  refresh_expires_at: z.number(),
});
export type Session = z.infer<typeof Session>;

/** One plant. Every value is optional: flags and PLANTD_CLI_* override them. */
export const Profile = z.object({
  gateway: z.string().optional(),
  broker: z.string().optional(),
  dialect: z.enum(DIALECTS as [Dialect, ...Dialect[]]).optional(),
  scope: z.string().optional(),
  timeout: z.number().int().positive().optional(),
  /** An API key (`plant profile set token`), used instead of a login. */
  token: z.string().optional(),
  session: Session.optional(),
}).strict();
export type Profile = z.infer<typeof Profile>;

const ProfilesFile = z.object({
  /** The profile used when neither --profile nor PLANT_PROFILE names one. */
  current: z.string().optional(),
  profiles: z.record(z.string(), Profile),
}).strict();
export type ProfilesFile = z.infer<typeof ProfilesFile>;

/** What `plant profile set KEY VALUE` accepts, each checked before it is stored. */
export const PROFILE_KEYS: Record<string, (value: string) => Partial<Profile>> = {
  gateway: (value) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new UsageError(`gateway expects a URL such as http://127.0.0.1:8080, got '${value}'`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new UsageError(`gateway expects an http:// or https:// URL, got '${value}'`);
    }
    return { gateway: value };
  },
  broker: (value) => {
    for (const endpoint of value.split(",")) checkEndpoint(endpoint.trim(), "broker");
    return { broker: value };
  },
  dialect: (value) => {
    const parsed = Profile.shape.dialect.safeParse(value);
    if (!parsed.success) {
      throw new UsageError(`dialect expects one of ${DIALECTS.join(", ")}, got '${value}'`);
    }
    return { dialect: parsed.data };
  },
  scope: (value) => {
    if (value === "") throw new UsageError("scope expects a scope name");
    return { scope: value };
  },
  timeout: (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) {
      throw new UsageError(`timeout expects a positive whole number of ms, got '${value}'`);
    }
    return { timeout: n };
  },
  token: (value) => {
    if (value === "") throw new UsageError("token expects an API key");
    return { token: value };
  },
};

/** Names of profiles: letters, digits, '.', '_' and '-'. */
const PROFILE_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** Checks a profile name given on the command line or in PLANT_PROFILE. */
export function checkProfileName(name: string): string {
  if (!PROFILE_NAME.test(name)) {
    throw new UsageError(
      `bad profile name '${name}': 1 to 64 letters, digits, '.', '_' or '-'`,
    );
  }
  return name;
}

/** The profiles file of `env`: $XDG_CONFIG_HOME/plant/profiles.json, else ~/.config/…. */
export function profilesPath(env: Record<string, string | undefined>): string {
  const base = env.XDG_CONFIG_HOME || (env.HOME ? `${env.HOME}/.config` : undefined);
  if (!base) {
    throw new UsageError("neither XDG_CONFIG_HOME nor HOME is set: no place for plant's profiles");
  }
  return `${base.replace(/\/$/, "")}/plant/profiles.json`;
}

/** A profile file that cannot be used as it is: exit 1 with what to do. */
function fileError(message: string): CliError {
  return new CliError(message, "PROFILES", EXIT.FAILED);
}

/** Reads the profiles; an absent file is no profiles. */
export async function readProfiles(path: string): Promise<ProfilesFile> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { profiles: {} };
    throw fileError(`cannot read ${path}: ${(error as Error).message}`);
  }
  // Refresh tokens and API keys inside: readable by the owner only.
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    throw fileError(
      `${path} can be read by others (mode ${
        (info.mode & 0o777).toString(8)
      }) and holds credentials: chmod 600 ${path}, and run plant logout then plant login if others may have read it`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw fileError(`${path} is not valid JSON (${(error as Error).message}): fix or remove it`);
  }
  const parsed = ProfilesFile.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw fileError(
      `${path}: ${issue.path.join(".") || "(top)"}: ${issue.message}: fix or remove it`,
    );
  }
  return parsed.data;
}

/** Writes the profiles (0600, folder 0700) through a temporary file and a rename. */
export async function writeProfiles(path: string, data: ProfilesFile): Promise<void> {
  const folder = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
  const temporary = `${path}.${Deno.pid}.tmp`;
  try {
    await Deno.writeTextFile(temporary, JSON.stringify(data, null, 2) + "\n", { mode: 0o600 });
    // The mode of a new file goes through the umask; make sure of it.
    await Deno.chmod(temporary, 0o600);
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw fileError(`cannot write ${path}: ${(error as Error).message}`);
  }
}

/**
 * Runs `change` on the profiles under the lock and writes what it returns
 * (nothing written when it returns undefined); resolves with `change`'s result.
 */
export async function updateProfiles<T>(
  path: string,
  change: (data: ProfilesFile) => Promise<{ data?: ProfilesFile; result: T }>,
): Promise<T> {
  const folder = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
  const lock = await Deno.open(`${folder}/profiles.lock`, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  try {
    await lock.lock(true);
    const { data, result } = await change(await readProfiles(path));
    if (data) await writeProfiles(path, data);
    return result;
  } finally {
    lock.close();
  }
}

/** "profiles: a, b" or "no profiles yet", for error messages. */
export function profileChoices(data: ProfilesFile): string {
  const names = Object.keys(data.profiles).sort();
  return names.length
    ? `profiles: ${names.join(", ")}`
    : "no profiles yet: plant login creates one";
}

/** The profile a command uses: named by flag or PLANT_PROFILE, else the file's current one. */
export interface Selected {
  /** The profile's name (the default name "default" when the file has none). */
  name: string;
  /** Its values; empty when it does not exist yet. */
  profile: Profile;
  /** Whether it is in the file. */
  exists: boolean;
  path: string;
}

/** The name of the profile used when none is named or current. */
export const DEFAULT_PROFILE = "default";

/**
 * Selects the profile: `named` (from --profile or PLANT_PROFILE) must exist
 * unless `mayCreate`; otherwise the file's current profile, or "default".
 */
export async function selectProfile(
  path: string,
  named: string | undefined,
  mayCreate: boolean,
): Promise<Selected> {
  const data = await readProfiles(path);
  if (named !== undefined) {
    checkProfileName(named);
    const profile = data.profiles[named];
    if (!profile && !mayCreate) {
      throw new UsageError(`unknown profile '${named}' (${profileChoices(data)})`);
    }
    return { name: named, profile: profile ?? {}, exists: profile !== undefined, path };
  }
  const name = data.current ?? DEFAULT_PROFILE;
  const profile = data.profiles[name];
  return { name, profile: profile ?? {}, exists: profile !== undefined, path };
}

/** What the profile commands (cli/profile_commands.ts) get from the command line. */
export interface AccountContext {
  /** The profiles file. */
  path: string;
  /** The profile the command acts on (--profile, PLANT_PROFILE, the current one). */
  selected: Selected;
  /** The gateway: --gateway, PLANTD_CLI_GATEWAY, the profile's, or the default. */
  gateway: string;
  /** `login --username`. */
  username?: string;
  /** `login --password-stdin`. */
  passwordStdin: boolean;
}
