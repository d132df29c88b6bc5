// One run: what it is doing now (waiting for what, progress), its result or error, its steps on a time
// line drawn to scale, its children and parent, and its event log; kept live from the run's own event
// stream (which starts at the run's first event, so the log is whole, and carries its children's events).

import {api, withQuery} from './api.js';
import {confirmAction} from './confirm.js';
import {decisionControls} from './decision.js';
import {fill, h, jsonBlock} from './dom.js';
import {absolute, countdown, duration, finished, micros, parseTime, relative, shortId, waitingText} from './format.js';
import {latest, setState, throttle} from './live.js';
import {statusBadge} from './runs.js';
import {openStream} from './sse.js';

/** How an engine step reads on the page ("keel.hook:decision" → "hook decision"). */
export function stepLabel(name) {
  if (!name.startsWith('keel.')) return name;
  const [kind, arg] = name.slice(5).split(/:(.*)/s);
  const words = {
    sleep: 'sleep', hook: 'hook', hook_wait: 'wait for hook', event: 'wait for event', compensate: 'undo',
    child: 'child run', any: 'first of', all: 'all of', continue_as_new: 'continue as new',
  };
  return `${words[kind] ?? kind}${arg ? ` ${arg}` : ''}`;
}

function describeEvent(ev) {
  const d = ev.data ?? {};
  switch (ev.kind) {
    case 'run_started': return `execution ${d.execution} on ${d.worker}${d.recovery ? ' (recovered)' : ''}`;
    case 'step_started': return `${stepLabel(d.name)}, attempt ${d.attempt}`;
    case 'step_completed': return `${stepLabel(d.name)} in ${duration((d.duration_us ?? 0) / 1000)}` +
                                  (d.attempts > 1 ? ` after ${d.attempts} attempts` : '');
    case 'step_retrying': return `${stepLabel(d.name)} attempt ${d.attempt} failed: ${d.error?.message ?? ''}` +
                                 ` (next in ${duration(d.next_delay_ms)})`;
    case 'step_failed': return `${stepLabel(d.name)}: ${d.error?.message ?? ''}`;
    case 'run_sleeping': return `until ${absolute(parseTime(d.until))}`;
    case 'run_waiting': return waitingText(d.what);
    case 'run_resumed': return `by ${d.by}`;
    case 'run_failed': return `${d.error?.code ?? ''}: ${d.error?.message ?? ''}`;
    case 'run_blocked': return d.reason === 'throttle'
      ? `by the throttle of key “${d.key}”: ${d.limit} start per ${duration(d.window_ms)}`
      : `by concurrency key “${d.key}”: ${d.limit} at once`;
    default: return '';
  }
}

/** Beyond these, the time line and the log ask before drawing more (a run may take 100,000 steps). */
const STEP_CAP = 300;
const LOG_CAP = 1000;

