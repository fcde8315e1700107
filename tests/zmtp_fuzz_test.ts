/**
 * The ZMTP fuzzer (tests/_zmtp_fuzz.ts) with a fixed seed and a bounded
 * number of sessions, so it runs in CI in seconds; `deno task fuzz:zmtp`
 * runs it longer (ZMTP_FUZZ_SEED, ZMTP_FUZZ_RUNS).
 */
import { fuzzBroker, fuzzDealer } from "./_zmtp_fuzz.ts";
import { settleTransport } from "./_helpers.ts";

const SEED = 20261207;

Deno.test("fuzz: the broker's ZmtpRouter survives random sessions and keeps serving", async () => {
  await fuzzBroker({ seed: SEED, runs: 300 });
  await settleTransport();
});

Deno.test("fuzz: a ZmtpDealer survives random sessions from its ROUTER and reconnects", async () => {
  await fuzzDealer({ seed: SEED, runs: 300 });
});
