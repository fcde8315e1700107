// The session: cookie refresh and the login form's visibility.
import { $, api } from "./lib.js";

let refreshTimer;

/** Renews the session cookies with the refresh cookie; false when the session is over. */
export async function refreshSession() {
  try {
    const tokens = await api("/api/auth/refresh", { method: "POST" });
    scheduleRefresh(tokens.expires_at);
    return true;
  } catch {
    return false;
  }
}

export function scheduleRefresh(expiresAt) {
  clearTimeout(refreshTimer);
  if (!expiresAt) return;
  // A minute early (or halfway, for short tokens), so requests never meet an expired cookie.
  const left = expiresAt - Date.now();
  refreshTimer = setTimeout(refreshSession, Math.max(1000, Math.min(left - 60_000, left / 2)));
}

export function showLogin() {
  $("app").hidden = true;
  $("login-panel").hidden = false;
  $("login-username").focus();
}
