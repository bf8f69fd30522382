// Playwright drives code-server (a real VS Code) in Debian's Chromium, headless, as a user would:
// open a Python file, type, see the ghost text and accept it with Tab, see the ranked items in the
// suggest widget, change codecomplete.checkpoint in the Settings UI and see the new model serve,
// see the messages that name the fix for a bad checkpoint and a missing Python, and adapt the model
// to the workspace: a failure with its cause, a cancel, a resume that ends serving the new model.
//
//   node e2e.mjs URL RUN    (run.sh starts code-server and passes both)
//
// RUN holds checkpoints/{a,b} and project/ (Python files for the adaptation); screenshots go to
// RUN/shots, the report to RUN/report.json.
// Exit 0 when every check passed. Progress and PASS/FAIL lines go to stderr.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const [URL, RUN] = process.argv.slice(2);
const CKPT_A = `${RUN}/checkpoints/a`;
const CKPT_B = `${RUN}/checkpoints/b`;
const TYPED = '    for i in ra'; // line 9 of sample.py once "ra" is typed
const T0 = Date.now();
const report = { url: URL, checks: [], timings_ms: {} };

// VS Code DOM internals (1.100), kept in one place.
const S = {
  workbench: '.monaco-workbench',
  editor: '.editor-instance .monaco-editor',
  ghost: '.editor-instance .monaco-editor .ghost-text-decoration',
  suggestRow: '.editor-widget.suggest-widget .monaco-list-row',
  quickInput: '.quick-input-widget input',
  quickRow: '.quick-input-list .monaco-list-row',
  statusItem: '.statusbar-item[id$="codecomplete.status"]',
  toast: '.notifications-toasts .notification-toast',
  settingsSearch: '.settings-editor .suggest-input-container .monaco-editor textarea',
  settingsSearchBox: '.settings-editor .suggest-input-container',
};

