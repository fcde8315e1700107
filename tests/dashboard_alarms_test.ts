/**
 * The alarms panel in real headless Chromium against the whole system and
 * the alarms component: a rule set in the page's editor, a crossing value
 * published on the metric bus, the alarm raised in the list (live, from the
 * event bus), acknowledged with its button, cleared when the value falls
 * back. The panel's screenshot is saved to test-artifacts/alarms.png
 * (docs/alarms.png is a copy).
 */
import assert from "node:assert/strict";
import { ARTIFACTS, launchChromium } from "./_browser.ts";
import { Publisher } from "../bus/publisher.ts";
import { startAlarms } from "../roles/alarms.ts";
import { alarmsSettings } from "./_alarms.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem } from "./_system.ts";

Deno.test("dashboard alarms: set a rule, see the alarm raised, acknowledge it, see it cleared", async () => {
  // Chromium and other test files share 2 cores: a longer request timeout for the page.
  const system = await startSystem({ gateway: { request_timeout_ms: 15_000 } });
  const alarms = startAlarms(alarmsSettings(system, { rules_reload_ms: 500 }));
  const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
  const browser = await launchChromium();
  const point = (value: number) =>
    metrics.publish(
      "org.plantd.Metric",
      JSON.stringify({ time: new Date().toISOString(), device: "boiler", channel: "temp", value }),
    );
  try {
    // The panel asks /api/services whether an alarms worker is there: wait for it first.
    await waitFor(async () => {
      const { services } = await (await fetch(system.url + "/api/services")).json();
      return services.some((s: { name: string }) => s.name === "org.plantd.Alarms");
    }, { timeoutMs: 30_000, what: "the alarms worker registered" });
    await waitFor(() => alarms.service.ready, { timeoutMs: 30_000, what: "alarms loaded" });

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      const text = `${message.text()} ${message.location().url}`;
      // A 503/504 of a polled or re-read resource is the machine's load (other test files share
      // its two cores; the page reads again on the next event or poll): what this test is about
      // is checked on the page itself. Script errors and other failures still count.
      if (message.type() !== "error" || /status of 50[34] /.test(text)) return;
      errors.push(text);
    });
    await page.goto(system.url + "/");
    await page.waitForSelector('#alarm-rules[data-ready="true"]', {
      state: "attached",
      timeout: 30_000,
    });
    await page.waitForSelector('#ws-status[data-status="open"]', { timeout: 30_000 });

    // The rule, from the page's editor.
    await page.fill("#rule-id", "boiler-hot");
    await page.fill("#rule-device", "boiler");
    await page.fill("#rule-channel", "temp");
    await page.selectOption("#rule-kind", "above");
    await page.fill("#rule-threshold", "80");
    await page.fill("#rule-deadband", "5");
    await page.selectOption("#rule-severity", "critical");
    await page.click("#alarm-rule-form button[type=submit]");
    await page.waitForSelector('#alarm-rules tr[data-id="boiler-hot"]', { timeout: 30_000 });

    // A crossing value: the alarm appears, live, as active and critical.
    const active = '#alarms tr[data-state="active"][data-severity="critical"]';
    await waitFor(async () => {
      point(92.5);
      return (await page.locator(active).count()) > 0;
    }, { timeoutMs: 30_000, intervalMs: 200, what: "the raised alarm in the page" });
    assert.match(await page.locator(active).first().textContent() ?? "", /boiler\/temp/);

    // Acknowledge it with its button.
    await page.locator(`${active} button.ack`).click();
    const acked = '#alarms tr[data-state="acknowledged"]';
    await page.waitForSelector(acked, { timeout: 30_000 });
    assert.match(await page.locator(acked).first().textContent() ?? "", /anonymous/);

    // Back below the deadband: cleared, the acknowledgement kept.
    const cleared = '#alarms tr[data-state="cleared"]';
    await waitFor(async () => {
      point(70);
      return (await page.locator(cleared).count()) > 0;
    }, { timeoutMs: 30_000, intervalMs: 200, what: "the cleared alarm in the page" });
    assert.equal(await page.locator(active).count(), 0);
    assert.match(await page.locator(cleared).first().textContent() ?? "", /anonymous/);

    // A second rising edge for the picture: one active alarm above the cleared one.
    await waitFor(async () => {
      point(95);
      return (await page.locator(active).count()) > 0;
    }, { timeoutMs: 30_000, intervalMs: 200, what: "a second raised alarm" });

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.locator("#alarms-panel").screenshot({ path: `${ARTIFACTS}alarms.png` });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await metrics.close();
    await alarms.close();
    await system.stop();
  }
});
