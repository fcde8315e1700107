/**
 * Logging `plant` in to a gateway and keeping the login fresh.
 *
 * `plant login` trades a username and password for the gateway's tokens
 * (/api/auth/login) and keeps the refresh token, the access token and its
 * expiry in the profile (cli/profiles.ts); the password is never stored.
 * Before a request, an access token close to its expiry is traded for new
 * tokens (/api/auth/refresh, which rotates the refresh token). A refresh
 * token rather than a long-lived API key, so that a stolen profiles file is
 * revocable: `plant logout` ends the login on the gateway, and if a thief
 * refreshes with the copy, the owner's next refresh presents a rotated token,
 * which the gateway takes for theft and answers by ending the whole login.
 *
 * A login is only ever sent to the gateway that issued it: a profile whose
 * gateway is overridden by --gateway or PLANTD_CLI_GATEWAY sends no token.
 *
 * @module
 */
import { z } from "zod";
import { CliError, EXIT, UsageError } from "./errors.ts";
import { GatewayBackend } from "./gateway_backend.ts";
import {
  type ProfilesFile,
  Session,
  type Session as SessionT,
  updateProfiles,
  writeProfiles,
} from "./profiles.ts";

/** A login is refreshed when less than this is left of its access token. */
const REFRESH_MARGIN_MS = 30_000;

const TokenReply = z.object({
  access_token: z.string().min(1),
  expires_at: z.number(),
  refresh_token: z.string().min(1),
  refresh_expires_at: z.number(),
});

function sessionOf(reply: unknown, username: string, gateway: string): SessionT {
  const parsed = TokenReply.safeParse(reply);
  if (!parsed.success) {
    throw new CliError(`unexpected answer from ${gateway}: no tokens in it`, "UNEXPECTED");
  }
  return Session.parse({ gateway, username, ...parsed.data });
}

/** Logs in at `gateway`; resolves with the session to keep. */
export async function login(
  gateway: string,
  username: string,
  password: string,
  timeoutMs: number,
): Promise<SessionT> {
  const backend = new GatewayBackend(gateway, timeoutMs);
  const reply = await backend.postJson("/api/auth/login", { username, password });
  return sessionOf(reply, username, backend.target);
}

/**
 * Ends a login on its gateway. The refresh token alone names the login (its
 * family, which is also the session id of its access tokens), so the gateway
 * voids the access tokens too; no bearer is sent, since a revoked one would
 * be refused before the logout.
 */
export async function revoke(session: SessionT, timeoutMs: number): Promise<void> {
  await new GatewayBackend(session.gateway, timeoutMs)
    .postJson("/api/auth/logout", { refresh_token: session.refresh_token });
}

/** The gateway URL as GatewayBackend spells it, to compare with a login's gateway. */
export function gatewayTarget(url: string): string {
  return new GatewayBackend(url, 1).target;
}

/** A login that can no longer be used: exit 1, saying how to log in again. */
function loginEnded(profile: string, why: string): CliError {
  return new CliError(
    `the login of profile '${profile}' ${why}: plant login --profile ${profile}`,
    "UNAUTHENTICATED",
    EXIT.FAILED,
  );
}

/**
 * The access token of profile `name`'s login, refreshed first when it is
 * about to expire or is still `stale` (under the profiles lock, re-reading
 * the file so that a refresh made meanwhile by another `plant` is used, not
 * repeated).
 */
