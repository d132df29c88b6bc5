// Starting a run of a registered workflow with a JSON input (the list and each one's example input come
// from GET /v1/workflows).

import {api} from './api.js';
import {fill, h} from './dom.js';

export function renderStart(view, params) {
  const select = h('select', {id: 'start-workflow', name: 'workflow', required: true});
  const description = h('p', {class: 'muted', id: 'start-description'});
  const input = h('textarea', {id: 'start-input', name: 'input', rows: 8, spellcheck: false,
                               'aria-describedby': 'start-description'});
  const key = h('input', {id: 'start-key', name: 'idempotency_key', autocomplete: 'off',
                          placeholder: 'optional: the same key never starts a second run'});
  const status = h('p', {role: 'status'});
  let workflows = [];
  const choose = () => {
    const w = workflows.find((x) => x.name === select.value);
    description.textContent = w?.description ?? '';
    input.value = JSON.stringify(w?.input_example ?? {}, null, 2);
  };
  select.addEventListener('change', choose);
  const form = h('form', {class: 'start', onsubmit: async (e) => {
    e.preventDefault();
    let value;
    try {
      value = input.value.trim() === '' ? null : JSON.parse(input.value);
    } catch (err) {
      status.textContent = `The input is not JSON: ${err.message}`;
      status.className = 'error-text';
      input.focus();
      return;
    }
    const body = {input: value};
    if (key.value.trim()) body.idempotency_key = key.value.trim();
    status.textContent = 'starting…';
    status.className = '';
    try {
      const run = await api(`/v1/workflows/${encodeURIComponent(select.value)}/runs`, {method: 'POST', body});
      location.hash = `#/runs/${run.id}`;
    } catch (err) {
      status.textContent = `${err.code}: ${err.message}`;
      status.className = 'error-text';
    }
  }},
    h('label', {for: 'start-workflow'}, 'Workflow'), select, description,
    h('label', {for: 'start-input'}, 'Input (JSON)'), input,
    h('label', {for: 'start-key'}, 'Idempotency key'), key,
    h('div', {class: 'buttons'}, h('button', {type: 'submit', class: 'primary', id: 'start-submit'}, 'Start')),
    status);
  fill(view, h('div', {class: 'view-head'}, h('h1', {}, 'Start a run')), form);
  api('/v1/workflows').then((doc) => {
    workflows = doc.workflows;
    fill(select, workflows.map((w) => h('option', {value: w.name}, w.name)));
    const wanted = params.get('workflow');
    if (wanted && workflows.some((w) => w.name === wanted)) select.value = wanted;
    choose();
  }).catch((e) => {
    status.textContent = `Could not load the workflows: ${e.message}`;
    status.className = 'error-text';
  });
  return () => {};
}