export function renderRun(view, id) {
  let run = null;
  let gone = false;
  const events = [];           // this run's and its children's lifecycle events, in log order
  const children = new Map();  // child id -> {id, workflow, status}
  let parentId = null;
  let progress = null;         // the latest frame of this run
  let allSteps = false;        // the time line draws the first STEP_CAP steps unless asked for all

  const head = h('div', {class: 'view-head'});
  const actions = h('div', {class: 'actions', role: 'group', 'aria-label': 'Actions'});
  const notice = h('p', {class: 'notice', role: 'status'});
  const now = h('section', {class: 'panel now', 'aria-label': 'Now'});
  const result = h('section', {class: 'panel result', 'aria-label': 'Result'});
  const facts = h('dl', {class: 'facts'});
  const timeline = h('section', {class: 'panel', 'aria-labelledby': 'timeline-title'});
  const family = h('section', {class: 'panel family', 'aria-labelledby': 'family-title'});
  const io = h('section', {class: 'panel io', 'aria-label': 'Input and output'});
  const log = h('section', {class: 'panel', 'aria-labelledby': 'log-title'});
  fill(view, head, actions, notice, now, result, h('section', {class: 'panel', 'aria-label': 'Facts'}, facts),
       timeline, family, io, log);
  fill(head, h('h1', {}, 'Run ', h('span', {class: 'mono'}, shortId(id))));

  const loads = latest();
  async function load() {
    const token = loads.guard();
    try {
      const fresh = await api(`/v1/runs/${encodeURIComponent(id)}`);
      if (gone || !loads.current(token)) return;
      run = fresh;
      parentId = run.parent_id ?? parentId;
      draw();
    } catch (e) {
      if (gone) return;
      if (!run) fill(view, h('h1', {}, 'Run ', h('span', {class: 'mono'}, id)),
                     h('p', {class: 'error-text', role: 'alert'}, `${e.code}: ${e.message}`));
      else notice.textContent = `Could not refresh: ${e.message}`;
    }
  }
  const reload = throttle(load, 300);

  async function loadChildren() {
    try {
      const doc = await api(withQuery('/v1/runs', {parent: id, limit: 200}));
      for (const c of doc.runs) children.set(c.id, c);
      if (!gone && run) drawFamily();
    } catch { /* an older server: children show from the event stream */ }
  }
  const reloadChildren = throttle(loadChildren, 1000);

  function act(label, f) {
    return async () => {
      notice.textContent = `${label}…`;
      notice.classList.remove('error-text');
      try {
        await f();
        notice.textContent = `${label}: done`;
        reload();
      } catch (e) {
        notice.textContent = `${label} failed: ${e.code}: ${e.message}`;
        notice.classList.add('error-text');
      }
    };
  }

  function drawActions() {
    const buttons = [];
    if (!finished.has(run.status)) {
      buttons.push(h('button', {type: 'button', class: 'danger', id: 'cancel-run', onclick: async () => {
        const sure = await confirmAction('Cancel this run?',
          `The ${run.workflow} run ${shortId(run.id)} stops; its compensations run and its children are cancelled.`,
          'Cancel the run');
        if (sure) await act('Cancel', () => api(`/v1/runs/${run.id}/cancel`, {method: 'POST'}))();
      }}, 'Cancel'));
    }
    if (run.status === 'failed') {
      buttons.push(h('button', {type: 'button', class: 'primary', id: 'retry-run',
                                onclick: act('Retry', () => api(`/v1/runs/${run.id}/retry`, {method: 'POST'}))},
                     'Retry'));
    }
    const userSteps = run.steps.filter((s) => !s.name.startsWith('keel.'));
    if (userSteps.length > 0 && run.status !== 'queued') {
      const chosen = actions.querySelector('#rewind-step')?.value;  // kept across redraws
      const select = h('select', {id: 'rewind-step', 'aria-label': 'Step to rewind to'},
                       userSteps.map((s) => h('option', {value: s.seq, selected: String(s.seq) === chosen},
                                              `${s.seq}: ${s.name}`)));
      const rewind = h('button', {type: 'button', id: 'rewind-run', onclick: async () => {
        const step = Number(select.value);
        const name = select.selectedOptions[0]?.textContent ?? step;
        const sure = await confirmAction('Rewind this run?',
          `Steps from ${name} on are forgotten and run again (their side effects too).`, 'Rewind');
        if (sure) await act('Rewind', () => api(`/v1/runs/${run.id}/rewind`, {method: 'POST', body: {step}}))();
      }}, 'Rewind to');
      buttons.push(h('span', {class: 'rewind'}, rewind, select));
    }
    fill(actions, buttons);
  }

  // "Now" holds what the run waits for (with the controls that answer it) and its progress. Frames redraw
  // the progress only, and the waiting part is redrawn only when what it shows changed: someone typing an
  // answer keeps their text and focus while the run emits frames or the page refreshes.
  const waiting = h('div', {class: 'waiting'});
  const progressEl = h('div', {class: 'progress-wrap'});
  now.append(waiting, progressEl);
  let waitingShown = null;

  function drawNow() {
    const key = JSON.stringify([run.status, run.waiting_for, run.hooks, run.unclaimable, run.concurrency,
                                run.throttle]);
    if (key !== waitingShown) {
      waitingShown = key;
      const parts = [];
      if (run.unclaimable) parts.push(h('p', {class: 'error-text unclaimable'}, run.unclaimable));
      // Due, but parked until its key lets it start (a run may wait for both; the slot is taken first).
      if (run.status === 'queued' && run.concurrency?.waiting) {
        parts.push(h('p', {class: 'waiting-for blocked'}, h('strong', {}, 'Waiting for a slot '),
                     `of concurrency key “${run.concurrency.key}”: at most ${run.concurrency.limit} run at once`));
      } else if (run.status === 'queued' && run.throttle?.waiting) {
        parts.push(h('p', {class: 'waiting-for blocked'}, h('strong', {}, 'Waiting for the throttle '),
                     `of key “${run.throttle.key}”: at most ${run.throttle.limit} start per ` +
                     duration(run.throttle.window_ms)));
      }
      if (run.status === 'waiting' || run.status === 'sleeping') {
        parts.push(h('p', {class: 'waiting-for'}, h('strong', {}, 'Waiting for '), waitingText(run.waiting_for)));
      }
      const w = run.waiting_for ?? {};
      const eventNames = [w, ...(Array.isArray(w.arms) ? w.arms : [])]
        .filter((x) => x && x.kind === 'event' && (x.event ?? x.name)).map((x) => x.event ?? x.name);
      for (const name of new Set(run.status === 'waiting' ? eventNames : [])) parts.push(eventSender(name));
      for (const hook of run.hooks ?? []) {
        const expires = parseTime(hook.expires_at);
        // A webhook waits for a third party's request, not for a person's decision: its URL, no controls.
        const webhook = hook.kind === 'webhook';
        parts.push(h('div', {class: 'hook', dataset: {hook: hook.name}},
                     h('h3', {}, webhook ? `Webhook “${hook.name}”` : `Hook “${hook.name}”`),
                     h('p', {class: 'muted'}, `created ${relative(parseTime(hook.created_at))}; `,
                       h('span', {class: 'countdown', dataset: {expires: hook.expires_at ?? ''}}, countdown(expires))),
                     hook.metadata !== null && hook.metadata !== undefined ? jsonBlock(hook.metadata, 'Metadata') : null,
                     webhook ? h('p', {}, 'Takes a request at ', h('code', {}, hook.path))
                             : decisionControls({...hook, run_id: run.id}, () => reload())));
      }
      fill(waiting, parts);
    }
    drawProgress();
  }

  function drawProgress() {
    const parts = [];
    if (progress && !finished.has(run.status)) {
      const frame = progress.frame;
      const pct = frame && typeof frame === 'object' && typeof frame.progress === 'number'
                    ? Math.max(0, Math.min(100, frame.progress)) : null;
      parts.push(h('strong', {}, 'Progress'),
                 pct === null ? null
                   : h('div', {class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
                               'aria-valuenow': Math.round(pct), 'aria-label': 'Progress'},
                       h('div', {class: 'fill', style: {width: `${pct}%`}})),
                 h('code', {class: 'frame'}, typeof frame === 'string' ? frame : JSON.stringify(frame)),
                 progress.missed ? h('span', {class: 'muted'}, ` (${progress.missed} frames skipped)`) : null);
    }
    fill(progressEl, parts);
    progressEl.hidden = parts.length === 0;
    now.hidden = waiting.childElementCount === 0 && progressEl.hidden;
  }

  /** Sends the event `name` the run waits for, with a JSON payload. */
  function eventSender(name) {
    const slug = name.replace(/[^a-zA-Z0-9_-]/g, '');
    const editor = h('textarea', {id: `event-${slug}`, class: 'payload', rows: 3, spellcheck: false}, '{}');
    const status = h('p', {class: 'decision-status', role: 'status'});
    const send = h('button', {type: 'button', class: 'primary', onclick: async () => {
      let payload;
      try {
        payload = editor.value.trim() === '' ? null : JSON.parse(editor.value);
      } catch (e) {
        status.textContent = `not JSON: ${e.message}`;
        return;
      }
      send.disabled = true;
      try {
        await api(`/v1/runs/${run.id}/events/${encodeURIComponent(name)}`, {method: 'POST', body: payload});
        status.textContent = 'sent';
        reload();
      } catch (e) {
        status.textContent = `${e.code}: ${e.message}`;
        send.disabled = false;
      }
    }}, `Send “${name}”`);
    return h('div', {class: 'hook event-sender'}, h('h3', {}, `Event “${name}”`),
             h('div', {class: 'decision'}, h('label', {for: `event-${slug}`}, 'Payload (JSON)'), editor, send, status));
  }

  function drawResult() {
    const parts = [];
    if (run.error) {
      const e = run.error;
      parts.push(h('div', {class: 'error-box', role: 'alert'},
                   h('h2', {}, 'Error ', h('code', {}, e.code ?? '')),
                   h('p', {class: 'error-message'}, e.message ?? ''),
                   e.code === 'dead_lettered'
                     ? h('p', {class: 'dead-lettered'}, `Dead-lettered: it lost its worker ${e.recoveries ?? '?'} ` +
                         'times (a crash, a kill or a stall each time), so no worker runs it again. ' +
                         'Retry runs it again, with a fresh count.')
                     : null,
                   e.step ? h('p', {}, 'Step ', h('strong', {class: 'failed-step'}, e.step),
                              e.attempts ? ` after ${e.attempts} attempt${e.attempts > 1 ? 's' : ''}` : '') : null,
                   Array.isArray(e.compensation) && e.compensation.length > 0
                     ? h('p', {}, 'Undone: ', e.compensation.map((c) => `${stepLabel(c.step)} (${c.status})`).join(', '))
                     : null));
    }
    result.hidden = parts.length === 0;
    fill(result, parts);
  }

  function drawFacts() {
    const created = parseTime(run.created_at);
    const began = parseTime(run.started_at);
    const ended = parseTime(run.finished_at);
    const row = (k, v) => (v === null || v === undefined || v === '' ? [] : [h('dt', {}, k), h('dd', {}, v)]);
    fill(facts,
         row('Id', h('span', {class: 'mono'}, run.id)),
         row('Version', run.version),
         row('Created', h('time', {datetime: run.created_at, title: run.created_at}, absolute(created))),
         row('Started', began ? h('time', {datetime: run.started_at}, absolute(began)) : null),
         row('Finished', ended ? h('time', {datetime: run.finished_at}, absolute(ended)) : null),
         row('Duration', began ? duration((ended ?? new Date()).getTime() - began.getTime()) : null),
         row('Claims', run.claims),
         row('Recoveries', run.recoveries || null),
         row('Priority', run.priority || null),
         row('Idempotency key', run.idempotency_key),
         row('Concurrency key', run.concurrency ? `${run.concurrency.key} (limit ${run.concurrency.limit})` : null),
         row('Throttle', run.throttle
           ? `${run.throttle.key} (${run.throttle.limit} per ${duration(run.throttle.window_ms)})` : null),
         row('Fairness key', run.fairness ? `${run.fairness.key} (weight ${run.fairness.weight})` : null));
  }

  /** Attempts of each step (by seq) from the log: [{attempt, start, end, error}]. */
  function attemptsBySeq() {
    const out = new Map();
    for (const ev of events) {
      if (ev.run_id !== id) continue;
      const d = ev.data ?? {};
      if (ev.kind === 'step_started') {
        const list = out.get(d.seq) ?? [];
        list.push({attempt: d.attempt, start: parseTime(d.started_at ?? ev.at), end: null, error: null});
        out.set(d.seq, list);
      } else if (ev.kind === 'step_retrying') {
        const a = (out.get(d.seq) ?? []).find((x) => x.attempt === d.attempt);
        if (a) {
          a.end = parseTime(ev.at);
          a.error = d.error;
        }
      }
    }
    return out;
  }

  /** When the run rested (slept or waited), from the log: [{start, end, what}]. */
  function rests() {
    const out = [];
    let open = null;
    for (const ev of events) {
      if (ev.run_id !== id) continue;
      if (ev.kind === 'run_sleeping' || ev.kind === 'run_waiting') {
        open = {start: parseTime(ev.at), end: null,
                what: ev.kind === 'run_sleeping' ? 'sleeping' : waitingText(ev.data?.what)};
        out.push(open);
      } else if (open && (ev.kind === 'run_resumed' || ev.kind === 'run_started' || ev.kind.startsWith('run_c') ||
                          ev.kind === 'run_failed')) {
        open.end = parseTime(ev.at);
        open = null;
      }
    }
    return out;
  }

  function drawTimeline() {
    const t0 = parseTime(run.created_at).getTime();
    const ended = parseTime(run.finished_at);
    const t1 = Math.max((ended ?? new Date()).getTime(), t0 + 1);
    const span = t1 - t0;
    const at = (d) => `${(Math.max(0, d.getTime() - t0) / span) * 100}%`;
    const width = (a, b) => `max(2px, ${(Math.max(0, b.getTime() - a.getTime()) / span) * 100}%)`;
    const attempts = attemptsBySeq();
    // Redrawn every second while the run goes on: keep the steps someone opened open.
    const opened = new Set([...timeline.querySelectorAll('details[open]')].map((d) => d.closest('li').dataset.seq));
    const rows = [];
    const shown = allSteps ? run.steps : run.steps.slice(0, STEP_CAP);
    for (const s of shown) {
      const start = parseTime(s.started_at);
      const end = parseTime(s.finished_at);
      const took = (micros(s.finished_at) - micros(s.started_at)) / 1000;  // ms, to the microsecond
      const bars = [];
      const tries = attempts.get(s.seq) ?? [];
      for (const a of tries.filter((x) => x.error)) {
        bars.push(h('div', {class: 'bar-attempt failed', style: {left: at(a.start), width: width(a.start, a.end ?? a.start)},
                            title: `attempt ${a.attempt} failed: ${a.error?.message ?? ''}`}));
      }
      bars.push(h('div', {class: `bar-step ${s.status}${s.name.startsWith('keel.') ? ' engine' : ''}`,
                          style: {left: at(start), width: width(start, end)},
                          title: `${stepLabel(s.name)}: ${duration(took)}`}));
      const detail = s.status === 'failed' ? s.error : s.output;
      rows.push(h('li', {class: 'tl-row', dataset: {seq: s.seq, status: s.status}},
                  h('details', {open: opened.has(String(s.seq))},
                    h('summary', {},
                      h('span', {class: 'tl-name'}, h('span', {class: 'seq'}, s.seq), stepLabel(s.name),
                        s.branch ? h('span', {class: 'muted'}, ` [${s.branch}]`) : null),
                      h('span', {class: 'tl-track', 'aria-hidden': 'true'}, bars),
                      h('span', {class: 'tl-meta'}, duration(took),
                        s.attempts > 1 ? h('span', {class: 'attempts'}, ` · ${s.attempts} attempts`) : null,
                        s.status === 'failed' ? h('span', {class: 'status status-failed'}, 'failed') : null)),
                    h('div', {class: 'tl-detail'},
                      h('p', {class: 'muted'}, `started ${absolute(start)}, finished ${absolute(end)}`),
                      tries.filter((x) => x.error).map((a) => h('p', {class: 'error-text'},
                        `attempt ${a.attempt}: ${a.error?.message ?? JSON.stringify(a.error)}`)),
                      jsonBlock(detail, s.status === 'failed' ? 'Error' : 'Output')))));
    }
    const restBars = rests().map((r) => h('div', {class: 'bar-rest', style: {left: at(r.start),
                                                                          width: width(r.start, r.end ?? new Date(t1))},
                                                 title: r.what}));
    if (restBars.length > 0) {
      rows.push(h('li', {class: 'tl-row rests'},
                  h('div', {class: 'tl-flat'}, h('span', {class: 'tl-name muted'}, 'resting'),
                    h('span', {class: 'tl-track', 'aria-hidden': 'true'}, restBars), h('span', {class: 'tl-meta'}))));
    }
    fill(timeline,
         h('h2', {id: 'timeline-title'}, 'Steps'),
         h('p', {class: 'muted axis'}, h('span', {}, absolute(new Date(t0))), h('span', {}, `${duration(span)} in all`),
           h('span', {}, ended ? absolute(ended) : 'now')),
         rows.length ? h('ol', {class: 'timeline'}, rows) : h('p', {class: 'muted'}, 'No step has finished yet.'),
         shown.length < run.steps.length
           ? h('button', {type: 'button', onclick: () => {
               allSteps = true;
               drawTimeline();
             }}, `Show all ${run.steps.length} steps (${STEP_CAP} shown)`)
           : null);
  }

  function drawFamily() {
    const parts = [];
    if (parentId) parts.push(h('p', {}, 'Started by ', h('a', {href: `#/runs/${parentId}`, class: 'mono parent-link'},
                                                     shortId(parentId))));
    if (children.size > 0) {
      parts.push(h('ul', {class: 'children'}, [...children.values()].map((c) =>
        h('li', {}, h('a', {href: `#/runs/${c.id}`, class: 'mono'}, shortId(c.id)), ` ${c.workflow ?? ''} `,
          c.status ? statusBadge(c.status) : null))));
    }
    family.hidden = parts.length === 0;
    fill(family, h('h2', {id: 'family-title'}, 'Related runs'), parts);
  }

  function drawIO() {
    fill(io, h('div', {}, h('h2', {}, 'Input'), jsonBlock(run.input, 'Input')),
         h('div', {}, h('h2', {}, 'Output'), run.status === 'completed' ? jsonBlock(run.output, 'Output')
           : h('p', {class: 'muted'}, finished.has(run.status) ? `none (${run.status})` : 'none yet')));
  }

  const logBody = h('tbody');
  function drawLog() {
    fill(log, h('h2', {id: 'log-title'}, 'Event log'),
         h('div', {class: 'table-wrap'},
           h('table', {class: 'log'}, h('thead', {}, h('tr', {}, ['Id', 'At', 'Run', 'Event', 'Details']
                                                                  .map((c) => h('th', {scope: 'col'}, c)))),
             logBody)));
  }
  function logRow(ev) {
    return h('tr', {dataset: {kind: ev.kind}},
             h('td', {class: 'mono'}, ev.id), h('td', {}, absolute(parseTime(ev.at))),
             h('td', {}, ev.run_id === id ? 'this' : h('a', {href: `#/runs/${ev.run_id}`, class: 'mono'}, shortId(ev.run_id))),
             h('td', {}, ev.kind), h('td', {class: 'details'}, describeEvent(ev)));
  }

  function draw() {
    fill(head, h('h1', {}, run.workflow, ' ', h('span', {class: 'mono muted'}, shortId(run.id))), statusBadge(run.status));
    document.title = `${run.workflow} ${shortId(run.id)} · ${run.status} · Keel`;
    drawActions();
    drawNow();
    drawResult();
    drawFacts();
    drawTimeline();
    drawFamily();
    drawIO();
  }

  drawLog();
  const stream = openStream(`/v1/runs/${encodeURIComponent(id)}/events?frames=true`, {
    onEvent: (e) => {
      const ev = e.data;
      if (!ev || typeof ev !== 'object') return;
      if (e.type === 'frame') {
        if (ev.run_id === id) {
          progress = ev.data;
          if (run) drawProgress();
        }
        return;
      }
      if (e.type !== 'message') return;
      events.push(ev);
      if (events.length <= LOG_CAP) logBody.append(logRow(ev));
      log.querySelector('h2').textContent = events.length <= LOG_CAP ? `Event log (${events.length})`
        : `Event log (the first ${LOG_CAP} of ${events.length}; \`keel tail\` or the API show the rest)`;
      if (ev.run_id === id) {
        if (ev.parent_id) parentId = ev.parent_id;
        if (ev.kind !== 'step_started') reload();
      } else {
        const c = children.get(ev.run_id) ?? {id: ev.run_id, workflow: ev.workflow};
        if (ev.parent_id === id || children.has(ev.run_id)) {
          children.set(ev.run_id, c);
          reloadChildren();
        }
      }
    },
    onState: (s) => setState('run', s === 'ended' ? null : s),
    onError: (message) => {
      notice.textContent = message;
    },
  });
  const ticker = setInterval(() => {
    for (const el of view.querySelectorAll('.countdown[data-expires]')) {
      el.textContent = countdown(parseTime(el.dataset.expires || null));
    }
    if (run && !finished.has(run.status)) {
      drawFacts();
      if (!timeline.contains(document.activeElement)) drawTimeline();  // keep a keyboard user's place
    }
  }, 1000);
  load();
  loadChildren();
  return () => {
    gone = true;
    stream.close();
    setState('run', null);
    clearInterval(ticker);
    document.title = 'Keel';
  };
}
