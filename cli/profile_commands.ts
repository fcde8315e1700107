/**
 * `plant login`, `plant logout` and `plant profile …`: named profiles of
 * plants and the logins kept in them (cli/profiles.ts, cli/login.ts).
 *
 * @module
 */
import type { Command, Context } from "./commands.ts";
import { apiFailure, CliError, EXIT, UsageError } from "./errors.ts";
import { credentials, login, revoke } from "./login.ts";
import { isoTime } from "./output.ts";
import {
  checkProfileName,
  type Profile,
  PROFILE_KEYS,
  profileChoices,
  type ProfilesFile,
  readProfiles,
  type Session,
  updateProfiles,
} from "./profiles.ts";

function withProfile(data: ProfilesFile, name: string, profile: Profile): ProfilesFile {
  return { ...data, profiles: { ...data.profiles, [name]: profile } };
}

/** Ends `session` on its gateway; resolves with why it could not, if it could not. */
async function tryRevoke(session: Session, timeoutMs: number): Promise<string | undefined> {
  try {
    await revoke(session, timeoutMs);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** "ada at http://…, until …" or "-" */
function loginText(profile: Profile): string {
  if (profile.token) return "API key";
  const s = profile.session;
  if (!s) return "-";
  return `${s.username} at ${s.gateway} (${
    s.refresh_expires_at > Date.now() ? `until ${isoTime(s.refresh_expires_at)}` : "expired"
  })`;
}

/** Profile values without secrets, for `profile ls --json`. */
function shown(profile: Profile): Record<string, unknown> {
  const { token, session, ...rest } = profile;
  return {
    ...rest,
    ...(token ? { token: "(set)" } : {}),
    ...(session
      ? {
        login: {
          gateway: session.gateway,
          username: session.username,
          refresh_expires_at: session.refresh_expires_at,
        },
      }
      : {}),
  };
}

const profile = (
  name: string,
  args: string[],
  summary: string,
  run: Command["run"],
): Command => ({ words: ["profile", name], args, options: [], summary, run });

export const PROFILE_COMMANDS: Command[] = [
  {
    words: ["login"],
    args: [],
    options: ["username", "password-stdin"],
    summary: "log in to the gateway and keep the login in the profile (see plant profile ls)",
    async run({ out, account, timeoutMs }: Context) {
      const { path, selected } = account;
      const { username, password } = await credentials(account.username, account.passwordStdin);
      const session = await login(account.gateway, username, password, timeoutMs);
      const replaced = await updateProfiles(path, (data) => {
        const old = data.profiles[selected.name] ?? {};
        // A profile reaches its plant one way: the gateway it logged in to.
        const { broker: _, ...kept } = old;
        return Promise.resolve({
          data: {
            ...withProfile(data, selected.name, { ...kept, gateway: session.gateway, session }),
            current: data.current ?? selected.name,
          },
          result: old.session,
        });
      });
      // The login this one replaces would otherwise stay valid on its gateway.
      if (replaced) await tryRevoke(replaced, timeoutMs);
      out.data({
        profile: selected.name,
        gateway: session.gateway,
        username,
        expires_at: session.expires_at,
        refresh_expires_at: session.refresh_expires_at,
        path,
      });
      out.line(
        `logged in to ${session.gateway} as ${username} (profile '${selected.name}' in ${path})`,
      );
    },
  },
  {
    words: ["logout"],
    args: [],
    options: [],
    summary: "end the profile's login on the gateway and forget it",
    async run({ out, account, timeoutMs }: Context) {
      const { path, selected } = account;
      const session = selected.profile.session;
      if (!session) {
        out.data({ profile: selected.name, status: "not logged in" });
        return out.line(`profile '${selected.name}' is not logged in`);
      }
      // Revoked first: a login the gateway could not be told about stays, to try again.
      const failed = await tryRevoke(session, timeoutMs);
      if (failed !== undefined) {
        throw apiFailure(
          "UNREACHABLE",
          `the login was not ended on ${session.gateway} (${failed}); it is kept: try again, or forget it here only with plant profile rm ${selected.name}`,
        );
      }
      await updateProfiles(path, (data) => {
        const current = data.profiles[selected.name];
        if (!current) return Promise.resolve({ result: undefined });
        const { session: _, ...rest } = current;
        return Promise.resolve({ data: withProfile(data, selected.name, rest), result: undefined });
      });
      out.data({ profile: selected.name, gateway: session.gateway, status: "logged out" });
      out.line(`logged out of ${session.gateway} (profile '${selected.name}')`);
    },
  },
  profile("ls", [], "list the profiles (* marks the one in use)", async ({ out, account }) => {
    const data = await readProfiles(account.path);
    const names = Object.keys(data.profiles).sort();
    out.data({
      path: account.path,
      current: account.selected.name,
      profiles: Object.fromEntries(names.map((n) => [n, shown(data.profiles[n]!)])),
    });
    if (names.length === 0) {
      return out.line(
        `no profiles in ${account.path}: plant login or plant profile set creates one`,
      );
    }
    out.table(
      ["", "PROFILE", "PLANT", "SCOPE", "LOGIN"],
      names.map((n) => {
        const p = data.profiles[n]!;
        return [
          n === account.selected.name ? "*" : "",
          n,
          p.broker ? `broker ${p.broker}` : p.gateway ?? "(default gateway)",
          p.scope ?? "-",
          loginText(p),
        ];
      }),
    );
  }),
  profile(
    "use",
    ["NAME"],
    "make NAME the profile used by default",
    async ({ out, account, positionals }) => {
      const name = checkProfileName(positionals[0]!);
      await updateProfiles(account.path, (data) => {
        if (!data.profiles[name]) {
          throw new UsageError(`unknown profile '${name}' (${profileChoices(data)})`);
        }
        return Promise.resolve({ data: { ...data, current: name }, result: undefined });
      });
      out.data({ current: name });
      out.line(`using profile '${name}'`);
    },
  ),
  profile(
    "set",
    ["KEY", "VALUE"],
    `set a value of the profile (creating it); keys: ${Object.keys(PROFILE_KEYS).join(", ")}`,
    async ({ out, account, positionals }) => {
      const [key, value] = positionals as [string, string];
      const check = PROFILE_KEYS[key];
      if (!check) {
        throw new UsageError(
          `unknown profile key '${key}' (keys: ${Object.keys(PROFILE_KEYS).join(", ")})`,
        );
      }
      const change = check(value);
      const name = account.selected.name;
      await updateProfiles(account.path, (data) => {
        const old = { ...data.profiles[name] };
        // One way to the plant: a gateway replaces a broker and the other way round.
        if ("gateway" in change) delete old.broker;
        if ("broker" in change) delete old.gateway;
        return Promise.resolve({
          data: {
            ...withProfile(data, name, { ...old, ...change }),
            current: data.current ?? name,
          },
          result: undefined,
        });
      });
      out.data({ profile: name, key, value: key === "token" ? "(set)" : value });
      out.line(`profile '${name}': ${key} = ${key === "token" ? "(set)" : value}`);
    },
  ),
  profile(
    "unset",
    ["KEY"],
    "remove a value of the profile",
    async ({ out, account, positionals }) => {
      const key = positionals[0]!;
      if (!(key in PROFILE_KEYS)) {
        throw new UsageError(
          `unknown profile key '${key}' (keys: ${Object.keys(PROFILE_KEYS).join(", ")})`,
        );
      }
      const name = account.selected.name;
      await updateProfiles(account.path, (data) => {
        const old = data.profiles[name];
        if (!old) throw new UsageError(`unknown profile '${name}' (${profileChoices(data)})`);
        const rest = { ...old };
        delete rest[key as keyof Profile];
        return Promise.resolve({ data: withProfile(data, name, rest), result: undefined });
      });
      out.data({ profile: name, key, status: "unset" });
      out.line(`profile '${name}': ${key} unset`);
    },
  ),
  profile(
    "rm",
    ["NAME"],
    "remove a profile, ending its login on the gateway first",
    async ({ out, account, positionals, timeoutMs }) => {
      const name = checkProfileName(positionals[0]!);
      const removed = await updateProfiles(account.path, (data) => {
        const old = data.profiles[name];
        if (!old) throw new UsageError(`unknown profile '${name}' (${profileChoices(data)})`);
        const { [name]: _, ...profiles } = data.profiles;
        const { current, ...rest } = data;
        return Promise.resolve({
          data: { ...rest, ...(current && current !== name ? { current } : {}), profiles },
          result: old,
        });
      });
      const failed = removed.session ? await tryRevoke(removed.session, timeoutMs) : undefined;
      out.data({ profile: name, status: "removed", ...(failed ? { logout_failed: failed } : {}) });
      out.line(`removed profile '${name}'`);
      if (failed !== undefined) {
        throw new CliError(
          `its login could not be ended on ${
            removed.session!.gateway
          } (${failed}): it stays valid there until ${
            isoTime(removed.session!.refresh_expires_at)
          } unless an admin ends it`,
          "LOGOUT_FAILED",
          EXIT.FAILED,
        );
      }
    },
  ),
];
