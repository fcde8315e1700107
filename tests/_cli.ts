/**
 * The `plant` CLI run as a user runs it: a subprocess from the repository,
 * without PLANTD_CLI_* settings from the test's own environment, bounded by a
 * kill after 30 s.
 *
 * @module
 */
const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

/** What one run of `plant` gave. */
export interface PlantRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `plant args…`: its exit code and output. */
export async function plant(args: string[]): Promise<PlantRun> {
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("PLANTD_CLI_")),
  );
  const abort = new AbortController();
  const guard = setTimeout(() => abort.abort(), 30_000);
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, ...args],
      cwd: ROOT,
      env: { ...env, NO_COLOR: "1" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(guard);
  }
}
