// The page's live feed: one stream of every run's events (/v1/events), shared by the views, and the
// connection state shown in the header (live, or reconnecting after keeld went away).

import {openStream} from './sse.js';

const listeners = new Set();
const states = new Map();  // stream name -> its state
let feed = null;

/** Calls `f(event)` for each event of the shared feed until the returned function is called. */
export function subscribe(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

function tell(e) {
  for (const f of listeners) {
    try {
      f(e);
    } catch (err) {
      console.error('keel: a view failed on an event', err);
    }
  }
}

/**
 * Starts the shared feed (if it is not running). Views that follow it also get {type: 'resync'} when it is
 * live again after a break: what changed meanwhile may predate the last event it saw, so they reload.
 */
export function startFeed() {
  if (feed) return;
  let wasDown = false;
  feed = openStream('/v1/events?frames=false', {
    onEvent: tell,
    onState: (s) => {
      setState('feed', s);
      if (s === 'reconnecting') wasDown = true;
      if (s === 'live' && wasDown) {
        wasDown = false;
        tell({type: 'resync'});
      }
    },
  });
}

/** Stops the shared feed: a run's page follows its own stream, and a browser allows six connections per
 * server across all its tabs. */
export function stopFeed() {
  feed?.close();
  feed = null;
  setState('feed', null);
}

/** A load that only the latest call may finish: `guard()` gives a token, `current(token)` says whether it is
 * still the latest (an older answer arriving late must not overwrite a newer one). */
export function latest() {
  let n = 0;
  return {guard: () => ++n, current: (token) => token === n};
}

/** Reports the state of stream `name` (null: it is gone) to the header's indicator. */
export function setState(name, state) {
  if (state === null) states.delete(name);
  else states.set(name, state);
  const all = [...states.values()];
  const shown = all.includes('reconnecting') ? 'reconnecting'
              : all.includes('connecting') ? 'connecting' : 'live';
  const el = document.getElementById('connection');
  if (el.dataset.state === shown) return;
  el.dataset.state = shown;
  el.textContent = {live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…'}[shown];
  el.title = shown === 'reconnecting' ? 'keeld does not answer; the page reconnects by itself' : '';
  document.dispatchEvent(new CustomEvent('keel-connection', {detail: shown}));
}

/** Calls `f` at most once per `ms`, the last call's arguments winning (leading and trailing edge). */
export function throttle(f, ms) {
  let last = 0;
  let timer = null;
  return (...args) => {
    const wait = last + ms - Date.now();
    if (wait <= 0 && !timer) {
      last = Date.now();
      f(...args);
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      f(...args);
    }, Math.max(wait, 0));
  };
}
