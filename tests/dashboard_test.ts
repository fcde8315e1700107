/**
 * The dashboard in real headless Chromium (Debian's, driven by playwright-core)
 * against the whole system: services appear, a key edited in the page shows up
 * over REST and back through the state watch, a bus message arrives. A
 * screenshot is saved to test-artifacts/dashboard.png for reviewers.
 */
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { Publisher } from "../bus/publisher.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem } from "./_system.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = new URL("../test-artifacts/", import.meta.url).pathname;

function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

Deno.test("dashboard shows services, edits state live, and streams a bus topic", async () => {
  // Chromium and the other test files share 2 cores: the default 2 s request
  // timeout of the test system is too short for the page's writes under that load.
  const system = await startSystem({ gateway: { request_timeout_ms: 15_000 } });
  const browser = await launch();
  const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    // Failed loads (a missing favicon too) and CSP refusals show up as console errors;
    // the ones expected are /api/metrics and /api/events answering 503 (this system has no
    // metrics store).
    page.on("console", (message) => {
      const text = `${message.text()} ${message.location().url}`;
      if (message.type() !== "error" || /status of 503 .*\/api\/(metrics|events)\?/.test(text)) {
        return;
      }
      errors.push(text);
    });
    await page.goto(system.url + "/");

    // Services from /api/services.
    await page.waitForSelector('#services tr[data-service="org.plantd.State"]', {
      timeout: 30_000,
    });
    await page.waitForSelector('#health-summary[data-status="UP"]', { timeout: 30_000 });
    await page.waitForSelector('#ws-status[data-status="open"]', { timeout: 30_000 });

    // Edit a key in the page: it is written over REST and comes back through the watch.
    await page.fill("#entry-scope", "plant");
    await page.fill("#entry-key", "setpoint");
    await page.fill("#entry-value", "42");
    await page.click("#entry-form button[type=submit]");
    await page.waitForSelector('#entries tr[data-key="setpoint"]', { timeout: 30_000 });
    const rest = await (await fetch(system.url + "/api/state/plant/setpoint")).json();
    assert.equal(rest.value, "42");

    // A change made over REST by someone else appears live.
    const put = await fetch(system.url + "/api/state/plant/setpoint", {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "43",
    });
    assert.equal(put.status, 200, await put.text());
    await waitFor(
      async () =>
        (await page.locator('#entries tr[data-key="setpoint"] td.value').textContent()) === "43",
      { timeoutMs: 30_000, intervalMs: 50, what: "the REST change in the page" },
    );

    // Stream a bus topic.
    await page.selectOption("#bus-name", "event");
    await page.fill("#bus-prefix", "alarm");
    await page.click("#bus-form button[type=submit]");
    await waitFor(async () => {
      publisher.publish("alarm.boiler", '{"level":"high"}');
      return (await page.locator("#bus-messages li").count()) > 0;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "a bus message in the page" });
    assert.match(
      await page.locator("#bus-messages li").first().textContent() ?? "",
      /alarm\.boiler\{"level":"high"\}/,
    );

    // A metric chart: history comes from /api/metrics (no metrics store in this system, so
    // the page says so), live points from the metric bus are plotted as they arrive.
    const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
    try {
      await page.fill("#metric-device", "boiler");
      await page.fill("#metric-channel", "temperature");
      await page.click("#metrics-form button[type=submit]");
      await page.waitForSelector("#metric-chart .uplot", { timeout: 30_000 });
      let n = 0;
      await waitFor(async () => {
        metrics.publish(
          "org.plantd.Metric",
          JSON.stringify({
            time: new Date().toISOString(),
            device: "boiler",
            channel: "temperature",
            value: 60 + (n++ % 5),
          }),
        );
        const count = await page.locator("#metric-count").textContent();
        return Number(count?.split(" ")[0]) > 0;
      }, { timeoutMs: 30_000, intervalMs: 100, what: "a live point in the chart" });
      assert.equal(await page.locator("#metrics-note").isVisible(), true);
      // A point without a time (the ingester accepts it) is plotted at its arrival, not as NaN.
      const before = Number((await page.locator("#metric-count").textContent())?.split(" ")[0]);
      metrics.publish(
        "org.plantd.Metric",
        JSON.stringify({ device: "boiler", channel: "temperature", value: 61 }),
      );
      await waitFor(async () => {
        const count = await page.locator("#metric-count").textContent();
        return Number(count?.split(" ")[0]) > before;
      }, { timeoutMs: 10_000, what: "the time-less point in the chart" });
      const lastTime = Number(await page.locator("#metric-chart").getAttribute("data-last-time"));
      assert.ok(Number.isFinite(lastTime), `last time plotted: ${lastTime}`);
    } finally {
      await metrics.close();
    }

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await publisher.close();
    await browser.close();
    await system.stop();
  }
});

