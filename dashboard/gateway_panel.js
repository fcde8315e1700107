// The gateway's own throughput, latency and errors, live: GET /api/gateway/stats
// (totals since the gateway started) sampled every two seconds; each figure
// is of the interval between two samples.
import uPlot from "/vendor/uPlot.esm.js";
import { $, api, dateTime, el } from "./lib.js";
import { timeLabels } from "./panels.js";

const PERIOD_MS = 2000;
/** Samples on the chart: ten minutes. */
const KEEP = 300;

/** The latency under which `q` of the interval's requests were served (s), from bucket counts. */
export function quantile(bounds, counts, q) {
  const total = counts.at(-1);
  if (!total) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) if (counts[i] >= rank) return bounds[i];
  return Infinity;
}

/** Figures of the interval between two samples. */
export function interval(before, after) {
  const seconds = (after.at - before.at) / 1000;
  const requests = after.requests - before.requests;
  const counts = after.latency.counts.map((c, i) => c - (before.latency.counts[i] ?? 0));
  const served = after.latency.count - before.latency.count;
  return {
    rate: requests / seconds,
    errors: (after.server_errors - before.server_errors) / seconds,
    clientErrors: (after.client_errors - before.client_errors) / seconds,
    mean: served ? (after.latency.sum - before.latency.sum) / served : null,
    p95: quantile(after.latency.bounds, counts, 0.95),
    ws: after.ws_connections,
    refused: after.refused - before.refused,
  };
}

const ms = (s) => (s == null ? "–" : s === Infinity ? "> 5 s" : `${(s * 1000).toFixed(1)} ms`);

export function startGatewayPanel() {
  const data = [[], [], [], []]; // time (s), requests/s, 5xx/s, p95 (ms)
  let previous;
  let chart;
  const show = (figures) => {
    $("gateway-stats").replaceChildren(
      ...[
        ["requests", `${figures.rate.toFixed(1)} /s`],
        ["errors (5xx)", `${figures.errors.toFixed(2)} /s`],
        ["client errors (4xx)", `${figures.clientErrors.toFixed(2)} /s`],
        ["mean latency", ms(figures.mean)],
        ["p95 latency", ms(figures.p95)],
        ["WebSockets", String(figures.ws)],
        ["refused", String(figures.refused)],
      ].map(([name, value]) =>
        el("tr", { "data-stat": name }, el("td", {}, name), el("td", { class: "num" }, value))
      ),
    );
  };
  const sample = async () => {
    let now;
    try {
      now = await api("/api/gateway/stats");
    } catch (error) {
      $("gateway-note").hidden = false;
      $("gateway-note").textContent = error.status === 403
        ? "not permitted (telemetry:read)"
        : `gateway statistics unavailable (${error.message})`;
      return;
    }
    $("gateway-note").hidden = true;
    if (previous) {
      const figures = interval(previous, now);
      show(figures);
      data[0].push(now.at / 1000);
      data[1].push(figures.rate);
      data[2].push(figures.errors);
      data[3].push(figures.p95 === null || figures.p95 === Infinity ? null : figures.p95 * 1000);
      if (data[0].length > KEEP) { for (const column of data) column.shift(); }
      $("gateway-chart").dataset.samples = String(data[0].length);
      if (chart) chart.setData(data);
      else {
        chart = new uPlot(
          {
            width: Math.max(320, $("gateway-chart").clientWidth || 400),
            height: 160,
            // At least a minute wide, so the first samples do not stretch over years.
            scales: { x: { time: true, range: (_u, min, max) => [Math.min(min, max - 60), max] } },
            axes: [{ values: timeLabels, size: 48 }, { label: "per s" }, {
              side: 1,
              scale: "ms",
              label: "ms",
              grid: { show: false },
            }],
            series: [
              { value: (_u, v) => (v == null ? "–" : dateTime(v * 1000)) },
              { label: "requests/s", stroke: "#2c6fbb", width: 1.5 },
              { label: "5xx/s", stroke: "#c0392b", width: 1.5 },
              { label: "p95 ms", stroke: "#d9822b", width: 1.5, scale: "ms" },
            ],
          },
          data,
          $("gateway-chart"),
        );
      }
    }
    previous = now;
  };
  sample();
  setInterval(sample, PERIOD_MS);
}
