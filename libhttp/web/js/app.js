// The dashboard: a hash router over four views (runs, a run, the inbox, start a run), the shared live
// feed, and the counters. Everything it shows comes from the public v1 API and its event streams.

import {askForKey} from './api.js';
import {startCounters} from './counters.js';
import {renderInbox} from './inbox.js';
import {startFeed, stopFeed} from './live.js';
import {renderRun} from './run.js';
import {renderRuns} from './runs.js';
import {renderStart} from './start.js';

const view = document.getElementById('view');
let leave = () => {};

function route() {
  leave();
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query ?? '');
  let nav = 'runs';
  const run = path.match(/^\/runs\/([^/]+)$/);
  let id = null;
  try {
    id = run ? decodeURIComponent(run[1]) : null;
  } catch {
    id = run[1];  // not valid percent-encoding: asked as it is, the server says it is no run
  }
  if (run) stopFeed();
  else startFeed();
  if (run) {
    leave = renderRun(view, id);
    nav = '';
  } else if (path === '/inbox') {
    leave = renderInbox(view);
    nav = 'inbox';
  } else if (path === '/start') {
    leave = renderStart(view, params);
    nav = 'start';
  } else {
    leave = renderRuns(view, params);
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!run) document.title = 'Keel';
}

document.getElementById('key-button').addEventListener('click', () => askForKey());
window.addEventListener('hashchange', route);
// The skip link moves the focus; it must not go through the router (#view is no view).
document.querySelector('.skip').addEventListener('click', (e) => {
  e.preventDefault();
  view.focus();
});
startCounters();
route();
