/**
 * The dashboard (dashboard/, plain ES modules: no build step on the user's
 * side) and its one library, uPlot from npm, served by the gateway. Files are
 * text imports, so they are part of the module graph: locked, cached, and
 * inside a `deno compile` binary.
 *
 * @module
 */
import { Hono } from "hono";
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotJs from "uplot/dist/uPlot.esm.js" with { type: "text" };
import indexHtml from "../dashboard/index.html" with { type: "text" };
import accessJs from "../dashboard/access.js" with { type: "text" };
import appJs from "../dashboard/app.js" with { type: "text" };
import gatewayPanelJs from "../dashboard/gateway_panel.js" with { type: "text" };
import auditJs from "../dashboard/audit.js" with { type: "text" };
import eventsJs from "../dashboard/events.js" with { type: "text" };
import libJs from "../dashboard/lib.js" with { type: "text" };
import liveJs from "../dashboard/live.js" with { type: "text" };
import panelsJs from "../dashboard/panels.js" with { type: "text" };
import alarmsJs from "../dashboard/alarms.js" with { type: "text" };
import sessionJs from "../dashboard/session.js" with { type: "text" };
import stateHistoryJs from "../dashboard/state_history.js" with { type: "text" };
import styleCss from "../dashboard/style.css" with { type: "text" };

const FILES: Record<string, [string, string]> = {
  "/": [indexHtml, "text/html; charset=utf-8"],
  "/access.js": [accessJs, "text/javascript; charset=utf-8"],
  "/app.js": [appJs, "text/javascript; charset=utf-8"],
  "/gateway_panel.js": [gatewayPanelJs, "text/javascript; charset=utf-8"],
  "/audit.js": [auditJs, "text/javascript; charset=utf-8"],
  "/events.js": [eventsJs, "text/javascript; charset=utf-8"],
  "/lib.js": [libJs, "text/javascript; charset=utf-8"],
  "/live.js": [liveJs, "text/javascript; charset=utf-8"],
  "/panels.js": [panelsJs, "text/javascript; charset=utf-8"],
  "/alarms.js": [alarmsJs, "text/javascript; charset=utf-8"],
  "/session.js": [sessionJs, "text/javascript; charset=utf-8"],
  "/state_history.js": [stateHistoryJs, "text/javascript; charset=utf-8"],
  "/style.css": [styleCss, "text/css; charset=utf-8"],
  "/vendor/uPlot.esm.js": [uplotJs, "text/javascript; charset=utf-8"],
  "/vendor/uPlot.min.css": [uplotCss, "text/css; charset=utf-8"],
};

/** Routes serving the dashboard. */
export function dashboardRoutes(): Hono {
  const app = new Hono();
  for (const [path, [body, type]] of Object.entries(FILES)) {
    app.get(path, (c) => {
      c.header("content-type", type);
      c.header("cache-control", "no-cache");
      c.header("x-content-type-options", "nosniff");
      return c.body(body);
    });
  }
  return app;
}
