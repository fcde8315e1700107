/**
 * Headless Chromium for the dashboard tests: Debian's `chromium` through
 * playwright-core, with what a test machine does not need turned off.
 */
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Where the tests leave their screenshots (docs/*.png are copies of them). */
export const ARTIFACTS = new URL("../test-artifacts/", import.meta.url).pathname;

/** A new headless browser; the caller closes it. */
export function launchChromium(): Promise<Browser> {
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
