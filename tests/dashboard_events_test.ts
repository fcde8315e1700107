/**
 * The event history and audit panels in real headless Chromium against the
 * whole system with authentication on and the real metrics ingester recording
 * bus `event` into a libSQL file: stored events are listed, a new one arrives
 * live, the severity filter narrows the list; an admin sees the audit log
 * (its own login), a viewer sees the history but no audit panel. The page is
 * saved as docs/events.png.
 */
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import type { Page } from "playwright-core";
import { ARTIFACTS, launchChromium } from "./_browser.ts";
import { Publisher } from "../bus/publisher.ts";
import { metricsConfig } from "../config/components.ts";
import { loadConfig } from "../config/load.ts";
import { startMetrics } from "../roles/metrics.ts";
import { bearer, call, tokenWith, withSecuredSystem } from "./_auth.ts";
import { waitFor } from "./_helpers.ts";

const alarm = (device: string, severity: string, secondsAgo: number, message: string) =>
  JSON.stringify({
    kind: "alarm",
    state: "raised",
    severity,
    device,
    channel: "temp",
    rule: "hi",
    value: 91.5,
    time: new Date(Date.now() - secondsAgo * 1000).toISOString(),
    message,
  });

async function logIn(page: Page, url: string, username: string, password: string) {
  await page.goto(url + "/");
  await page.waitForSelector("#login-panel:not([hidden])", { timeout: 30_000 });
  await page.fill("#login-username", username);
  await page.fill("#login-password", password);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])", { timeout: 30_000 });
}

Deno.test("event history lists, streams and filters events; the audit log is for admins only", async () => {
  const dir = await Deno.makeTempDir();
  const db = `${dir}/metrics.db`;
  await withSecuredSystem(async (system) => {
    const registry = new Registry();
    const metrics = startMetrics({
      ...loadConfig(metricsConfig, { args: [], env: {} }),
      db,
      bus_endpoint: system.backends.metric!,
      event_buses: { event: system.backends.event! },
      health_port: 0,
      log_level: "error",
      flush_interval_ms: 20,
    }, registry);
    const publisher = new Publisher(system.frontends.event!, {
      form: "frames",
      sendHighWaterMark: 0,
    });
    const admin = { ...bearer(await tokenWith(["*"])) };
    const browser = await launchChromium();
    try {
      for (const [username, roles] of [["boss", ["admin"]], ["watcher", ["viewer"]]]) {
        const created = await call(system.url, "POST", "/api/auth/users", {
          username,
          password: `${username} password`,
          roles,
        }, admin);
        assert.equal(created.status, 201, JSON.stringify(created.body));
      }
      // Stored before the page opens: these come from GET /api/events.
      const recorded = async () => {
        const reply = await call(
          system.url,
          "GET",
          "/api/events?topic_prefix=alarm.",
          undefined,
          admin,
        );
        return reply.status === 200 ? reply.body.events.length : 0;
      };
      let probe = 0;
      await waitFor(async () => {
        publisher.publish("probe", String(probe++));
        return (await call(system.url, "GET", "/api/events?topic_prefix=probe", undefined, admin))
          .status === 200;
      }, { timeoutMs: 30_000, intervalMs: 100, what: "the recorder storing events" });
      publisher.publish("alarm.boiler.temp", alarm("boiler", "warning", 120, "boiler warm"));
      publisher.publish("alarm.boiler.temp", alarm("boiler", "critical", 60, "boiler too hot"));
      publisher.publish("alarm.pump.flow", alarm("pump", "info", 30, "pump flow low"));
      await waitFor(async () => await recorded() === 3, {
        timeoutMs: 30_000,
        what: "three alarms stored",
      });

      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await logIn(page, system.url, "boss", "boss password");
      const rows = page.locator("#events tr");
      // Newest first; the probes (no device) aside.
      const devices = () =>
        rows.evaluateAll((trs) =>
          trs.map((tr) => tr.getAttribute("data-device")).filter((d) => d !== "")
        );
      await waitFor(
        async () => await page.locator('#events tr[data-device="boiler"]').count() === 2,
        {
          timeoutMs: 30_000,
          intervalMs: 50,
          what: "the stored alarms in the history",
        },
      );
      assert.deepEqual(await devices(), ["pump", "boiler", "boiler"]);
      assert.match(
        await page.locator('#events tr[data-device="boiler"]').first().textContent() ?? "",
        /critical.*boiler.*alarm\.boiler\.temp.*raised: boiler too hot/,
      );

      // Live: a new alarm is added at the top.
      await page.waitForSelector('#ws-status[data-status="open"]', { timeout: 30_000 });
      await waitFor(async () => {
        publisher.publish("alarm.mixer.speed", alarm("mixer", "critical", 0, "mixer stalled"));
        return await page.locator('#events tr[data-device="mixer"]').count() > 0;
      }, { timeoutMs: 30_000, intervalMs: 200, what: "a live alarm in the history" });
      assert.equal((await devices())[0], "mixer");
      assert.match(await rows.first().textContent() ?? "", /mixer stalled/);

      // Filter: critical only.
      await page.selectOption("#events-severity", "critical");
      await page.click("#events-form button[type=submit]");
      await waitFor(async () => {
        const severities = await page.locator("#events tr").evaluateAll((trs) =>
          trs.map((tr) => tr.getAttribute("data-severity"))
        );
        return severities.length > 0 && severities.every((s) => s === "critical") &&
          severities.length >= 2;
      }, { timeoutMs: 30_000, intervalMs: 50, what: "only critical events listed" });
      assert.equal(await page.locator('#events tr[data-device="pump"]').count(), 0);

      // The admin's audit panel lists its own login.
      await page.waitForSelector("#audit-panel:not([hidden])", { timeout: 30_000 });
      await page.waitForSelector('#audit-events tr[data-action="auth.login"]', { timeout: 30_000 });
      assert.match(
        await page.locator('#audit-events tr[data-action="auth.login"]').first().textContent() ??
          "",
        /user:boss/,
      );
      await page.locator("#events-panel").scrollIntoViewIfNeeded();
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: `${ARTIFACTS}events.png`, fullPage: true });

      // A viewer: history yes, audit no.
      const viewer = await browser.newPage();
      viewer.on("pageerror", (error) => errors.push(String(error)));
      await logIn(viewer, system.url, "watcher", "watcher password");
      await viewer.waitForSelector('#events tr[data-device="boiler"]', { timeout: 30_000 });
      assert.equal(await viewer.locator("#audit-panel").isVisible(), false);
      assert.equal(await viewer.locator("#audit-events tr").count(), 0);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await publisher.close();
      await metrics.close();
    }
  }, { gateway: { metrics_db: db } });
  await Deno.remove(dir, { recursive: true });
});
