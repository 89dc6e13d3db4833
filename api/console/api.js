// The public API as a browser calls it: the key from session storage, failures as the API's code + message.
// Paths are relative to the page, so the console also works behind a proxy that adds a path prefix.

const STORAGE = "facequeue.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(STORAGE),
  set: (key) => sessionStorage.setItem(STORAGE, key),
  clear: () => sessionStorage.removeItem(STORAGE),
};

export class ApiError extends Error {
  constructor(code, message, status) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
  }
}

// One request. `json` sends a JSON body, `form` a FormData; `blob: true` reads the answer as a blob.
export async function call(path, { method = "GET", json, form, blob = false, key = apiKey.get() } = {}) {
  const headers = { "X-API-Key": key ?? "" };
  let body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError("NETWORK_ERROR", `the api did not answer (${err.message})`, 0);
  }
  if (!response.ok) {
    const error = (await response.json().catch(() => ({}))).error ?? {};
    const code = error.code ?? `HTTP_${response.status}`;
    throw new ApiError(code, error.message ?? response.statusText, response.status);
  }
  return blob ? response.blob() : response.json();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Poll a job (media or recognition) until done; report each new status; a failed job throws its error.
// `isCurrent()` lets the caller abandon a poll that a newer action replaced. Quick at first, then every
// 3 s at most, so a tab left open on a long queue costs little.
export async function poll(path, onStatus, isCurrent = () => true) {
  let last;
  let intervalMs = 300;
  while (isCurrent()) {
    const body = await call(path);
    if (body.status !== last) onStatus((last = body.status), body);
    if (body.status === "done") return body;
    if (body.status === "error") {
      throw new ApiError(body.error?.code ?? "PROCESSING_FAILED", body.error?.message ?? "the job failed", 200);
    }
    await sleep(intervalMs);
    intervalMs = Math.min(intervalMs * 1.2, 3000);
  }
  return null;
}

// A face crop (GET /v2/face/{uid}/image) as an object URL; the key travels as a header, so no plain <img src>.
const crops = new Map();
export function faceImage(uid, size = 224) {
  const id = `${uid}/${size}`;
  if (!crops.has(id)) {
    const url = call(`v2/face/${encodeURIComponent(uid)}/image?size=${size}`, { blob: true }).then((b) =>
      URL.createObjectURL(b),
    );
    url.catch(() => crops.delete(id)); // let a later view retry
    crops.set(id, url);
  }
  return crops.get(id);
}

// GET /health answers 200 or 503 with the same body (no key needed): read it either way.
export async function health() {
  const response = await fetch("health");
  return response.json();
}
