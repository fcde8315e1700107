/**
 * Every TypeScript file of the repository type-checks, benches and scripts
 * included: `deno test` checks only the modules the tests import, and CI runs
 * the tests, so a bench broken by a change elsewhere would otherwise go unseen.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("deno check passes on every .ts file (bench/ and tests/ included)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["check", "**/*.ts"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text.split("\n").filter((l) => /ERROR|error/.test(l)).join("\n"));
});
