/**
 * Running the real `plant` in a subprocess for tests (cli/cli_test.ts,
 * cli/profiles_test.ts): its exit code, stdout and stderr, a streaming
 * `plant sub`, and the usual assertions on them. Every child gets an empty
 * XDG_CONFIG_HOME of its own test process unless the test gives one, so no
 * test reads the profiles of whoever runs it.
 */
import assert from "node:assert/strict";
import { waitFor } from "../tests/_helpers.ts";

export const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = new URL("./main.ts", import.meta.url).pathname;

/** An empty config folder for this test process: no child sees the user's profiles. */
const CONFIG_HOME = Deno.makeTempDirSync({ prefix: "plant-config-" });

/**
 * The child's environment: the parent's, without PLANTD_CLI_* and
 * PLANT_PROFILE (tests set their own), with XDG_CONFIG_HOME in an empty folder.
 */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) =>
      !name.startsWith("PLANTD_CLI_") && name !== "PLANT_PROFILE"
    ),
  );
  return { ...env, NO_COLOR: "1", XDG_CONFIG_HOME: CONFIG_HOME, ...extra };
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The `plant` command line with `args`, in a clean environment plus `env`. */
export function plantCommand(
  args: string[],
  env: Record<string, string>,
  stdin: "null" | "piped" = "null",
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: ROOT,
    env: childEnv(env),
    clearEnv: true,
    stdin,
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `plant args…` with `input` on its stdin, to completion. */
export async function runWithInput(
  args: string[],
  env: Record<string, string>,
  input: string,
): Promise<Result> {
  const child = plantCommand(args, env, "piped").spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs `plant args…` to completion. */
export async function run(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const output = await plantCommand(args, env).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Asserts a failure: exit code, one line on stderr matching `message`, nothing on stdout. */
export const plant = run;

export function assertFails(result: Result, code: number, message: RegExp): void {
  assert.equal(result.code, code, `exit code; stderr: ${result.stderr}`);
  assert.match(result.stderr, message);
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, `one line: ${result.stderr}`);
  assert.match(result.stderr, /^plant: /);
}

export function assertOk(result: Result): void {
  assert.equal(result.code, 0, `exit code; stderr: ${result.stderr}`);
}

/** Parses the one JSON document of stdout. */
// deno-lint-ignore no-explicit-any
export function json(result: Result): any {
  assertOk(result);
  return JSON.parse(result.stdout);
}

/** A streaming `plant sub` child whose stdout and stderr are collected as they come. */
export class Streaming {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  #done: Promise<void>;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = plantCommand(args, env).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this[into] += chunk;
    };
    this.#done = Promise.all([
      collect(this.child.stdout, "stdout"),
      collect(this.child.stderr, "stderr"),
    ]).then(() => {});
  }

  async subscribed(): Promise<void> {
    await waitFor(() => /subscribed to bus/.test(this.stderr), {
      timeoutMs: 10_000,
      what: `'subscribed' from plant sub (stderr: ${this.stderr})`,
    });
  }

  async result(): Promise<Result> {
    const { code } = await this.child.status;
    await this.#done;
    return { code, stdout: this.stdout, stderr: this.stderr };
  }
}