const log = (msg) => console.error(`[vscode-e2e ${String(Date.now() - T0).padStart(6)}ms] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function check(name, ok, detail) {
  report.checks.push({ name, ok: !!ok, detail });
  log(`${ok ? 'PASS' : 'FAIL'} ${name}${ok ? '' : ` -- ${JSON.stringify(detail)}`}`);
}
async function waitFor(what, fn, timeout = 30000) {
  const end = Date.now() + timeout;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(100);
  }
}
async function timed(name, fn) {
  const t = Date.now();
  try { return await fn(); } finally { report.timings_ms[name] = Date.now() - t; }
}

let browser;
let page;
const shot = (name) => page?.screenshot({ path: `${RUN}/shots/${name}.png` }).catch(() => undefined);
const nbsp = (s) => s.replace(/\u00a0/g, ' ');

/** The editor's lines in document order (VS Code places them by `top`, not by DOM order). */
const editorLines = () => page.$$eval(`${S.editor} .view-lines .view-line`, (els) => els
  .map((e) => [parseFloat(e.style.top) || 0, e.innerText]).sort((a, b) => a[0] - b[0]).map(([, t]) => t.replace(/\u00a0/g, ' ')));
const ghostText = async () => nbsp((await page.locator(S.ghost).allInnerTexts()).join('')).trimEnd();
const statusText = async () => nbsp(await page.locator(S.statusItem).first().innerText());
const toasts = async () => (await page.locator(`${S.toast} .notification-list-item-message`).allInnerTexts()).map(nbsp);

async function command(title) { // through the command palette, as a user would
  await page.keyboard.press('F1');
  await page.waitForSelector(S.quickInput, { state: 'visible' });
  await page.keyboard.type(title);
  await page.waitForSelector(`${S.quickRow}[aria-label*="${title}"]`, { state: 'visible' });
  await page.keyboard.press('Enter');
}

async function setSetting(key, value) { // in the Settings UI: code-server does not see edits of settings.json
  await page.keyboard.press('Control+Comma');
  await page.locator(S.settingsSearch).first().waitFor({ state: 'visible' });
  await page.locator(S.settingsSearchBox).first().click(); // the Settings editor may be open already, focus elsewhere
  await page.keyboard.press('Control+A');
  await page.keyboard.type(key);
  const input = page.locator(`.settings-editor input[aria-label="${key}"]`).first();
  await input.waitFor({ state: 'visible' });
  await input.fill(value);
  await input.press('Tab');
}

async function backToEditor() {
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+W'); // close the Settings editor; sample.py is active again
  await page.locator(`${S.editor} .view-lines`).first().waitFor({ state: 'visible' });
  await page.locator(`${S.editor} .view-lines`).first().click();
  await page.keyboard.press('Control+End');
}

async function suggestions() { // Ctrl+Space: the suggest widget's rows, top to bottom
  await page.keyboard.press('Control+Space');
  const rows = await waitFor('the suggest widget', async () => {
    const r = await page.locator(S.suggestRow).evaluateAll((els) => els
      .sort((a, b) => Number(a.getAttribute('data-index')) - Number(b.getAttribute('data-index')))
      .map((e) => ({ label: e.querySelector('.label-name')?.textContent ?? '', detail: e.querySelector('.details-label')?.textContent ?? '' })));
    return r.length > 0 && r.every((x) => x.label) ? r : undefined;
  }, 60000);
  return rows.map((r) => ({ label: nbsp(r.label), detail: nbsp(r.detail) }));
}

try {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true, timeout: 60000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps'],
  });
  page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => log(`[pageerror] ${String(e).slice(0, 200)}`));
  await timed('workbench', async () => {
    await page.goto(URL, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector(S.workbench, { timeout: 60000 });
    await page.waitForSelector('.explorer-folders-view, .pane-body', { timeout: 60000 });
  });
  await timed('open_file', async () => {
    await page.locator(S.workbench).click({ position: { x: 700, y: 450 } }).catch(() => undefined);
    await page.keyboard.press('Control+P');
    await page.waitForSelector(S.quickInput, { state: 'visible' });
    await page.keyboard.type('sample.py');
    await page.waitForSelector(S.quickRow, { state: 'visible' });
    await page.keyboard.press('Enter');
    await page.locator(`${S.editor} .view-lines`).first().waitFor({ state: 'visible' });
  });

  // The extension starts the server (python -m codecomplete.lsp) and the status bar shows model a.
  const ready = await timed('server_ready', () => waitFor('the status bar to show model a', async () => {
    const t = await statusText();
    return t.includes('a · cpu') ? t : undefined;
  }, 120000));
  check('status bar shows the model and the device', ready.includes('a · cpu'), ready);

  // Type "ra" after "    for i in ": ghost text comes from textDocument/inlineCompletion.
  await page.locator(`${S.editor} .view-lines`).first().click();
  await page.keyboard.press('Control+End');
  const ghost = await timed('ghost_text', async () => {
    await page.keyboard.type('ra', { delay: 50 });
    return waitFor('ghost text', async () => (await ghostText()) || undefined);
  });
  report.ghost_text = ghost;
  await shot('ghost');
  check('ghost text appears while typing', ghost.length > 0, ghost);
  await page.keyboard.press('Tab');
  const accepted = await waitFor('the accepted line', async () => {
    const line = (await editorLines())[8];
    return line && line !== TYPED && !(await ghostText()) ? line : undefined;
  }, 10000).catch(() => (editorLines().then((l) => l[8])));
  report.accepted_line = accepted;
  check('Tab accepts the ghost text into the line', accepted === TYPED + ghost, { accepted, expected: TYPED + ghost });
  await shot('accepted');
  // VS Code runs the item's command on accept: the server's acceptance log records it.
  const logged = await waitFor('the acceptance log', async () => fs.readFileSync(`${RUN}/acceptance.jsonl`, 'utf8')
    .split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.event === 'accepted' && r.kind === 'inline'), 10000)
    .catch(() => undefined);
  check('accepting runs codecomplete.accepted (acceptance log)', logged?.rank === 0, logged);

  // Back to "    for i in ra"; Ctrl+Space: the suggest widget lists the items in rank order.
  await page.keyboard.press('Shift+Home');
  await page.keyboard.type('for i in ra');
  await page.keyboard.press('Escape');
  const rows = await timed('suggest_widget', () => suggestions());
  report.suggest_a = rows;
  await shot('suggest');
  const scores = rows.map((r) => parseFloat(/score (-?[\d.]+)/.exec(r.detail)?.[1] ?? 'NaN'));
  check('suggest widget lists the model\'s items, starting with the typed word', rows.length >= 1 && rows.every((r) => r.label.startsWith('ra')), rows);
  check('items are in rank order (scores descending)', scores.every((s, i) => !Number.isNaN(s) && (i === 0 || s <= scores[i - 1])), scores);
  await page.keyboard.press('Escape');
  const latency = await statusText();
  check('status bar shows the last latency', / · \d+ ms$/.test(latency), latency);

  // Settings UI: codecomplete.checkpoint -> b; the running server swaps the model, no restart.
  await timed('swap', async () => {
    await setSetting('codecomplete.checkpoint', CKPT_B);
    await shot('settings');
    const t = await waitFor('the status bar to show model b', async () => ((await statusText()).includes('b · cpu') ? statusText() : undefined), 60000);
    check('changing codecomplete.checkpoint in the Settings UI swaps the model', t.includes('b · cpu'), t);
  });
  await backToEditor();
  const rowsB = await suggestions();
  report.suggest_b = rowsB;
  check('the new model answers in the suggest widget', rowsB.length >= 1 && rowsB.every((r) => r.label.startsWith('ra')), rowsB);
  await page.keyboard.press('Escape');
  await command('CodeComplete: Show Status');
  const status = await waitFor('the status message', async () => (await toasts()).find((t) => t.startsWith('CodeComplete serves')), 20000);
  report.status_message = status;
  await sleep(600); // the toast fades in
  await shot('status');
  check('Show Status names the new checkpoint and the device', status.includes(`serves ${CKPT_B} on cpu`), status);
  await page.keyboard.press('Escape');

  // A bad checkpoint: the old model keeps serving; the message says how to fix it.
  await setSetting('codecomplete.checkpoint', `${RUN}/no-such-checkpoint`);
  const bad = await waitFor('the bad-checkpoint message', async () => (await toasts()).find((t) => t.includes('cannot load checkpoint')), 60000);
  report.bad_checkpoint_message = bad;
  await sleep(600);
  await shot('bad-checkpoint');
  const buttons = await page.locator(`${S.toast} .monaco-button`).allInnerTexts();
  check('a bad checkpoint gets a message with the fix and a Pick Checkpoint button',
    bad.includes('Fix: Pick a checkpoint folder') && buttons.some((b) => b.includes('Pick Checkpoint Folder')), { bad, buttons });
  const still = await waitFor('the status bar warning', async () => ((await statusText()).includes('b · cpu') ? statusText() : undefined), 10000);
  check('the old model keeps serving after a bad checkpoint', still.includes('b · cpu'), still);

  // Adapt to This Workspace: the workspace holds only sample.py, too small to learn from.
  const adapt = async (minutes) => {
    await command('CodeComplete: Adapt to This Workspace');
    await page.waitForSelector(S.quickInput, { state: 'visible' });
    await page.keyboard.press('Control+A');
    await page.keyboard.type(minutes);
    await page.keyboard.press('Enter');
  };
  const toast = (text, timeout = 150000) => waitFor(`a message with "${text}"`, async () => (await toasts()).find((t) => t.includes(text)), timeout);
  await backToEditor(); // the Settings editor has the focus, and F1 there does not open the palette
  await adapt('0.05');
  const failed = await toast('failed: error:');
  report.adapt_failure = failed;
  await shot('adapt-failed');
  check('a failed adaptation shows one message with its cause', failed.includes('none of the 1 .py files passed the filters'), failed);
  await page.keyboard.press('Escape');
  // With a project beside it: cancelled once fine-tuning runs, then resumed to the end.
  for (const file of fs.readdirSync(`${RUN}/project`)) fs.copyFileSync(`${RUN}/project/${file}`, `${RUN}/ws/${file}`);
  await adapt('5');
  await toast('fine-tuning');
  await shot('adapt-progress');
  await page.locator(`${S.toast} .monaco-button`, { hasText: 'Cancel' }).first().click();
  const stopped = await toast('stopped; run CodeComplete: Adapt to This Workspace again');
  check('Cancel stops the adaptation and says how to resume it', !!stopped, stopped);
  await timed('adapt', async () => {
    await adapt('0.05');
    const served = await toast('CodeComplete serves the model adapted to ws');
    report.adapt_message = served;
    const t = await waitFor('the status bar to show the adapted model', async () => ((await statusText()).includes('best · cpu') ? statusText() : undefined), 60000);
    await shot('adapted');
    const setting = JSON.parse(fs.readFileSync(`${RUN}/ws/.vscode/settings.json`, 'utf8'))['codecomplete.checkpoint'];
    check('a finished adaptation is served: the workspace setting names it and the status bar shows it',
      t.includes('best · cpu') && /\/best$/.test(setting) && served.includes('line exact match'), { t, setting, served });
  });
  await page.keyboard.press('Escape');

  // A Python that does not exist: the server cannot start, and the message names the setting.
  await setSetting('codecomplete.server.pythonPath', `${RUN}/no-such-python`);
  const noPython = await waitFor('the missing-Python message', async () => (await toasts()).find((t) => t.includes('was not found')), 60000);
  report.no_python_message = noPython;
  await sleep(600);
  await shot('no-python');
  check('a missing Python gets a message naming codecomplete.server.pythonPath',
    noPython.includes('no-such-python') && noPython.includes('Fix: Set codecomplete.server.pythonPath'), noPython);
} catch (e) {
  report.error = String(e?.stack ?? e);
  log(`ERROR ${report.error}`);
  await shot('error');
} finally {
  await browser?.close().catch(() => undefined);
}
report.timings_ms.total = Date.now() - T0;
report.ok = !report.error && report.checks.length > 0 && report.checks.every((c) => c.ok);
fs.writeFileSync(`${RUN}/report.json`, JSON.stringify(report, null, 2));
console.log(JSON.stringify({ ok: report.ok, checks: report.checks.length, failed: report.checks.filter((c) => !c.ok).map((c) => c.name) }));
process.exit(report.ok ? 0 : 1);
