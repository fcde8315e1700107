/**
 * The dashboard's dead-letter panel in real headless Chromium: a dead letter
 * shows up as it arrives (the WebSocket event refreshes the list), and its
 * replay button routes it again.
 */
import assert from "node:assert/strict";
import { launchChromium } from "./_browser.ts";
import { MdpClient } from "../mdp/client.ts";
import { MdpBrokerError, MdpTimeoutError } from "../mdp/errors.ts";
import { MdpWorker } from "../mdp/worker.ts";
import { brokerOp } from "./_durable.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem } from "./_system.ts";

Deno.test("dashboard lists a dead letter as it arrives, and its replay button routes it again", async () => {
  const dir = await Deno.makeTempDir();
  const system = await startSystem({
    broker: { durable_services: ["plant.*"], journal: `${dir}/journal.db` },
    gateway: { request_timeout_ms: 15_000 },
  });
  const browser = await launchChromium();
  const client = new MdpClient(system.brokerEndpoint, { timeoutMs: 10_000 });
  let worker: MdpWorker | undefined;
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(system.url + "/");
    await page.waitForSelector('#ws-status[data-status="open"]', { timeout: 30_000 });
    await waitFor(
      async () => (await page.locator("#dlq-note").textContent()) === "no dead letters",
      {
        timeoutMs: 30_000,
        what: "the empty dead-letter panel",
      },
    );
    // The caller's deadline passes with no worker: its own timeout, or the broker's notice that
    // the request expired into the dead-letter queue, whichever comes first.
    await assert.rejects(
      client.request("plant.valve", ["open"], { durable: true, timeoutMs: 300 }),
      (error: Error) =>
        error instanceof MdpTimeoutError ||
        (error instanceof MdpBrokerError && error.code === "DEAD_LETTERED"),
    );
    const row = page.locator("#dead-letters tr");
    await row.first().waitFor({ timeout: 30_000 });
    const id = await row.first().getAttribute("data-id");
    assert.match(id ?? "", /^[0-9a-f]{32}$/);
    assert.equal(await row.first().locator("td").nth(2).textContent(), "expired");

    worker = new MdpWorker(system.brokerEndpoint, "plant.valve", () => ["opened"]);
    // The replay keeps the request's 300 ms deadline: on a loaded machine a
    // worker still connecting lets it expire again, so the worker is there first.
    await waitFor(
      async () => {
        const [code] = await client.request("mmi.service", ["plant.valve"]);
        return new TextDecoder().decode(code) === "200";
      },
      { timeoutMs: 30_000, what: "the plant.valve worker registered" },
    );
    await page.click(`#dead-letters tr[data-id="${id}"] button[data-action="replay"]`);
    await waitFor(async () => (await row.count()) === 0, {
      timeoutMs: 30_000,
      what: "the replayed dead letter gone from the panel",
    });
    await waitFor(
      async () => (await brokerOp(client, "durable-status", { id })).state === "replied",
      {
        what: "the replayed request answered",
      },
    );
    assert.deepEqual(errors, []);
  } finally {
    await worker?.close();
    await client.close();
    await browser.close();
    await system.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
