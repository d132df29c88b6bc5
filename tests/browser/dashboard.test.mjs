// The dashboard in a real browser: keeld on its embedded PostgreSQL, Debian's chromium driven by
// playwright-core, and the page used as a person would (clicks, the key dialog, the keyboard). Each test
// saves a screenshot under $KEEL_BROWSER_OUT/screenshots.
//
// Environment: KEELD (the keeld binary), KEEL_BROWSER_OUT (a scratch directory), CHROMIUM (default
// /usr/bin/chromium).

import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import {request} from 'node:http';
import {mkdirSync, mkdtempSync, openSync, rmSync} from 'node:fs';
import {createServer} from 'node:net';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {after, before, test} from 'node:test';
import {chromium} from 'playwright-core';

const KEELD = process.env.KEELD;
const OUT = process.env.KEEL_BROWSER_OUT ?? mkdtempSync(join(tmpdir(), 'keel-browser-'));
const SHOTS = join(OUT, 'screenshots');
const KEY = 'browser-test-key-0123456789';
const WAIT = 20_000;  // for what the page shows: generous, the sanitizer builds are slow

let port;
let base;
let dataDir;
let keeld = null;
let browser;
let page;
const pageErrors = [];
const cspViolations = [];

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const {port: p} = s.address();
      s.close(() => resolve(p));
    });
  });
}

async function startKeeld(extra = []) {
  const log = openSync(join(OUT, 'keeld.log'), 'a');
  keeld = spawn(KEELD, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--api-key', KEY, ...extra],
                {stdio: ['ignore', log, log]});
  const exited = new Promise((resolve) => keeld.once('exit', (code, signal) => resolve({code, signal})));
  keeld.exited = exited;
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const early = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 200))]);
    if (early) throw new Error(`keeld exited at start: ${JSON.stringify(early)} (see ${OUT}/keeld.log)`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.ok) return;
    } catch { /* not listening yet */ }
  }
  throw new Error('keeld did not become ready within 90 s');
}

async function stopKeeld() {
  if (!keeld) return;
  const p = keeld;
  keeld = null;
  p.kill('SIGTERM');
  const done = await Promise.race([p.exited, new Promise((r) => setTimeout(() => r(null), 40_000))]);
  if (!done) {
    p.kill('SIGKILL');
    await p.exited;
  }
}

