// The runs table: newest first, filtered by workflow and status, paged by keyset; kept live from the
// shared feed (a row's status changes in place; a new run appears on the first page within a second).

import {api, withQuery} from './api.js';
import {fill, h} from './dom.js';
import {absolute, duration, finished, parseTime, relative, shortId, waitingText} from './format.js';
import {latest, subscribe, throttle} from './live.js';

const STATUSES = ['queued', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled'];
// Filters of runs an operator must act on, each within a status (GET /v1/runs?status= takes them too).
const FILTERS = {dead_lettered: {label: 'dead-lettered', status: 'failed'},
                 unclaimable: {label: 'unclaimable', status: 'queued'}};
const PAGE = 50;

/** Why a run stopped or waits, when it is for a reason an operator must act on ('' otherwise). */
export function reasonText(run) {
  if (run.unclaimable) return run.unclaimable;
  const e = run.error;
  if (run.status === 'failed' && e?.code === 'dead_lettered') {
    return `dead-lettered: lost its worker ${e.recoveries ?? '?'} time${e.recoveries === 1 ? '' : 's'}`;
  }
  return '';
}

/** The status a lifecycle event leaves its run in (undefined: the event does not change it). */
export function statusAfter(kind) {
  return {
    run_enqueued: 'queued', run_started: 'running', run_sleeping: 'sleeping', run_waiting: 'waiting',
    run_resumed: 'queued', run_completed: 'completed', run_failed: 'failed', run_cancelled: 'cancelled',
    run_dead_lettered: 'failed', run_retried: 'queued', run_rewound: 'queued',
  }[kind];
}

export function statusBadge(status) {
  return h('span', {class: `status status-${status}`}, status);
}

export function renderRuns(view, params) {
  const workflow = params.get('workflow') ?? '';
  const status = params.get('status') ?? '';
  const cursors = [];  // the cursors of the pages before this one, for "newer"
  let cursor = null;
  let rows = new Map();  // run id -> {run, tr}
  let nextCursor = null;
  let gone = false;

  const workflowSelect = h('select', {id: 'filter-workflow', name: 'workflow'},
                           h('option', {value: ''}, 'all workflows'));
  const statusSelect = h('select', {id: 'filter-status', name: 'status'}, h('option', {value: ''}, 'any status'),
                         STATUSES.map((s) => h('option', {value: s, selected: s === status}, s)),
                         h('optgroup', {label: 'Needs attention'},
                           Object.entries(FILTERS).map(([s, f]) => h('option', {value: s, selected: s === status},
                                                                        f.label))));
  // The stored status the filter's runs have (a filter narrows one status).
  const statusWanted = FILTERS[status]?.status ?? status;
  const filters = h('form', {class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault()},
                    h('label', {for: 'filter-workflow'}, 'Workflow'), workflowSelect,
                    h('label', {for: 'filter-status'}, 'Status'), statusSelect);
  const apply = () => {
    const q = new URLSearchParams();
    if (workflowSelect.value) q.set('workflow', workflowSelect.value);
    if (statusSelect.value) q.set('status', statusSelect.value);
    location.hash = `#/${q.toString() ? `?${q}` : ''}`;
  };
  workflowSelect.addEventListener('change', apply);
  statusSelect.addEventListener('change', apply);

  const tbody = h('tbody');
  const table = h('table', {class: 'runs', 'aria-label': 'Runs, newest first'},
                  h('thead', {}, h('tr', {}, ['Run', 'Workflow', 'Status', 'Started', 'Duration', 'Now']
                                                .map((c) => h('th', {scope: 'col'}, c)))),
                  tbody);
  const newer = h('button', {type: 'button', disabled: true, onclick: () => {
    cursor = cursors.pop() ?? null;
    load();
  }}, '← Newer');
  const older = h('button', {type: 'button', disabled: true, onclick: () => {
    cursors.push(cursor);
    cursor = nextCursor;
    load();
  }}, 'Older →');
  const message = h('p', {class: 'muted', role: 'status'});
  fill(view, h('div', {class: 'view-head'}, h('h1', {}, 'Runs'), filters),
       h('div', {class: 'table-wrap'}, table), message, h('div', {class: 'pager'}, newer, older));

  api('/v1/workflows').then((doc) => {
    for (const w of doc.workflows) {
      workflowSelect.append(h('option', {value: w.name, selected: w.name === workflow}, w.name));
    }
  }).catch(() => {});

  function nowText(run) {
    const reason = reasonText(run);
    if (reason) return reason;
    if (run.status === 'waiting' || run.status === 'sleeping') return waitingText(run.waiting_for);
    if (run.status === 'running' && run.last_step) return `after ${run.last_step}`;
    if (run.status === 'failed' && run.error) {
      const e = run.error;
      return `${e.step ? `${e.step}: ` : ''}${e.message ?? e.code ?? ''}`.slice(0, 120);
    }
    return '';
  }

  function cells(run) {
    const created = parseTime(run.created_at);
    const began = parseTime(run.started_at);
    const ended = parseTime(run.finished_at);
    const span = began ? (ended ?? new Date()).getTime() - began.getTime() : null;
    return [
      h('td', {}, h('a', {href: `#/runs/${run.id}`, class: 'mono', title: run.id}, shortId(run.id))),
      h('td', {}, run.workflow),
      h('td', {}, statusBadge(run.status)),
      h('td', {title: absolute(created)}, relative(created)),
      h('td', {class: 'num'}, span === null ? '' : duration(span)),
      h('td', {class: reasonText(run) ? 'now reason' : 'now'}, nowText(run)),
    ];
  }

  function render(run) {
    let entry = rows.get(run.id);
    if (!entry) {
      entry = {run, tr: h('tr', {dataset: {run: run.id}})};
      rows.set(run.id, entry);
    }
    entry.run = run;
    entry.tr.dataset.status = run.status;
    if (reasonText(run)) entry.tr.dataset.reason = run.unclaimable ? 'unclaimable' : 'dead_lettered';
    else delete entry.tr.dataset.reason;
    fill(entry.tr, cells(run));
    return entry.tr;
  }

  const loads = latest();
  async function load() {
    const token = loads.guard();
    try {
      const doc = await api(withQuery('/v1/runs', {workflow, status, limit: PAGE, cursor}));
      if (gone || !loads.current(token)) return;
      const old = rows;
      rows = new Map();
      fill(tbody, doc.runs.map((r) => {
        // Keep what the feed taught (the last step) across reloads.
        const last = old.get(r.id)?.run.last_step;
        return render(last && r.status === 'running' ? {...r, last_step: last} : r);
      }));
      nextCursor = doc.next_cursor;
      older.disabled = !nextCursor;
      newer.disabled = cursors.length === 0 && cursor === null;
      message.textContent = doc.runs.length === 0 ? 'No runs match.' : '';
    } catch (e) {
      message.textContent = `Could not load runs: ${e.message}`;
    }
  }
  const reloadFirstPage = throttle(() => {
    if (cursor === null && !gone) load();
  }, 1000);

  const unsubscribe = subscribe((e) => {
    if (e.type === 'resync') {
      load();
      return;
    }
    const ev = e.data;
    if (!ev || typeof ev !== 'object' || !ev.run_id) return;
    const entry = rows.get(ev.run_id);
    if (e.type === 'message') {
      const next = statusAfter(ev.kind);
      if (entry) {
        const run = {...entry.run};
        if (next) run.status = next;
        if (ev.kind === 'run_started' && !run.started_at) run.started_at = ev.at;
        if (finished.has(next)) run.finished_at = ev.at;
        if (ev.kind === 'step_completed' && ev.data?.name) run.last_step = ev.data.name;
        if (ev.kind === 'run_waiting') run.waiting_for = ev.data?.what;
        if (ev.kind === 'run_sleeping') run.waiting_for = {kind: 'sleep', until: ev.data?.until};
        if (ev.kind === 'run_failed' || ev.kind === 'run_dead_lettered') run.error = ev.data?.error;
        if (next && next !== 'queued') delete run.unclaimable;  // claimed, or ended
        render(run);
        if (status && next && next !== statusWanted) reloadFirstPage();
      } else if (next && (!workflow || ev.workflow === workflow) && (!status || next === statusWanted)) {
        reloadFirstPage();  // a run this page does not show yet (new, or newly in this status)
      }
    }
  });
  // Durations of running runs move on by themselves (the cell's text only: a focused link keeps its focus).
  const ticker = setInterval(() => {
    for (const {run, tr} of rows.values()) {
      if (run.status !== 'running' || !run.started_at) continue;
      const cell = tr.querySelector('td.num');
      if (cell) cell.textContent = duration(Date.now() - parseTime(run.started_at).getTime());
    }
  }, 1000);
  load();
  return () => {
    gone = true;
    unsubscribe();
    clearInterval(ticker);
  };
}
