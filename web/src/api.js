// The app's only way to the server: JSON over /api/*, through the gateway,
// which routes the session's requests to the user's own slice.

export class APIError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "";
  }
}

export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    // The session ended: sign in again, then come back here.
    location.assign("/login");
    throw new APIError(401, { error: "signed out", code: "unauthorized" });
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!r.ok) throw new APIError(r.status, data);
  return data;
}

// list reads a list out of an answer that is either the list itself or an
// object holding it under key.
export function list(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  return [];
}