async function api(method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const startRun = (workflow, input) => api('POST', `/v1/workflows/${workflow}/runs`, {input});

async function waitForRun(id, predicate, what) {
  const deadline = Date.now() + WAIT;
  let run;
  while (Date.now() < deadline) {
    run = await api('GET', `/v1/runs/${id}`);
    if (predicate(run)) return run;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`run ${id} never became ${what}: ${JSON.stringify(run?.status)}`);
}

/** GET `path` sent exactly as written (fetch would resolve the dots); resolves with the status. */
function rawGet(path) {
  return new Promise((resolve, reject) => {
    const req = request({host: '127.0.0.1', port, path, method: 'GET'}, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
}

async function shot(name) {
  await page.screenshot({path: join(SHOTS, `${name}.png`), fullPage: true});
}

async function open(hash) {
  await page.goto(`${base}/${hash}`);
  await page.waitForSelector('#connection[data-state="live"]', {timeout: WAIT});
}

before(async () => {
  assert.ok(KEELD, 'KEELD names the keeld binary');
  mkdirSync(SHOTS, {recursive: true});
  dataDir = join(OUT, 'data');
  rmSync(dataDir, {recursive: true, force: true});
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  await startKeeld();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  page = await browser.newPage({viewport: {width: 1280, height: 860}});
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text());
  });
});

after(async () => {
  await browser?.close();
  await stopKeeld();
});

test('the page is served with its security headers and asks for the API key once', async () => {
  const res = await fetch(`${base}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
  assert.doesNotMatch(res.headers.get('content-security-policy'), /unsafe-inline/);
  const etag = res.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(`${base}/`, {headers: {'If-None-Match': etag}});
  assert.equal(again.status, 304);
  const script = await fetch(`${base}/ui/js/app.js`);
  assert.match(script.headers.get('content-type'), /^text\/javascript/);
  // The API itself still wants the key, however the path dresses it up as the dashboard's.
  assert.equal((await fetch(`${base}/v1/runs`)).status, 401);
  assert.equal(await rawGet('/ui/../v1/runs'), 404);
  assert.equal(await rawGet('/ui/%2e%2e/v1/runs'), 404);
  assert.equal(await rawGet('/%75i/js/app.js'), 401);
  assert.equal(await rawGet('/?x=/v1/runs'), 200);

  await page.goto(`${base}/`);
  const dialog = page.locator('#key-dialog');
  await dialog.waitFor({state: 'visible', timeout: WAIT});
  await shot('key-dialog');
  // Escape twice does not leave the page without a key: the dialog comes back.
  await page.keyboard.press('Escape');
  await page.keyboard.press('Escape');
  await dialog.waitFor({state: 'visible', timeout: WAIT});
  await page.fill('#key-input', 'not-the-key-at-all');
  await page.press('#key-input', 'Enter');
  await page.locator('#key-error').filter({hasText: 'refused'}).waitFor({timeout: WAIT});
  await page.fill('#key-input', KEY);
  await page.click('#key-dialog button[type="submit"]');
  await dialog.waitFor({state: 'hidden', timeout: WAIT});
  await page.waitForSelector('#connection[data-state="live"]', {timeout: WAIT});
  await page.waitForSelector('.tile[data-counter="running"]', {timeout: WAIT});
  // Kept for the tab's session: a reload does not ask again.
  await page.reload();
  await page.waitForSelector('#connection[data-state="live"]', {timeout: WAIT});
  await page.waitForSelector('.tile[data-counter="running"]', {timeout: WAIT});
  assert.equal(await dialog.isVisible(), false);
  assert.equal(await page.evaluate(() => localStorage.getItem('keel.apiKey')), null);
});

test('a run started elsewhere appears live, without a reload, and moves on', async () => {
  await open('#/');
  // The table's own load is done (rows, or none yet): what comes next comes from the live feed.
  await page.waitForFunction(() => document.querySelector('tbody tr') !== null ||
                                   /No runs/.test(document.querySelector('main p[role="status"]')?.textContent ?? ''),
                             null, {timeout: WAIT});
  await page.evaluate(() => { window.keelNotReloaded = true; });
  const started = Date.now();
  const run = await startRun('noop3', {});
  const row = page.locator(`tr[data-run="${run.id}"]`);
  await row.waitFor({timeout: WAIT});
  const latency = Date.now() - started;
  console.log(`# the new run showed after ${latency} ms`);
  // Within a second on a quiet machine (measured here: tens of ms); 2 s leaves room for sanitizer builds.
  assert.ok(latency < 2000, `the new run took ${latency} ms to show`);
  assert.equal(await page.evaluate(() => window.keelNotReloaded), true);
  await page.locator(`tr[data-run="${run.id}"][data-status="completed"]`).waitFor({timeout: WAIT});
  await shot('runs-live');
});

test('a countdown run shows its progress bar moving', async () => {
  const run = await startRun('countdown', {n: 6, delay_ms: 700});
  await open(`#/runs/${run.id}`);
  const seen = [];
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    const v = await page.locator('[role="progressbar"]').getAttribute('aria-valuenow', {timeout: 200})
      .catch(() => null);
    if (v !== null && seen.at(-1) !== Number(v)) {
      seen.push(Number(v));
      if (seen.length === 2) await shot('run-progress');
    }
    if (seen.length >= 3) break;
    await page.waitForTimeout(50);
  }
  assert.ok(seen.length >= 3, `the bar showed ${JSON.stringify(seen)}`);
  for (let i = 1; i < seen.length; ++i) assert.ok(seen[i] > seen[i - 1], `the bar went back: ${seen}`);
  await page.locator('.view-head .status-completed').waitFor({timeout: WAIT});
  // The sleeps between steps show on the time line.
  assert.ok(await page.locator('.bar-rest').count() >= 1);
  await shot('run-timeline');
});

test('an approval run shows Approve; clicking it completes the run', async () => {
  const run = await startRun('approval', {amount: 420, ttl_s: 600});
  await open(`#/runs/${run.id}`);
  const approve = page.locator('button.approve');
  await approve.waitFor({timeout: WAIT});
  await page.fill('input.by', 'Ada');
  await shot('run-approval');
  await approve.click();
  await page.locator('.view-head .status-completed').waitFor({timeout: WAIT});
  const done = await api('GET', `/v1/runs/${run.id}`);
  assert.deepEqual(done.output, {approved: true, by: 'Ada', amount: 420});
});

// What the approver typed is kept as it is typed: a redraw (the run parking while they type, or a reload)
// builds the field again from it.
test("the approver's name survives a redraw of the page", async () => {
  const run = await startRun('approval', {amount: 7, ttl_s: 600});
  await open(`#/runs/${run.id}`);
  await page.locator('input.by').waitFor({timeout: WAIT});
  await page.fill('input.by', 'Grace');
  await page.reload();
  await page.locator('input.by').waitFor({timeout: WAIT});
  assert.equal(await page.locator('input.by').inputValue(), 'Grace');
  await page.locator('button.approve').click();
  await page.locator('.view-head .status-completed').waitFor({timeout: WAIT});
  const done = await api('GET', `/v1/runs/${run.id}`);
  assert.equal(done.output.by, 'Grace');
});

test('a failed order run shows the failed step and its error', async () => {
  const run = await startRun('order', {card: 'declined'});
  await waitForRun(run.id, (r) => r.status === 'failed', 'failed');
  await open(`#/runs/${run.id}`);
  await page.locator('.failed-step').filter({hasText: 'charge'}).waitFor({timeout: WAIT});
  assert.match(await page.locator('.error-message').textContent(), /the card was declined/);
  assert.equal(await page.locator('.tl-row[data-status="failed"] .tl-name').textContent(), '1charge');
  await shot('run-failed');
  // Retry: the run goes on from the earliest step its compensation undid (so the history says rewound),
  // and fails at the charge again: the card is still declined.
  await page.locator('#retry-run').click();
  await page.locator('.log tr[data-kind="run_rewound"]').waitFor({timeout: WAIT});
  const retried = await waitForRun(run.id, (r) => r.status === 'failed' && r.history.some((h) => h.what === 'rewound'),
                                   'retried and failed again');
  assert.equal(retried.error.step, 'charge');
});

test('cancel works from the page, after a confirmation', async () => {
  const run = await startRun('approval', {amount: 7, ttl_s: 600});
  await open(`#/runs/${run.id}`);
  await page.locator('#cancel-run').click();
  await page.locator('#confirm-dialog').waitFor({state: 'visible', timeout: WAIT});
  await page.locator('#confirm-no').click();  // first thought better of it
  await page.waitForTimeout(300);
  assert.equal((await api('GET', `/v1/runs/${run.id}`)).status, 'waiting');
  await page.locator('#cancel-run').click();
  await page.locator('#confirm-yes').click();
  await page.locator('.view-head .status-cancelled').waitFor({timeout: WAIT});
  await shot('run-cancelled');
  assert.equal((await api('GET', `/v1/runs/${run.id}`)).status, 'cancelled');
});

test('rewinding a completed run to a step runs it again from there', async () => {
  const run = await startRun('countdown', {n: 2, delay_ms: 10});
  await waitForRun(run.id, (r) => r.status === 'completed', 'completed');
  await open(`#/runs/${run.id}`);
  await page.selectOption('#rewind-step', '2');
  await page.locator('#rewind-run').click();
  await page.locator('#confirm-yes').click();
  const again = await waitForRun(run.id, (r) => r.status === 'completed' && r.history.some((h) => h.what === 'rewound'),
                                 'rewound and completed again');
  assert.equal(again.output.done, 2);
  await page.locator('.log tr[data-kind="run_rewound"]').waitFor({timeout: WAIT});
  await shot('run-rewound');
});

test('the inbox lists waiting decisions with a countdown, and deciding there resumes the run', async () => {
  const soon = await startRun('approval', {amount: 1, ttl_s: 300});
  const later = await startRun('approval', {amount: 2, ttl_s: 3000});
  await waitForRun(later.id, (r) => r.status === 'waiting', 'waiting');
  await waitForRun(soon.id, (r) => r.status === 'waiting', 'waiting');
  await open('#/inbox');
  const card = page.locator(`li.card[data-run="${soon.id}"]`);
  await card.waitFor({timeout: WAIT});
  await page.locator(`li.card[data-run="${later.id}"]`).waitFor({timeout: WAIT});
  // Soonest expiry first.
  const order = await page.locator('li.card').evaluateAll((cards) => cards.map((c) => c.dataset.run));
  assert.ok(order.indexOf(soon.id) < order.indexOf(later.id), `inbox order ${order}`);
  const first = await card.locator('.countdown').textContent();
  assert.match(first, /left$/);
  await page.waitForTimeout(1200);
  assert.notEqual(await card.locator('.countdown').textContent(), first, 'the countdown moves');
  await page.locator('#inbox-count').waitFor({state: 'visible', timeout: WAIT});  // the counters' badge
  assert.ok(Number(await page.locator('#inbox-count').textContent()) >= 2);
  await shot('inbox');
  await card.locator('button.reject').click();
  const done = await waitForRun(soon.id, (r) => r.status === 'completed', 'completed');
  assert.equal(done.output.approved, false);
  await card.waitFor({state: 'detached', timeout: WAIT});
});

test('a parent links to its child runs and each child back to its parent', async () => {
  const run = await startRun('batch', {n: 3, delay_ms: 50});
  await open(`#/runs/${run.id}`);
  await page.locator('.view-head .status-completed').waitFor({timeout: WAIT});
  const links = page.locator('ul.children a');
  await page.waitForFunction(() => document.querySelectorAll('ul.children a').length === 3, null, {timeout: WAIT});
  // The children's events are in the parent's log too (the whole tree on one stream).
  assert.ok(await page.locator('.log tbody tr td a').count() > 0);
  await shot('run-children');
  await links.first().click();
  await page.waitForURL(/#\/runs\//, {timeout: WAIT});
  await page.locator('.view-head h1').filter({hasText: 'countdown'}).waitFor({timeout: WAIT});
  await page.locator('a.parent-link').click();
  await page.waitForURL(new RegExp(`#/runs/${run.id}$`), {timeout: WAIT});
});

test('a run of a registered workflow starts from the form', async () => {
  await open('#/start');
  await page.locator('#start-workflow option[value="order"]').waitFor({state: 'attached', timeout: WAIT});
  await page.selectOption('#start-workflow', 'order');
  assert.match(await page.inputValue('#start-input'), /"card"/);  // the workflow's example input
  await page.fill('#start-input', '{"card": "visa"');
  await page.click('#start-submit');
  await page.locator('form.start .error-text').filter({hasText: 'not JSON'}).waitFor({timeout: WAIT});
  await page.fill('#start-input', '{"card": "visa"}');
  await page.click('#start-submit');
  await page.waitForURL(/#\/runs\/[0-9a-f-]{36}$/, {timeout: WAIT});
  const id = page.url().split('/').pop();
  await page.locator('.view-head .status-completed').waitFor({timeout: WAIT});
  assert.deepEqual((await api('GET', `/v1/runs/${id}`)).input, {card: 'visa'});
  await shot('start-run');
});

test('the runs table filters by workflow and status, and is reachable from the keyboard', async () => {
  await open('#/?workflow=order&status=failed');
  await page.locator('tbody tr').first().waitFor({timeout: WAIT});
  const statuses = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.status));
  assert.ok(statuses.length > 0 && statuses.every((s) => s === 'failed'), `statuses ${statuses}`);
  await shot('runs-filtered');
  await open('#/');
  await page.locator('tbody tr a').first().waitFor({timeout: WAIT});
  let reached = false;
  for (let i = 0; i < 40 && !reached; ++i) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.closest('tbody') !== null &&
                                        document.activeElement?.tagName === 'A');
  }
  assert.ok(reached, 'Tab reaches the first run link');
  await page.keyboard.press('Enter');
  await page.waitForURL(/#\/runs\//, {timeout: WAIT});
  // Every control has a name a screen reader can say.
  await page.locator('.view-head h1').waitFor({timeout: WAIT});
  await shot('run-by-keyboard');
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => el.offsetParent !== null)
    .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
    .map((el) => el.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, []);
});