export async function freshAccessToken(
  path: string,
  name: string,
  timeoutMs: number,
  stale?: string,
): Promise<string> {
  return await updateProfiles(path, async (data: ProfilesFile) => {
    const profile = data.profiles[name];
    const session = profile?.session;
    if (!profile || !session) throw loginEnded(name, "is gone (logged out meanwhile)");
    const now = Date.now();
    if (session.expires_at - now > REFRESH_MARGIN_MS && session.access_token !== stale) {
      return { result: session.access_token };
    }
    const dropSession = (): ProfilesFile => {
      const { session: _, ...rest } = profile;
      return { ...data, profiles: { ...data.profiles, [name]: rest } };
    };
    if (session.refresh_expires_at <= now) {
      // Inside the lock already: written here, since the throw skips the update's write.
      await writeProfiles(path, dropSession());
      throw loginEnded(name, "expired");
    }
    let reply: unknown;
    try {
      reply = await new GatewayBackend(session.gateway, timeoutMs)
        .postJson("/api/auth/refresh", { refresh_token: session.refresh_token });
    } catch (error) {
      if (error instanceof CliError && error.code === "UNAUTHENTICATED") {
        await writeProfiles(path, dropSession());
        throw loginEnded(name, "was ended on the gateway (logged out, revoked or expired)");
      }
      throw error;
    }
    const renewed = sessionOf(reply, session.username, session.gateway);
    return {
      data: { ...data, profiles: { ...data.profiles, [name]: { ...profile, session: renewed } } },
      result: renewed.access_token,
    };
  });
}

const encoder = new TextEncoder();

/** Reads one line (without its end) from stdin; undefined at end of input. */
async function readLine(): Promise<string | undefined> {
  const bytes: number[] = [];
  const buffer = new Uint8Array(1);
  // A byte at a time: whatever follows the line stays for the next read.
  while (true) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) break;
    if (buffer[0] === 0x0a) return new TextDecoder().decode(new Uint8Array(bytes));
    bytes.push(buffer[0]!);
  }
  return bytes.length ? new TextDecoder().decode(new Uint8Array(bytes)) : undefined;
}

/** Asks on the terminal (stderr), echoing what is typed. */
async function ask(question: string): Promise<string> {
  Deno.stderr.writeSync(encoder.encode(question));
  const answer = await readLine();
  if (answer === undefined) throw new UsageError("no answer: the input ended");
  return answer.replace(/\r$/, "");
}

/** Asks for a secret on the terminal without echoing it. */
async function askSecret(question: string): Promise<string> {
  const bytes: number[] = [];
  const buffer = new Uint8Array(1);
  // cbreak: no echo, but Ctrl-C still interrupts. Echo goes off before the prompt shows,
  // so a password typed as soon as it appears is not echoed either.
  Deno.stdin.setRaw(true, { cbreak: true });
  try {
    Deno.stderr.writeSync(encoder.encode(question));
    while (true) {
      const n = await Deno.stdin.read(buffer);
      const byte = n === null ? 0x04 : buffer[0]!;
      if (byte === 0x0d || byte === 0x0a) break;
      if (byte === 0x04) {
        if (bytes.length === 0) throw new UsageError("no password: the input ended");
        break;
      }
      if (byte === 0x7f || byte === 0x08) bytes.pop();
      else bytes.push(byte);
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(encoder.encode("\n"));
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/**
 * The username and password of `plant login`: the username from --username
 * or a prompt, the password from the first line of stdin with
 * --password-stdin, else from a prompt that does not echo. Never from the
 * command line, where other users' `ps` would see it.
 */
export async function credentials(
  username: string | undefined,
  passwordStdin: boolean,
): Promise<{ username: string; password: string }> {
  const terminal = Deno.stdin.isTerminal();
  if (passwordStdin) {
    if (username === undefined) {
      throw new UsageError("--password-stdin needs --username (stdin holds the password)");
    }
    const password = (await readLine())?.replace(/\r$/, "");
    if (!password) throw new UsageError("--password-stdin: stdin gave no password");
    return { username, password };
  }
  if (!terminal) {
    throw new UsageError(
      "no terminal to ask the password on: give --username NAME and the password on stdin with --password-stdin",
    );
  }
  const name = username ?? await ask("username: ");
  if (name === "") throw new UsageError("no username given");
  const password = await askSecret("password: ");
  if (password === "") throw new UsageError("no password given");
  return { username: name, password };
}
