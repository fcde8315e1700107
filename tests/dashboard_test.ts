/**
 * The dashboard in real headless Chromium (Debian's, driven by playwright-core)
 * against the whole system: services appear, a key edited in the page shows up
 * over REST and back through the state watch, a bus message arrives. A
 * screenshot is saved to test-artifacts/dashboard.png for reviewers.
 */
import assert from "node:assert/strict";
import { ARTIFACTS, launchChromium } from "./_browser.ts";
import { Publisher } from "../bus/publisher.ts";
import { openLibsqlWriter } from "../metrics/libsql.ts";
import { waitFor } from "./_helpers.ts";
import { startSystem } from "./_system.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";

Deno.test("dashboard shows services, edits state live, and streams a bus topic", async () => {
  // Chromium and the other test files share 2 cores: the default 2 s request
  // timeout of the test system is too short for the page's writes under that load.
  const system = await startSystem({ gateway: { request_timeout_ms: 15_000 } });
  const browser = await launchChromium();
  const publisher = new Publisher(system.frontends.event!, { sendHighWaterMark: 0 });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    // Failed loads (a missing favicon too) and CSP refusals show up as console errors;
    // the ones expected are /api/devices and /api/events answering 503 (this system has no
    // metrics store).
    page.on("console", (message) => {
      const text = `${message.text()} ${message.location().url}`;
      if (message.type() !== "error" || /status of 503 .*\/api\/(devices|events)\b/.test(text)) {
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

    // The scope list follows scopes made and deleted by someone else, without a refresh.
    const option = '#scope-select option[value="made-elsewhere"]';
    const made = await fetch(system.url + "/api/state/made-elsewhere/k", {
      method: "PUT",
      headers: { "content-type": "text/plain" },
      body: "1",
    });
    assert.equal(made.status, 200, await made.text());
    await page.waitForSelector(option, { state: "attached", timeout: 30_000 });
    const gone = await fetch(system.url + "/api/state/made-elsewhere", { method: "DELETE" });
    assert.equal(gone.status, 200, await gone.text());
    await page.waitForSelector(option, { state: "detached", timeout: 30_000 });

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await publisher.close();
    await browser.close();
    await system.stop();
  }
});

Deno.test("the dashboard picks a device from the list and plots two channels, live, in saved panels", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/metrics.db`;
  // History of the last 50 minutes, every 30 s, for three series.
  const now = Date.now();
  const writer = await openLibsqlWriter(file);
  const points = [];
  for (let t = now - 50 * 60_000, i = 0; t < now; t += 30_000, i++) {
    points.push(
      {
        time: t,
        device: "press",
        channel: "temperature",
        value: 60 + 5 * Math.sin(i / 8),
        tags: null,
      },
      { time: t, device: "press", channel: "pressure", value: 3 + Math.cos(i / 10), tags: null },
      { time: t, device: "boiler", channel: "level", value: 40 + (i % 20), tags: null },
    );
  }
  await writer.write(points);
  await writer.close();
  const system = await startSystem({
    gateway: { request_timeout_ms: 15_000, metrics_db: file, metrics_database_url: "" },
  });
  const browser = await launchChromium();
  const metrics = new Publisher(system.frontends.metric!, { sendHighWaterMark: 0 });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`${message.text()} ${message.location().url}`);
    });
    await page.goto(system.url + "/");

    // The device list, from GET /api/devices, with each channel's last value and time.
    const row = page.locator('#device-list tr[data-device="press"][data-channel="temperature"]');
    await row.waitFor({ timeout: 30_000 });
    assert.match(await row.textContent() ?? "", /\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/);
    await page.waitForSelector('#panels[data-ready="true"]', { timeout: 30_000 });

    // Pick the device in the first panel, then two of its channels.
    const first = page.locator(".metric-panel").first();
    await first.locator(".panel-device").selectOption("press");
    for (const channel of ["temperature", "pressure"]) {
      await first.locator(".panel-channel").selectOption(channel);
      await first.locator(".panel-add-series").click();
    }
    const chart = first.locator(".panel-chart");
    await first.locator('.panel-chart[data-series="2"] .uplot').waitFor({ timeout: 30_000 });
    // Both series have their history (1 min buckets of 50 minutes of points).
    for (const series of ["press/temperature", "press/pressure"]) {
      await waitFor(async () => {
        const text = await first.locator(`li[data-series="${series}"]`).textContent();
        return Number(text?.match(/: (\d+) point/)?.[1]) >= 45;
      }, { timeoutMs: 30_000, intervalMs: 100, what: `the history of ${series}` });
    }
    // Timestamps carry their date.
    assert.match(
      await first.locator(".panel-range").textContent() ?? "",
      /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} – \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/,
    );

    // Live points from the metric bus join the chart.
    const count = async () =>
      Number(
        (await first.locator('li[data-series="press/temperature"]').textContent())
          ?.match(/: (\d+) point/)?.[1],
      );
    const history = await count();
    await waitFor(async () => {
      metrics.publish(
        "org.plantd.Metric",
        JSON.stringify({
          time: new Date().toISOString(),
          device: "press",
          channel: "temperature",
          value: 70,
        }),
      );
      return (await count()) > history;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "a live point in the chart" });
    // A point without a time (the ingester accepts it) is plotted at its arrival, not as NaN,
    // and the chart goes on taking points.
    const before = await count();
    metrics.publish(
      "org.plantd.Metric",
      JSON.stringify({ device: "press", channel: "temperature", value: 61 }),
    );
    await waitFor(async () => (await count()) > before, {
      timeoutMs: 30_000,
      what: "the time-less point in the chart",
    });
    const lastTime = Number(await chart.getAttribute("data-last-time"));
    assert.ok(Number.isFinite(lastTime) && lastTime > 0, `last time plotted: ${lastTime}`);
    const after = await count();
    await waitFor(async () => {
      metrics.publish(
        "org.plantd.Metric",
        JSON.stringify({
          time: new Date().toISOString(),
          device: "press",
          channel: "temperature",
          value: 62,
        }),
      );
      return (await count()) > after;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "a point after the time-less one" });

    // A second panel with another device; the layout is saved and comes back on a reload.
    await page.click("#panel-add");
    const second = page.locator(".metric-panel").nth(1);
    await second.locator(".panel-device").selectOption("boiler");
    await second.locator(".panel-channel").selectOption("level");
    await second.locator(".panel-add-series").click();
    await second.locator('.panel-chart[data-series="1"] .uplot').waitFor({ timeout: 30_000 });
    await second.locator(".panel-window").selectOption("24h");
    const expected = {
      panels: [
        {
          window: "1h",
          series: [
            { device: "press", channel: "temperature" },
            { device: "press", channel: "pressure" },
          ],
        },
        { window: "24h", series: [{ device: "boiler", channel: "level" }] },
      ],
    };
    await waitFor(async () => {
      const saved = await (await fetch(system.url + "/api/console/layout")).json();
      return JSON.stringify(saved.layout) === JSON.stringify(expected);
    }, { timeoutMs: 30_000, intervalMs: 100, what: "the saved layout" });

    // The gateway's own throughput, latency and errors, sampled live.
    await waitFor(
      async () => Number(await page.locator("#gateway-chart").getAttribute("data-samples")) >= 3,
      { timeoutMs: 30_000, intervalMs: 200, what: "three samples of the gateway's statistics" },
    );
    assert.match(
      await page.locator('#gateway-stats tr[data-stat="requests"]').textContent() ?? "",
      /\d+\.\d \/s/,
    );

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}console.png`, fullPage: true });
    await page.locator("#metrics-panel").screenshot({ path: `${ARTIFACTS}panels.png` });

    await page.reload();
    await page.waitForSelector('#panels[data-ready="true"]', { timeout: 30_000 });
    assert.equal(await page.locator(".metric-panel").count(), 2);
    await page.locator('.metric-panel .panel-chart[data-series="2"]').waitFor({ timeout: 30_000 });
    assert.equal(
      await page.locator(".metric-panel").nth(1).locator(".panel-window").inputValue(),
      "24h",
    );
    assert.equal(
      await page.locator(".metric-panel").nth(1).locator('li[data-series="boiler/level"]').count(),
      1,
    );
    // Removing a panel is saved too.
    await page.locator(".metric-panel").nth(1).locator(".panel-remove").click();
    await waitFor(async () => {
      const saved = await (await fetch(system.url + "/api/console/layout")).json();
      return saved.layout?.panels.length === 1;
    }, { timeoutMs: 30_000, intervalMs: 100, what: "the layout without the second panel" });
    assert.deepEqual(errors, []);
  } finally {
    await metrics.close();
    await browser.close();
    await system.stop();
    await Deno.remove(dir, { recursive: true });
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
    const browser = await launchChromium();
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
  const browser = await launchChromium();
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