test('the status filter finds unclaimable runs and says why they wait', async () => {
  // Runs of noop3 due tomorrow, then a keeld that runs no examples (a deployment that dropped noop3):
  // nothing live can claim them.
  const runAt = new Date(Date.now() + 86_400_000).toISOString();
  const stuck = await api('POST', '/v1/workflows/noop3/runs', {input: {}, run_at: runAt});
  assert.equal((await api('GET', '/v1/runs?status=unclaimable')).runs.length, 0);
  await stopKeeld();
  await startKeeld(['--no-examples']);
  try {
    await open('#/');
    await page.locator('tbody tr').first().waitFor({timeout: WAIT});
    await page.selectOption('#filter-status', 'unclaimable');
    await page.waitForURL(/status=unclaimable/, {timeout: WAIT});
    const row = page.locator(`tr[data-run="${stuck.id}"][data-reason="unclaimable"]`);
    await row.waitFor({timeout: WAIT});
    assert.match(await row.locator('td.now').textContent(),
                 /no live worker has registered workflow 'noop3' version 1/);
    const statuses = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.status));
    assert.ok(statuses.every((s) => s === 'queued'), `statuses ${statuses}`);
    // The option is offered by name, with the dead-lettered one.
    assert.equal(await page.locator('#filter-status option[value="dead_lettered"]').textContent(), 'dead-lettered');
    await shot('runs-unclaimable');
    await row.locator('a').click();
    await page.locator('.unclaimable').filter({hasText: "workflow 'noop3' version 1"}).waitFor({timeout: WAIT});
    await api('POST', `/v1/runs/${stuck.id}/cancel`);
  } finally {
    await stopKeeld();
    await startKeeld();
  }
});

