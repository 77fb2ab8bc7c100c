// HTTP and WebSocket access to the adapter, with the API token when the server asks for one.

const TOKEN_KEY = "chatterbox-api-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Relative URLs, so the page also works behind a path prefix (an ingress serving it at /tts/).
export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = getToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  if (!response.ok) {
    throw new ApiError(response.status, await errorMessage(response));
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

async function errorMessage(response) {
  // Every error of the adapter has the shape {"error": {"code": ..., "message": ...}}.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch {
    // not JSON: fall through
  }
  return `HTTP ${response.status} ${response.statusText}`;
}

export function webSocketUrl() {
  // Browsers cannot set headers on a WebSocket; the adapter also accepts ?token= (adapter/auth.py).
  const url = new URL("ws/tts", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}
