/**
 * `/api/docs`: the OpenAPI document (`/api/openapi.json`) rendered by Swagger
 * UI, served from the npm package like the dashboard's uPlot (static.ts):
 * nothing is fetched from a CDN, so the page works on a plant network
 * without internet access and under the dashboard's CSP ('self' only).
 *
 * @module
 */
import { Hono } from "hono";
import bundleJs from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "text" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "text" };

/** Paths under which the docs page and its assets are served (documents, not JSON API). */
export const API_DOCS_PATH = "/api/docs";

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>plantd API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${API_DOCS_PATH}/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="${API_DOCS_PATH}/swagger-ui-bundle.js"></script>
<script src="${API_DOCS_PATH}/init.js"></script>
</body>
</html>
`;

// A file, not an inline script: the CSP allows scripts from 'self' only.
const INIT = `window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  // Requests made from the page carry the user's bearer token when one is entered.
  persistAuthorization: false,
});
`;

const FILES: Record<string, [string, string]> = {
  "": [PAGE, "text/html; charset=utf-8"],
  "/swagger-ui.css": [swaggerCss, "text/css; charset=utf-8"],
  "/swagger-ui-bundle.js": [bundleJs, "text/javascript; charset=utf-8"],
  "/init.js": [INIT, "text/javascript; charset=utf-8"],
};

/** Routes serving the API docs page and its assets. */
export function apiDocsRoutes(): Hono {
  const app = new Hono();
  for (const [path, [body, type]] of Object.entries(FILES)) {
    app.get(API_DOCS_PATH + path, (c) => {
      c.header("content-type", type);
      c.header("cache-control", "no-cache");
      return c.body(body);
    });
  }
  return app;
}
