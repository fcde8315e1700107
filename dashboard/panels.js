// Metric panels: charts of several series each, picked from the devices and
// channels the metrics store knows (GET /api/devices), with history from
// GET /api/metrics and live points from the metric bus. The layout (panels,
// their series and windows) is saved per user through /api/console/layout.
import uPlot from "/vendor/uPlot.esm.js";
import { $, api, dateTime, el } from "./lib.js";

const WINDOWS = {
  "15m": [15 * 60e3, "10s"],
  "1h": [3600e3, "1m"],
  "24h": [86400e3, "15m"],
  "7d": [7 * 86400e3, "1h"],
};
const COLORS = [
  "#2c6fbb",
  "#d9822b",
  "#1f8a4c",
  "#8e44ad",
  "#c0392b",
  "#16a2a2",
  "#7f8c8d",
  "#b8860b",
];
// As the gateway bounds a saved layout (gateway/routes/layout.ts).
const MAX_PANELS = 12;
const MAX_SERIES = 8;
/** Points kept per series: the oldest go first. */
const MAX_POINTS = 5000;

/**
 * The time of a live point in ms: its `time` (or `timestamp`), else now. The
 * ingester stores a point without a time at its arrival; so does the chart
 * (a NaN time would blank the chart for good).
 */
export function pointTime(point, now = Date.now()) {
  const at = Date.parse(point.time ?? point.timestamp);
  return Number.isFinite(at) ? at : now;
}

/** A value short enough for a list: six significant digits at most. */
export function short(value) {
  return value == null ? "–" : String(Number(value.toPrecision(6)));
}

/** Time axis labels: times, with the date under the first and wherever the day changes. */
export function timeLabels(_u, splits) {
  let day = "";
  return splits.map((s) => {
    const [date, time] = dateTime(s * 1000, false).split(" ");
    const label = date === day ? time : `${time}\n${date}`;
    day = date;
    return label;
  });
}

let devices = []; // [{device, channels: [{channel, last_value, last_time}]}]
const panels = [];
let note = () => {};
let saveTimer;
let layoutSaving = true;

function channelsOf(device) {
  return devices.find((d) => d.device === device)?.channels ?? [];
}

/** One chart with its series. */
class Panel {
  window = "1h";
  series = []; // [{device, channel, points: [[ms, value]]}]
  #chart;
  #token = 0;

