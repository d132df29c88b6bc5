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

/** Starts the shared feed (once). */
export function startFeed() {
  if (feed) return;
  feed = openStream('/v1/events?frames=true', {
    onEvent: (e) => {
      for (const f of listeners) {
        try {
          f(e);
        } catch (err) {
          console.error('keel: a view failed on an event', err);
        }
      }
    },
    onState: (s) => setState('feed', s),
  });
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
