// Calls to keeld's v1 API, with the API key when the server wants one. The key lives in sessionStorage:
// it lasts as long as the tab and is never written anywhere else.

const KEY_ITEM = 'keel.apiKey';

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) ?? '';
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let pendingPrompt = null;
const keyListeners = new Set();

/** Calls `f` whenever a key is entered (open streams restart with it). */
export function onKeyChange(f) {
  keyListeners.add(f);
  return () => keyListeners.delete(f);
}

/** Shows the key dialog (once, however many calls were refused at the same time); resolves with the key. */
export function askForKey(reason = '') {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  const error = document.getElementById('key-error');
  error.hidden = !reason;
  error.textContent = reason;
  input.value = '';
  const previous = apiKey();
  pendingPrompt = new Promise((resolve) => {
    const finish = (key) => {
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('close', closed);
      pendingPrompt = null;
      if (dialog.open) dialog.close();
      resolve(key);
    };
    const submit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_ITEM, key);
      document.getElementById('key-button').hidden = false;
      finish(key);
      for (const f of keyListeners) f(key);
    };
    // Closed without a key (Escape): keep the key there was, if any; without one nothing works, so the
    // dialog comes back (a browser may close a modal dialog on a second Escape whatever `cancel` says).
    const closed = () => {
      if (previous) finish(previous);
      else if (!dialog.open) dialog.showModal();
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('close', closed);
  });
  if (!dialog.open) dialog.showModal();
  input.focus();
  return pendingPrompt;
}

export function authHeaders() {
  const key = apiKey();
  return key ? {Authorization: `Bearer ${key}`} : {};
}

/**
 * `method` `path` with a JSON `body` (omitted: none); resolves with the answer's JSON, or throws an ApiError
 * carrying the server's error code and message. A 401 asks for the key and tries again.
 */
export async function api(path, {method = 'GET', body} = {}) {
  for (;;) {
    const headers = {Accept: 'application/json', ...authHeaders()};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                               cache: 'no-store'});
    } catch {
      throw new ApiError(0, 'unreachable', 'keeld does not answer');
    }
    const sentKey = headers.Authorization !== undefined;
    if (res.status === 401) {
      // Refused with a key that was replaced meanwhile: try the new one before asking.
      if (authHeaders().Authorization === headers.Authorization) {
        await askForKey(sentKey ? 'The server refused that key.' : '');
      }
      continue;
    }
    const text = await res.text();
    let doc = null;
    try {
      doc = text ? JSON.parse(text) : null;
    } catch {
      doc = null;
    }
    if (!res.ok) {
      throw new ApiError(res.status, doc?.error?.code ?? `http_${res.status}`,
                         doc?.error?.message ?? (text || res.statusText));
    }
    return doc;
  }
}

/** `/v1/runs?…` from an object, leaving out empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `${path}?${text}` : path;
}