  constructor(saved) {
    if (saved) {
      this.window = saved.window;
      this.series = saved.series.map((s) => ({ ...s, points: [] }));
    }
    this.node = el("div", { class: "metric-panel" });
    this.deviceSelect = el("select", { class: "panel-device", "aria-label": "device" });
    this.channelSelect = el("select", { class: "panel-channel", "aria-label": "channel" });
    this.windowSelect = el(
      "select",
      { class: "panel-window", "aria-label": "window" },
      ...Object.keys(WINDOWS).map((w) => el("option", { value: w }, w)),
    );
    this.windowSelect.value = this.window;
    const add = el("button", { type: "button", class: "panel-add-series" }, "add series");
    const remove = el("button", { type: "button", class: "panel-remove" }, "remove panel");
    this.legend = el("ul", { class: "panel-series" });
    this.range = el("p", { class: "note panel-range" });
    this.chartNode = el("div", { class: "panel-chart" });
    this.node.append(
      el(
        "div",
        { class: "row" },
        this.deviceSelect,
        this.channelSelect,
        add,
        this.windowSelect,
        remove,
      ),
      this.legend,
      this.chartNode,
      this.range,
    );
    this.deviceSelect.addEventListener("change", () => this.#fillChannels());
    add.addEventListener(
      "click",
      () => this.add(this.deviceSelect.value, this.channelSelect.value),
    );
    remove.addEventListener("click", () => removePanel(this));
    this.windowSelect.addEventListener("change", () => {
      this.window = this.windowSelect.value;
      save();
      this.load();
    });
    this.fillDevices();
    // Panels share the row: a chart follows its panel's width as panels come and go.
    new ResizeObserver(() => {
      const width = Math.max(320, this.chartNode.clientWidth);
      if (this.#chart && this.#chart.width !== width) this.#chart.setSize({ width, height: 220 });
    }).observe(this.chartNode);
  }

  fillDevices() {
    const previous = this.deviceSelect.value;
    this.deviceSelect.replaceChildren(
      el("option", { value: "" }, "device…"),
      ...devices.map((d) => el("option", { value: d.device }, d.device)),
    );
    if (devices.some((d) => d.device === previous)) this.deviceSelect.value = previous;
    this.#fillChannels();
  }

  #fillChannels() {
    const previous = this.channelSelect.value;
    const channels = channelsOf(this.deviceSelect.value);
    this.channelSelect.replaceChildren(
      ...channels.map((c) =>
        el(
          "option",
          { value: c.channel },
          `${c.channel} (${short(c.last_value)} at ${dateTime(Date.parse(c.last_time))})`,
        )
      ),
    );
    if (channels.some((c) => c.channel === previous)) this.channelSelect.value = previous;
  }

  add(device, channel) {
    if (!device || !channel) return;
    if (this.series.some((s) => s.device === device && s.channel === channel)) return;
    if (this.series.length >= MAX_SERIES) return note(`at most ${MAX_SERIES} series per panel`);
    this.series.push({ device, channel, points: [] });
    save();
    this.load();
  }

  removeSeries(index) {
    this.series.splice(index, 1);
    save();
    this.load();
  }

  /** History of every series over the panel's window, then live points on top. */
  async load() {
    const token = ++this.#token;
    const [span, bucket] = WINDOWS[this.window];
    const to = new Date();
    const from = new Date(to.getTime() - span);
    // Points at another resolution go; those arriving while the history loads stay.
    for (const s of this.series) s.live = [];
    const failures = [];
    const histories = await Promise.all(this.series.map(async (s) => {
      const query = new URLSearchParams({
        device: s.device,
        channel: s.channel,
        from: from.toISOString(),
        to: to.toISOString(),
        bucket,
      });
      try {
        const body = await api(`/api/metrics?${query}`);
        return body.buckets.map((b) => [Date.parse(b.time), b.avg]);
      } catch (error) {
        failures.push(error.message);
        return [];
      }
    }));
    if (token !== this.#token) return; // the series or window changed meanwhile
    this.series.forEach((s, i) => {
      const newest = histories[i].at(-1)?.[0] ?? -Infinity;
      s.points = [...histories[i], ...s.live.filter(([t]) => t > newest)];
    });
    note(
      failures.length ? `History unavailable (${failures[0]}); showing live points only.` : "",
    );
    this.#chart?.destroy();
    this.#chart = undefined;
    this.draw();
  }

  /** A live point of the metric bus, when it is one of this panel's series. */
  live(device, channel, time, value) {
    const s = this.series.find((s) => s.device === device && s.channel === channel);
    if (!s) return;
    s.points.push([time, value]);
    s.live?.push([time, value]);
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    if (s.live?.length > MAX_POINTS) s.live.splice(0, s.live.length - MAX_POINTS);
    this.draw();
  }

  draw() {
    this.legend.replaceChildren(
      ...this.series.map((s, i) => {
        const remove = el("button", { type: "button", title: "remove series" }, "×");
        remove.addEventListener("click", () => this.removeSeries(i));
        return el(
          "li",
          {
            "data-series": `${s.device}/${s.channel}`,
            style: `--color: ${COLORS[i % COLORS.length]}`,
          },
          `${s.device} / ${s.channel}: ${s.points.length} point${
            s.points.length === 1 ? "" : "s"
          } `,
          remove,
        );
      }),
    );
    // uPlot wants one x array: the union of the series' times, null where a series has none.
    const times = [...new Set(this.series.flatMap((s) => s.points.map(([t]) => t)))]
      .sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    const data = [times.map((t) => t / 1000)];
    for (const s of this.series) {
      const ys = new Array(times.length).fill(null);
      for (const [t, v] of s.points) ys[index.get(t)] = v;
      data.push(ys);
    }
    // The newest time plotted (s), for people and tests inspecting the page.
    this.chartNode.dataset.lastTime = String(data[0].at(-1) ?? "");
    this.chartNode.dataset.series = String(this.series.length);
    this.range.textContent = times.length
      ? `${dateTime(times[0])} – ${dateTime(times.at(-1))}`
      : "no points yet";
    if (this.#chart && this.#chart.series.length === data.length) return this.#chart.setData(data);
    this.#chart?.destroy();
    this.#chart = new uPlot(
      {
        width: Math.max(320, this.chartNode.clientWidth || 600),
        height: 220,
        axes: [{ values: timeLabels, size: 48 }, {}],
        series: [
          { value: (_u, v) => (v == null ? "–" : dateTime(v * 1000)) },
          ...this.series.map((s, i) => ({
            label: `${s.device}/${s.channel}`,
            stroke: COLORS[i % COLORS.length],
            width: 1.5,
            spanGaps: true,
          })),
        ],
      },
      data,
      this.chartNode,
    );
  }

  toJSON() {
    return {
      window: this.window,
      series: this.series.map(({ device, channel }) => ({ device, channel })),
    };
  }
}

function addPanel(saved) {
  if (panels.length >= MAX_PANELS) return note(`at most ${MAX_PANELS} panels`);
  const panel = new Panel(saved);
  panels.push(panel);
  $("panels").append(panel.node);
  panel.load();
  return panel;
}

function removePanel(panel) {
  panels.splice(panels.indexOf(panel), 1);
  panel.node.remove();
  save();
}

/** Saves the layout a moment after the last change (a burst of changes is one write). */
function save() {
  follow();
  clearTimeout(saveTimer);
  saveTimer = setTimeout(async () => {
    if (!layoutSaving) return;
    const status = $("layout-status");
    try {
      await api("/api/console/layout", {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ panels }),
      });
      status.textContent = "layout saved";
      status.dataset.saved = String(Date.now());
    } catch (error) {
      status.textContent = `layout not saved (${error.message})`;
    }
  }, 300);
}