test('a run held back by its throttle says what it waits for, and shows its keys', async () => {
  const paced = {input: {}, throttle_key: 'browser', throttle_limit: 1, throttle_window_ms: 600_000,
                 fairness_key: 'acme', fairness_weight: 2};
  await api('POST', '/v1/workflows/noop3/runs', paced);
  const second = await api('POST', '/v1/workflows/noop3/runs', paced);
  try {
    await open(`#/runs/${second.id}`);
    await page.locator('.waiting-for.blocked').filter({hasText: 'throttle'}).filter({hasText: '“browser”'})
      .waitFor({timeout: WAIT});
    const facts = await page.locator('dl.facts').textContent();
    assert.match(facts, /Throttle\s*browser \(1 per 10 min 0 s\)/);
    assert.match(facts, /Fairness key\s*acme \(weight 2\)/);
    await page.locator('tr[data-kind="run_blocked"]').filter({hasText: 'throttle of key “browser”'})
      .waitFor({timeout: WAIT});
    await shot('run-throttled');
  } finally {
    await api('POST', `/v1/runs/${second.id}/cancel`);
  }
});

test('counters show runs by status, steps per second and queue depth', async () => {
  await open('#/');
  const steps = page.locator('.tile[data-counter="steps"] .value');
  await steps.waitFor({timeout: WAIT});
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline && !(Number(await steps.textContent()) > 0)) await page.waitForTimeout(200);
  assert.ok(Number(await steps.textContent()) > 0, 'steps ran in the last minute');
  assert.match(await page.locator('.tile[data-counter="queue"] .value').textContent(), /^\d/);
  await shot('runs');
});

test('reads well in a narrow window', async () => {
  await page.setViewportSize({width: 390, height: 800});
  await open('#/');
  await page.locator('tbody tr').first().waitFor({timeout: WAIT});
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow} px wider than the window`);
  await shot('runs-narrow');
  await page.setViewportSize({width: 1280, height: 860});
});

test('the page reconnects by itself after keeld restarts, and misses nothing', async () => {
  await open('#/');
  await stopKeeld();
  await page.waitForSelector('#connection[data-state="reconnecting"]', {timeout: WAIT});
  await shot('reconnecting');
  // A run starts and ends while keeld is back but the page cannot reach its feed yet: it must show anyway.
  const blocked = '**/v1/events*';
  await page.route(blocked, (route) => route.abort());
  await startKeeld();
  const run = await startRun('noop3', {});
  await waitForRun(run.id, (r) => r.status === 'completed', 'completed');
  await page.unroute(blocked);
  await page.waitForSelector('#connection[data-state="live"]', {timeout: 30_000});
  await page.locator(`tr[data-run="${run.id}"][data-status="completed"]`).waitFor({timeout: WAIT});
  await shot('reconnected');
});

test('no script error and no Content-Security-Policy violation on any page', () => {
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(cspViolations, []);
});
