// Server-Sent Events over fetch, so that the API key goes in an Authorization header (an EventSource can
// send none). Reconnects by itself with Last-Event-ID, so a restart of keeld loses no lifecycle event:
// the server replays everything after the last id this stream saw.

import {askForKey, authHeaders, onKeyChange} from './api.js';

const MIN_DELAY = 500;
const MAX_DELAY = 5000;

/**
 * Follows `path`. handlers: onEvent({type, id, data}) (data parsed as JSON when it is), onState(state) with
 * state 'connecting' | 'live' | 'reconnecting' | 'ended', onError(message) for an answer that will not get
 * better by retrying (a 404). Returns {close()}.
 */
export function openStream(path, handlers) {
  let lastId = null;
  let closed = false;
  let controller = null;
  let delay = MIN_DELAY;
  let wake = null;
  const state = (s) => handlers.onState?.(s);
  // A new key: drop the connection that used the old one (the loop reconnects at once).
  const stopListening = onKeyChange(() => {
    delay = MIN_DELAY;
    controller?.abort();
    wake?.();
  });

  async function loop() {
    state('connecting');
    while (!closed) {
      controller = new AbortController();
      const headers = {Accept: 'text/event-stream', ...authHeaders()};
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      try {
        const res = await fetch(path, {headers, signal: controller.signal, cache: 'no-store'});
        if (res.status === 401) {
          if (authHeaders().Authorization === headers.Authorization) {
            await askForKey(headers.Authorization ? 'The server refused that key.' : '');
          }
          continue;
        }
        if (res.status === 404 || res.status === 400) {
          let message = `${res.status}`;
          try {
            message = (await res.json()).error.message;
          } catch { /* the status says enough */ }
          handlers.onError?.(message);
          closed = true;
          break;
        }
        if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
        state('live');
        delay = MIN_DELAY;
        if (await pump(res.body.getReader())) {
          closed = true;
          state('ended');
          break;
        }
      } catch {
        // Refused, reset, or aborted for a new key: try again below.
      }
      if (closed) break;
      state('reconnecting');
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, delay);
      });
      wake = null;
      delay = Math.min(delay * 2, MAX_DELAY);
    }
    stopListening();
  }

  /** Reads events until the body ends; true when the server said `event: end`. */
  async function pump(reader) {
    const decoder = new TextDecoder();
    let buffer = '';
    let type = '';
    let data = [];
    let id = null;
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, {stream: true});
      let at;
      // A \r at the end may be the first half of a \r\n split across chunks: wait for the next one.
      while ((at = buffer.search(/\r\n|\r(?!$)|\n/)) >= 0) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + (buffer.startsWith('\r\n', at) ? 2 : 1));
        if (line === '') {
          if (data.length > 0) {
            if (id !== null) lastId = id;
            const text = data.join('\n');
            let parsed = text;
            try {
              parsed = JSON.parse(text);
            } catch { /* not JSON: kept as text */ }
            const event = {type: type || 'message', id, data: parsed};
            if (event.type === 'end') return true;
            if (!closed) handlers.onEvent(event);
          }
          type = '';
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(':')) continue;  // a keepalive comment
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'event') type = value;
        else if (field === 'id') id = value;
      }
    }
  }

  loop();
  return {
    close() {
      closed = true;
      controller?.abort();
      wake?.();
    },
  };
}