async function refreshDevices() {
  try {
    ({ devices } = await api("/api/devices"));
    $("device-list").replaceChildren(
      ...devices.flatMap((d) =>
        d.channels.map((c) =>
          el(
            "tr",
            { "data-device": d.device, "data-channel": c.channel },
            el("td", {}, d.device),
            el("td", {}, c.channel),
            el("td", { class: "num" }, short(c.last_value)),
            el("td", { class: "time" }, dateTime(Date.parse(c.last_time))),
          )
        )
      ),
    );
    $("devices-note").hidden = devices.length > 0;
    $("devices-note").textContent = "no series in the metrics store yet";
  } catch (error) {
    $("devices-note").hidden = false;
    $("devices-note").textContent = error.status === 403
      ? "not permitted (metrics:read)"
      : `device list unavailable (${error.message})`;
  }
  for (const panel of panels) panel.fillDevices();
}

/** Starts the panels on the page's WebSocket `live`. */
export async function startPanels(live) {
  note = (text) => {
    $("metrics-note").textContent = text;
    $("metrics-note").hidden = !text;
  };
  $("panel-add").addEventListener("click", () => {
    addPanel();
    save();
  });
  await refreshDevices();
  setInterval(refreshDevices, 5000);
  let saved = null;
  try {
    ({ layout: saved } = await api("/api/console/layout"));
  } catch (error) {
    // No state service or no permission: the page works, the layout is not kept.
    layoutSaving = error.status !== 403;
    $("layout-status").textContent = `layout not loaded (${error.message})`;
  }
  const wanted = saved?.panels.length ? saved.panels : [undefined];
  for (const panel of wanted) addPanel(panel);
  follow = () => followLive(live);
  follow();
  $("panels").dataset.ready = "true";
}

let follow = () => {};
let following = false;

/**
 * Live points go to the panels that plot their series. The metric bus carries
 * every device's points under one topic, so the page subscribes only while a
 * panel has a series.
 */
function followLive(live) {
  const wanted = panels.some((panel) => panel.series.length > 0);
  if (wanted === following) return;
  following = wanted;
  if (!wanted) return live.release("metric-live");
  live.hold("metric-live", { type: "subscribe", bus: "metric", prefix: "" }, (message) => {
    if (message.type !== "message") return;
    let point;
    try {
      point = JSON.parse(message.payload);
    } catch {
      return;
    }
    const device = point.device ?? point.service_name;
    const channel = point.channel ?? point.metric_name;
    const time = pointTime(point);
    for (const panel of panels) panel.live(device, channel, time, Number(point.value));
  });
}
