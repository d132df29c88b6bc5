// The counters above every view: runs by status, steps per second over the last minute, queue depth and
// runs waiting on a person (GET /v1/stats, every two seconds while the tab is visible).

import {api} from './api.js';
import {fill, h} from './dom.js';

const PERIOD_MS = 2000;

function tile(label, value, {href, title, id} = {}) {
  const body = [h('span', {class: 'value'}, value ?? '–'), h('span', {class: 'label'}, label)];
  return href ? h('a', {class: 'tile', href, title, 'data-counter': id}, body)
              : h('div', {class: 'tile', title, 'data-counter': id}, body);
}

function number(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

export function startCounters() {
  const el = document.getElementById('counters');
  const badge = document.getElementById('inbox-count');
  let timer = null;
  let busy = false;
  const again = () => {
    clearTimeout(timer);
    timer = document.hidden ? null : setTimeout(refresh, PERIOD_MS);
  };
  async function refresh() {
    clearTimeout(timer);
    if (busy) return;  // the refresh under way schedules the next
    busy = true;
    try {
      const s = await api('/v1/stats');
      const runs = s.runs ?? {};
      const capped = (n, c) => (c ? `${number(n)}+` : number(n));
      fill(el,
           tile('queued', number(runs.queued), {href: '#/?status=queued', id: 'queued'}),
           tile('running', number(runs.running), {href: '#/?status=running', id: 'running'}),
           tile('sleeping', number(runs.sleeping), {href: '#/?status=sleeping', id: 'sleeping'}),
           tile('waiting', number(runs.waiting), {href: '#/?status=waiting', id: 'waiting'}),
           tile('failed', capped(s.failed, s.failed_capped), {href: '#/?status=failed', id: 'failed'}),
           tile('steps/s (last minute)', s.steps_per_s === undefined ? '–' : Number(s.steps_per_s).toFixed(1),
                {title: `${number(s.steps_last_minute)} steps in the last 60 s`, id: 'steps'}),
           tile('queue depth', number(s.queue_depth), {title: 'queued runs due now, waiting for a worker',
                                                       id: 'queue'}),
           tile('waiting on a person', number(s.waiting_on_hooks), {href: '#/inbox', id: 'hooks'}));
      badge.hidden = !s.waiting_on_hooks;
      badge.textContent = s.waiting_on_hooks ? String(s.waiting_on_hooks) : '';
    } catch (e) {
      if (!el.firstChild) fill(el, h('p', {class: 'muted'}, `counters unavailable: ${e.message}`));
      el.classList.add('stale');
      return;
    } finally {
      busy = false;
      again();
    }
    el.classList.remove('stale');
  }
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  document.addEventListener('keel-connection', (e) => {
    if (e.detail === 'live') refresh();
  });
  refresh();
}
