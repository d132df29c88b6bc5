// Answering a hook from the page: Approve / Reject for a human decision (a hook whose metadata describes
// an answer with an `approved` field, as the `approval` example's does), a JSON editor for any other hook.

import {api} from './api.js';
import {h} from './dom.js';

const BY_ITEM = 'keel.decidedBy';

function decidedBy() {
  return localStorage.getItem(BY_ITEM) || 'dashboard';
}

export function isHumanDecision(hook) {
  const answer = hook.metadata?.answer;
  return answer !== null && typeof answer === 'object' && 'approved' in answer;
}

/** The template an editor starts from: the answer's described shape with placeholder values. */
function template(hook) {
  const answer = hook.metadata?.answer;
  if (answer === null || typeof answer !== 'object') return '{}';
  const out = {};
  for (const [k, v] of Object.entries(answer)) {
    out[k] = v === 'bool' ? false : v === 'number' || v === 'int' ? 0 : v === 'string' ? '' : null;
  }
  return JSON.stringify(out, null, 2);
}

/** The controls that answer `hook`; `onDone(answer)` after the server took it. */
export function decisionControls(hook, onDone) {
  const status = h('p', {class: 'decision-status', role: 'status'});
  const send = async (payload, buttons) => {
    for (const b of buttons) b.disabled = true;
    status.textContent = 'sending…';
    status.classList.remove('error-text');
    try {
      const answer = await api(hook.path, {method: 'POST', body: payload});
      status.textContent = 'sent: the run goes on';
      onDone?.(answer);
    } catch (e) {
      status.textContent = `${e.code}: ${e.message}`;
      status.classList.add('error-text');
      for (const b of buttons) b.disabled = false;
    }
  };
  const id = `${hook.run_id ?? ''}-${hook.name}`.replace(/[^a-zA-Z0-9_-]/g, '');
  if (isHumanDecision(hook)) {
    // Kept as it is typed, not only on change: a live update that redraws these controls (the run parking
    // while the approver types) builds a new field from it, so no keystroke is lost.
    const by = h('input', {id: `by-${id}`, class: 'by', value: decidedBy(), autocomplete: 'name',
                           oninput: (e) => localStorage.setItem(BY_ITEM, e.target.value)});
    const approve = h('button', {type: 'button', class: 'primary approve'}, 'Approve');
    const reject = h('button', {type: 'button', class: 'danger reject'}, 'Reject');
    const buttons = [approve, reject];
    approve.addEventListener('click', () => send({approved: true, by: by.value || 'dashboard'}, buttons));
    reject.addEventListener('click', () => send({approved: false, by: by.value || 'dashboard'}, buttons));
    return h('div', {class: 'decision'},
             h('label', {for: `by-${id}`}, 'Decided by'), by, approve, reject, status);
  }
  const editor = h('textarea', {id: `payload-${id}`, class: 'payload', rows: 5, spellcheck: false},
                   template(hook));
  const submit = h('button', {type: 'button', class: 'primary'}, 'Send');
  submit.addEventListener('click', () => {
    let payload;
    try {
      payload = editor.value.trim() === '' ? null : JSON.parse(editor.value);
    } catch (e) {
      status.textContent = `not JSON: ${e.message}`;
      status.classList.add('error-text');
      return;
    }
    send(payload, [submit]);
  });
  return h('div', {class: 'decision'}, h('label', {for: `payload-${id}`}, 'Payload (JSON)'), editor, submit,
           status);
}
