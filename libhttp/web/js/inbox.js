// Pending human decisions across every run, soonest expiry first, each with a live countdown; answering
// one here resumes its run (GET /v1/hooks).

import {api, withQuery} from './api.js';
import {decisionControls} from './decision.js';
import {fill, h, jsonBlock} from './dom.js';
import {absolute, countdown, parseTime, relative, shortId} from './format.js';
import {latest, subscribe, throttle} from './live.js';

const PAGE = 100;

export function renderInbox(view) {
  let gone = false;
  let cursor = null;
  const list = h('ol', {class: 'inbox', 'aria-label': 'Pending decisions, soonest expiry first'});
  const message = h('p', {class: 'muted', role: 'status'});
  const more = h('button', {type: 'button', hidden: true, onclick: () => load(true)}, 'More');
  fill(view, h('div', {class: 'view-head'}, h('h1', {}, 'Inbox'),
               h('p', {class: 'muted'}, 'Hooks waiting for an answer, soonest expiry first.')),
       list, message, more);

  function card(hook) {
    const expires = parseTime(hook.expires_at);
    return h('li', {class: 'card hook', dataset: {run: hook.run_id, hook: hook.name}},
             h('div', {class: 'card-head'},
               h('h2', {}, hook.workflow, ' · ', hook.name),
               h('span', {class: 'countdown', dataset: {expires: hook.expires_at ?? ''},
                          title: expires ? absolute(expires) : 'no expiry'}, countdown(expires))),
             h('p', {class: 'muted'}, 'Run ', h('a', {href: `#/runs/${hook.run_id}`, class: 'mono'}, shortId(hook.run_id)),
               `, waiting since ${relative(parseTime(hook.created_at))}`),
             hook.metadata !== null && hook.metadata !== undefined ? jsonBlock(hook.metadata, 'Metadata') : null,
             decisionControls(hook, () => reload()));
  }

  const loads = latest();
  async function load(append = false) {
    const token = loads.guard();
    try {
      const doc = await api(withQuery('/v1/hooks', {limit: PAGE, cursor: append ? cursor : null}));
      if (gone || !loads.current(token)) return;
      const items = doc.hooks.map(card);
      if (append) list.append(...items);
      else fill(list, items);
      cursor = doc.next_cursor;
      more.hidden = !cursor;
      message.textContent = list.children.length === 0 ? 'Nothing waits for a decision.' : '';
    } catch (e) {
      message.textContent = `Could not load the inbox: ${e.message}`;
    }
  }
  // Keep a decision being typed: while the focus is in the list, a reload waits for it to leave.
  let pending = false;
  const reload = throttle(() => {
    if (gone) return;
    if (list.contains(document.activeElement)) pending = true;
    else load();
  }, 1000);
  list.addEventListener('focusout', (e) => {
    if (pending && !list.contains(e.relatedTarget)) {
      pending = false;
      reload();
    }
  });
  const unsubscribe = subscribe((e) => {
    if (e.type === 'resync') reload();
    const k = e.data?.kind;
    if (e.type === 'message' && (k === 'run_waiting' || k === 'run_resumed' || k === 'run_cancelled' ||
                                 k === 'run_completed' || k === 'run_failed')) {
      reload();
    }
  });
  const ticker = setInterval(() => {
    for (const el of list.querySelectorAll('.countdown')) {
      el.textContent = countdown(parseTime(el.dataset.expires || null));
    }
  }, 1000);
  load();
  return () => {
    gone = true;
    unsubscribe();
    clearInterval(ticker);
  };
}
