/**
 * A key's history in the dashboard, in real headless Chromium against a
 * secured system: a key set twice over REST by a named user shows both
 * changes (who, old and new value, revision) beside the key, and the delete
 * button empties it. The state panel's screenshot is saved to
 * test-artifacts/state-history.png (docs/state-history.png is one).
 */
import assert from "node:assert/strict";
import { ARTIFACTS, launchChromium } from "./_browser.ts";
import { bearer, tokenWith, withSecuredSystem } from "./_auth.ts";

Deno.test("dashboard shows a key's history (who, old and new value) and deletes it", async () => {
  // Chromium shares 2 cores with the other test files: the default request timeout is too short.
  await withSecuredSystem(async (system) => {
    const admin = { ...bearer(await tokenWith(["*"])), "content-type": "application/json" };
    const created = await fetch(`${system.url}/api/auth/users`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({ username: "alice", password: "alice's pass", roles: ["operator"] }),
    });
    assert.equal(created.status, 201, await created.text());
    // Alice writes over REST (as a client program of hers would), then looks in the page.
    const alice = bearer(await tokenWith(["state:*"], { sub: "user:alice" }));
    for (const value of ["OPEN", "CLOSED"]) {
      const put = await fetch(`${system.url}/api/state/plant/valve`, {
        method: "PUT",
        headers: { ...alice, "content-type": "text/plain" },
        body: value,
      });
      assert.equal(put.status, 200, await put.text());
    }

    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      page.on("dialog", (dialog) => dialog.accept());
      await page.goto(system.url + "/");
      await page.waitForSelector("#login-panel:not([hidden])", { timeout: 30_000 });
      await page.fill("#login-username", "alice");
      await page.fill("#login-password", "alice's pass");
      await page.click("#login-form button[type=submit]");

      await page.click('#entries tr[data-key="valve"] button.history', { timeout: 30_000 });
      const rows = page.locator("#history-entries tr");
      await rows.nth(1).waitFor({ timeout: 30_000 });
      assert.equal(await rows.count(), 2);
      const cells = async (i: number) =>
        await Promise.all(
          ["revision", "actor", "old", "new"].map(async (name) =>
            (await rows.nth(i).locator(`td.${name}`).textContent())?.trim()
          ),
        );
      // Newest first: the second set, then the creation (no old value).
      assert.deepEqual(await cells(0), ["2", "user:alice", "OPEN", "CLOSED"]);
      assert.deepEqual(await cells(1), ["1", "user:alice", "—", "OPEN"]);
      assert.equal(await page.locator("#key-history").getAttribute("data-key"), "valve");

      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await page.locator("#state-panel").screenshot({ path: `${ARTIFACTS}state-history.png` });

      // Alice is an operator (state:*): she may delete it; the key stays.
      await page.click("#history-delete");
      await page.waitForSelector("#history-empty", { timeout: 30_000 });
      const after = await (await fetch(`${system.url}/api/state/plant/valve/history`, {
        headers: alice,
      })).json();
      assert.deepEqual(after.entries, []);
      const key = await (await fetch(`${system.url}/api/state/plant/valve`, { headers: alice }))
        .json();
      assert.equal(key.value, "CLOSED");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  }, { gateway: { request_timeout_ms: 15_000 } });
});
