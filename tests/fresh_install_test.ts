/**
 * What a newcomer sees at install: `deno install` from this deno.json and
 * deno.lock, in a directory without node_modules, prints no warning that looks
 * like a fault (#21: "Ignored build scripts for packages: npm:zeromq").
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("deno install in a fresh directory prints no 'Ignored build scripts' warning", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plantd-fresh-" });
  try {
    for (const file of ["deno.json", "deno.lock"]) {
      await Deno.copyFile(ROOT + file, `${dir}/${file}`);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["install"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.doesNotMatch(text, /Ignored build scripts|Warning/i, text);
    // zeromq's addon loads from the package's prebuilt binaries without its install script.
    const probe = await new Deno.Command(Deno.execPath(), {
      args: ["eval", 'const z = await import("zeromq"); console.log(typeof z.Dealer)'],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(probe.stdout).trim(),
      "function",
      new TextDecoder().decode(probe.stderr),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
