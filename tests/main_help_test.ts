/**
 * `main.ts <component> --help` (and so `deno task <role> --help`) prints the
 * component's usage and exits 0, where it used to fail with "Unknown option".
 */
import assert from "node:assert/strict";
import {
  alarmsConfig,
  brokerConfig,
  busConfig,
  echoConfig,
  gatewayConfig,
  metricsConfig,
  stateConfig,
} from "../config/components.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("every task of deno.json that runs main.ts answers --help with its usage, exit 0", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<
    string,
    string
  >;
  const components = Object.values(tasks)
    .map((command) => /^deno run -A main\.ts ([a-z-]+)$/.exec(command)?.[1])
    .filter((c): c is string => c !== undefined);
  assert.ok(components.length >= 10, components.join(" "));
  for (const component of components) {
    for (const flag of ["--help", "-h"]) {
      const { code, stdout, stderr } = await run(component, flag);
      assert.equal(code, 0, `${component} ${flag}: ${stderr}`);
      assert.match(stdout, new RegExp(`usage: main\\.ts ${component}\\b`), component);
    }
  }
});

Deno.test("a component's --help lists every key of its schema as flag and environment variable", async () => {
  for (
    const config of [
      brokerConfig,
      busConfig,
      echoConfig,
      stateConfig,
      gatewayConfig,
      metricsConfig,
      alarmsConfig,
    ]
  ) {
    const { stdout } = await run(config.name, "--help");
    for (const key of Object.keys(config.schema.shape)) {
      assert.ok(stdout.includes(`--${key.replaceAll("_", "-")} `), `${config.name}: --${key}`);
      assert.ok(
        stdout.includes(`${config.envPrefix}_${key.toUpperCase()} `),
        `${config.name}: env of ${key}`,
      );
    }
    // Secrets are never printed, even a default.
    assert.doesNotMatch(stdout, /secret.*default "[^"]/i);
  }
});

Deno.test("every other task of deno.json that runs a script (benches, bench:report, fuzz:zmtp, cli) answers --help with its usage, exit 0, and runs nothing", async () => {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks as Record<
    string,
    string | { command: string }
  >;
  const scripts = Object.entries(tasks)
    .map(([name, task]) => {
      const command = typeof task === "string" ? task : task.command;
      return [name, /^deno run -A ((?!main\.ts)[\w/]+\.ts)$/.exec(command)?.[1]] as const;
    })
    .filter((entry): entry is readonly [string, string] => entry[1] !== undefined);
  assert.ok(scripts.length >= 14, scripts.map(([name]) => name).join(" "));
  const report = await Deno.readTextFile(`${ROOT}BENCHMARKS.md`);
  for (const [name, script] of scripts) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--help"],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const [stdout, stderr] = [dec.decode(out.stdout), dec.decode(out.stderr)];
    assert.equal(out.code, 0, `${name} --help: ${stderr}`);
    assert.match(stdout, /^usage: /, `${name} --help`);
  }
  assert.equal(
    await Deno.readTextFile(`${ROOT}BENCHMARKS.md`),
    report,
    "bench:report wrote nothing",
  );
});
