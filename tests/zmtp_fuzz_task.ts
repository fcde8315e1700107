/**
 * `deno task fuzz:zmtp`: the ZMTP fuzzer (tests/_zmtp_fuzz.ts) for longer
 * than CI runs it. Environment:
 *   ZMTP_FUZZ_SEED   integer; default: a random one (printed first, to replay a failure)
 *   ZMTP_FUZZ_RUNS   sessions per target; default 20000
 *   ZMTP_FUZZ_TARGET broker | dealer | both; default both
 * A bad value exits 2 naming the variable; a property failure exits 1 with
 * fast-check's report (seed, path, shrunk session).
 */
import { z } from "zod";
import { wantsHelp } from "../config/load.ts";
import { fuzzBroker, fuzzDealer } from "./_zmtp_fuzz.ts";

const settings = {
  ZMTP_FUZZ_SEED: z.coerce.number().int().default(() => Math.floor(Math.random() * 2 ** 31)),
  ZMTP_FUZZ_RUNS: z.coerce.number().int().positive().default(20_000),
  ZMTP_FUZZ_TARGET: z.enum(["broker", "dealer", "both"]).default("both"),
};

function setting<T extends z.ZodType>(
  name: keyof typeof settings & string,
  schema: T,
): z.output<T> {
  const result = schema.safeParse(Deno.env.get(name));
  if (!result.success) {
    console.error(`${name}: ${result.error.issues.map((i) => i.message).join("; ")}`);
    Deno.exit(2);
  }
  return result.data;
}

if (wantsHelp(Deno.args)) {
  console.log(`usage: deno task fuzz:zmtp

The ZMTP fuzzer against the broker's and the DEALER's ZMTP engines.

environment:
  ZMTP_FUZZ_SEED    integer (default: a random one, printed first, to replay a failure)
  ZMTP_FUZZ_RUNS    sessions per target (20000)
  ZMTP_FUZZ_TARGET  broker, dealer or both (both)`);
  Deno.exit(0);
}

const seed = setting("ZMTP_FUZZ_SEED", settings.ZMTP_FUZZ_SEED);
const runs = setting("ZMTP_FUZZ_RUNS", settings.ZMTP_FUZZ_RUNS);
const target = setting("ZMTP_FUZZ_TARGET", settings.ZMTP_FUZZ_TARGET);
const log = (line: string) => console.log(line);
console.log(`ZMTP fuzz: seed ${seed}, ${runs} sessions per target, target ${target}`);
const started = Date.now();
try {
  if (target !== "dealer") await fuzzBroker({ seed, runs, log });
  if (target !== "broker") await fuzzDealer({ seed, runs, log });
} catch (error) {
  console.error((error as Error).message);
  // fast-check puts the property's own error in `cause`.
  if ((error as Error).cause) console.error("cause:", (error as Error).cause);
  console.error(`replay: ZMTP_FUZZ_SEED=${seed} ZMTP_FUZZ_RUNS=${runs} deno task fuzz:zmtp`);
  Deno.exit(1);
}
console.log(`ZMTP fuzz: no property failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
Deno.exit(0);
