// Small helpers every dashboard module shares: DOM building and the JSON API.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

let unauthorized = () => {};

/** What to do when the session is over (the login form, set by app.js). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** fetch with JSON errors turned into exceptions carrying the gateway's error code. */
export async function api(path, init) {
  const response = await fetch(path, init);
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (response.status === 401 && !path.startsWith("/api/auth/")) unauthorized();
  if (!response.ok) {
    const error = new Error(body?.error?.message ?? `${response.status} ${response.statusText}`);
    error.code = body?.error?.code;
    error.status = response.status;
    throw error;
  }
  return body;
}

export function setStatus(id, status, text) {
  const node = $(id);
  node.dataset.status = status;
  node.textContent = text;
}

const pad = (n) => String(n).padStart(2, "0");

/**
 * A local date and time, `2026-12-08 14:05:09` (seconds only when asked):
 * every timestamp of the dashboard, so an operator never has to guess the day.
 */
export function dateTime(ms, seconds = true) {
  const d = new Date(ms);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return `${date} ${seconds ? `${time}:${pad(d.getSeconds())}` : time}`;
}