Deno.test("with authentication on, the dashboard asks for a login, works as the user, and logs out", async () => {
  await withSecuredSystem(async (system) => {
    const admin = { ...bearer(await tokenWith(["*"])), "content-type": "application/json" };
    const created = await fetch(`${system.url}/api/auth/users`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ username: "op", password: "operator pass", roles: ["operator"] }),
    });
    assert.equal(created.status, 201);
    const browser = await launch();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await page.goto(system.url + "/");
      await page.waitForSelector("#login-panel:not([hidden])", { timeout: 30_000 });
      assert.equal(await page.locator("#app").isVisible(), false);

      await page.fill("#login-username", "op");
      await page.fill("#login-password", "wrong password");
      await page.click("#login-form button[type=submit]");
      await page.waitForSelector("#login-error:not([hidden])", { timeout: 30_000 });
      assert.match(await page.locator("#login-error").textContent() ?? "", /Wrong username/);

      await page.fill("#login-password", "operator pass");
      await page.click("#login-form button[type=submit]");
      await page.waitForSelector('#services tr[data-service="org.plantd.State"]', {
        timeout: 30_000,
      });
      assert.equal(await page.locator("#user").textContent(), "op");
      await page.waitForSelector('#ws-status[data-status="open"]', { timeout: 30_000 });

      // Edits go through with the session cookie (same origin, so no CSRF refusal).
      await page.fill("#entry-scope", "line");
      await page.fill("#entry-key", "speed");
      await page.fill("#entry-value", "7");
      await page.click("#entry-form button[type=submit]");
      await page.waitForSelector('#entries tr[data-key="speed"]', { timeout: 30_000 });
      const audit = await (await fetch(`${system.url}/api/audit?actor=user:op`, {
        headers: admin,
      })).json();
      assert.ok(audit.events.some((e: { action: string }) => e.action === "state.set"));

      await page.click("#logout");
      await page.waitForSelector("#login-panel:not([hidden])", { timeout: 30_000 });
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });
});

Deno.test("/api/docs renders the OpenAPI document in Chromium from the gateway's own assets", async () => {
  const system = await startSystem();
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    const foreign: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`${message.text()} ${message.location().url}`);
    });
    // Nothing from a CDN: a plant network may have no internet, and the CSP allows 'self' only.
    page.on("request", (request) => {
      if (!request.url().startsWith(system.url)) foreign.push(request.url());
    });
    const response = await page.goto(system.url + "/api/docs");
    assert.equal(response?.status(), 200);
    assert.match(response!.headers()["content-security-policy"]!, /default-src 'self'/);
    // Every documented route shows as an operation, the state routes among them.
    await page.waitForSelector(".opblock", { timeout: 30_000 });
    const paths = await page.locator(".opblock-summary-path").allTextContents();
    const document = await (await fetch(system.url + "/api/openapi.json")).json();
    const documented = Object.keys(document.paths);
    assert.ok(documented.length > 5, documented.join(", "));
    for (const path of documented) {
      assert.ok(
        paths.some((shown) => shown.replace(/\u200b/g, "") === path),
        `${path} on the page`,
      );
    }
    assert.deepEqual(foreign, []);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: ARTIFACTS + "api-docs.png" });
  } finally {
    await browser.close();
    await system.stop();
  }
});
