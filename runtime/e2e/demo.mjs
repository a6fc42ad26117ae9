// Browser end-to-end test of the `agentwire serve` demo page in headless Chromium.
//
// usage: node demo.mjs AGENTWIRE_BIN DATA_DIR
//   CHROMIUM=/usr/bin/chromium by default; playwright-core never downloads a browser.
//
// The test owns the server process: it starts `agentwire serve` on a free port, kills it
// (SIGKILL, as a crash) and starts it again on the same port and data directory to check
// that the page reconnects by itself. Everything is observed through the page's UI (the
// element ids of runtime/src/demo/index.html). One `ok - …` line per check; exit status 1
// on the first failure (with the pages' state and the server log printed). Screenshots of
// the page, wide and narrow, go to runtime/e2e/artifacts/ (git-ignored; E2E_ARTIFACTS
// overrides the folder).
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [bin, dataDir] = process.argv.slice(2);
if (!bin || !dataDir) {
  console.error('usage: node demo.mjs AGENTWIRE_BIN DATA_DIR');
  process.exit(2);
}
// Generous: the CI machine has 2 cores and other jobs.
const T = Number(process.env.E2E_TIMEOUT_MS ?? 30000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------- the server process ----------
let server = null;
let serverLog = '';
async function startServer(port) {
  const child = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`, '--data', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => { serverLog += d; });
  child.stderr.on('data', (d) => { serverLog += d; });
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  server = child;
  const deadline = Date.now() + T;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`agentwire serve exited (${JSON.stringify(exited)})`);
    if (serverLog.includes('demo at http://')) return;
    await sleep(50);
  }
  throw new Error('agentwire serve did not report its address in time');
}
async function killServer() {
  const child = server;
  server = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

// ---------- checks ----------
let passed = 0;
const pages = [];
function ok(name) {
  passed++;
  console.log(`ok - ${name}`);
}
async function snapshot(page) {
  return page.evaluate(() => {
    const t = (id) => document.getElementById(id)?.textContent ?? '(missing)';
    return {
      counterStatus: t('counter-status'), count: t('count'), counterError: t('counter-error'),
      chatStatus: t('chat-status'), presence: t('presence'), chatError: t('chat-error'),
      chatLog: t('chat-log').slice(-300),
      taskStatus: t('task-status'), taskOutput: t('task-output').slice(-200),
      taskMeta: t('task-meta'), taskError: t('task-error'), globalError: t('global-error'),
      tabs: t('tabs'), compression: t('compression'), countdown: t('countdown-chunks'),
      countdownResult: t('countdown-result'), taskRate: t('task-rate'), frames: t('frame-count'),
    };
  }).catch((e) => `(page unavailable: ${e.message})`);
}
// Waits until `fn(arg)` is truthy in the page; on timeout fails with `what`.
async function until(page, what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout: T, polling: 50 })).jsonValue();
  } catch (e) {
    throw new Error(`timed out (${T} ms) waiting for: ${what}\n  ${e.message.split('\n')[0]}`);
  }
}
const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
const visible = (page, id) => page.isVisible('#' + id);

let browser;
let exitCode = 0;
try {
  const port = await freePort();
  await startServer(port);
  const base = `http://127.0.0.1:${port}/`;

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-dev-shm-usage',
      '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  // Two browser contexts: two independent "users" (separate storage, separate connections).
  const pageErrors = [];
  for (const who of ['page 1', 'page 2']) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(T);
    page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
    pages.push(page);
  }
  const [p1, p2] = pages;
  for (const p of pages) {
    await p.goto(base, { timeout: T });
    await until(p, 'counter status "connected"',
      () => document.getElementById('counter-status').textContent === 'connected');
    await until(p, 'a numeric count',
      () => /^-?\d+$/.test(document.getElementById('count').textContent));
  }
  ok('the page loads in two browser contexts and both show "connected" and a count');

  // The header: the connected-tab count (Presence) and the negotiated compression.
  for (const p of pages) {
    await until(p, 'the header says "2 tabs connected"',
      () => document.getElementById('tabs').textContent === '2 tabs connected');
    await until(p, 'the header says compression is on',
      () => /^compression on \(permessage-deflate\)$/.test(document.getElementById('compression').textContent));
  }
  ok('header: both pages show "2 tabs connected" and "compression on (permessage-deflate)"');

  // The frame log shows the connect sequence the server sent on the counter socket.
  await until(p1, 'the frame log holds the counter socket\'s cf_agent_identity frame', () =>
    [...document.querySelectorAll('#frames div.in')].some((d) =>
      d.querySelector('.s').textContent === 'counter' &&
      d.querySelector('.t').textContent.includes('"type":"cf_agent_identity"')));

  // 1. Counter: a click on page 1 shows on page 2.
  const before = Number(await text(p1, 'count'));
  await p1.click('#inc');
  await until(p2, `count ${before + 1} on page 2`,
    (n) => document.getElementById('count').textContent === String(n), before + 1);
  await until(p1, `count ${before + 1} on page 1`,
    (n) => document.getElementById('count').textContent === String(n), before + 1);
  await p2.click('#inc');
  await p2.click('#inc');
  await until(p1, `count ${before + 3} on page 1`,
    (n) => document.getElementById('count').textContent === String(n), before + 3);
  ok(`counter: +1 on page 1 shows ${before + 1} on page 2, +2 on page 2 shows ${before + 3} on page 1`);
  // … and the call this tab sent (↑), with its reply and the state broadcast (↓).
  await until(p1, 'the frame log holds the increment call (↑) and its reply (↓)', () => {
    const rows = [...document.querySelectorAll('#frames div')].map((d) =>
      [d.className, d.querySelector('.s').textContent, d.querySelector('.t').textContent]);
    return rows.some(([c, s, t]) => c === 'out' && s === 'counter' && t.includes('"method":"increment"')) &&
      rows.some(([c, s, t]) => c === 'in' && s === 'counter' && t.includes('"type":"rpc"') && t.includes('"done":true'));
  });
  ok('frame log: the connect frames, the increment call sent and its reply are listed');

  // Streaming RPC: countdown(4, 150) shows its chunks one by one, then the result.
  await p1.fill('#countdown-n', '4');
  await p1.fill('#countdown-ms', '150');
  await p1.evaluate(() => {
    window.__e2eChunks = [];
    const list = document.getElementById('countdown-chunks');
    new MutationObserver(() => window.__e2eChunks.push(list.childElementCount))
      .observe(list, { childList: true });
  });
  await p1.click('#countdown-run');
  await until(p1, 'the countdown result "liftoff"', () =>
    /^result "liftoff" after \d+ ms, 4 chunks$/.test(document.getElementById('countdown-result').textContent));
  const chunks = await p1.evaluate(() => [...document.querySelectorAll('#countdown-chunks li')].map((li) =>
    [li.querySelector('b').textContent, Number(li.querySelector('small').textContent.match(/\d+/)[0])]));
  const grew = await p1.evaluate(() => window.__e2eChunks.filter((n) => n > 0));
  if (JSON.stringify(chunks.map((c) => c[0])) !== '["4","3","2","1"]') {
    throw new Error('countdown chunks: ' + JSON.stringify(chunks));
  }
  // The server sleeps 150 ms after each chunk: 3 gaps between the first and the last.
  if (chunks[3][1] - chunks[0][1] < 300 || JSON.stringify(grew) !== '[1,2,3,4]') {
    throw new Error(`countdown chunks did not arrive one by one: ${JSON.stringify(chunks)} ${JSON.stringify(grew)}`);
  }
  ok(`streaming RPC: countdown(4, 150) chunks 4,3,2,1 appeared one by one (at ${chunks.map((c) => c[1]).join(', ')} ms), then "liftoff"`);

  // 2. Chat: both join, presence lists both, a message from page 1 reaches page 2.
  const names = ['alice', 'bob'];
  for (const [i, p] of pages.entries()) {
    await p.fill('#name', names[i]);
    await p.click('#join');
    await until(p, `chat status "joined as ${names[i]}"`,
      (n) => document.getElementById('chat-status').textContent === 'joined as ' + n, names[i]);
  }
  for (const p of pages) {
    await until(p, 'presence lists alice and bob', () => {
      const users = [...document.querySelectorAll('#presence li')].map((li) => li.textContent);
      return users.includes('alice') && users.includes('bob');
    });
  }
  ok('chat: alice (page 1) and bob (page 2) joined; both pages list both in presence');
  await until(p1, 'page 1 log says bob joined',
    () => [...document.querySelectorAll('#chat-log div')].some((d) => d.textContent === 'bob joined'));
  const msg = `hello from page 1 #${Date.now()}`;
  await p1.fill('#text', msg);
  await p1.click('#send');
  for (const p of [p2, p1]) {
    await until(p, `the message "${msg}" from alice in the log`, (m) =>
      [...document.querySelectorAll('#chat-log div')].some((d) =>
        d.querySelector('.who')?.textContent === 'alice: ' && d.textContent.includes(m)), msg);
  }
  ok('chat: a message sent on page 1 appears on page 2 (and on page 1) as "alice: …"');

  // 3. Task: output streams into the page token by token, then "done".
  await p1.evaluate(() => {
    // Records every change of the output while it streams, with the status at that moment.
    window.__e2eOutput = [];
    const out = document.getElementById('task-output');
    new MutationObserver(() => {
      window.__e2eOutput.push({
        len: out.textContent.length,
        status: document.getElementById('task-status').textContent,
      });
    }).observe(out, { childList: true, characterData: true, subtree: true });
  });
  const prompt = 'Explain streaming in the browser';
  await p1.fill('#prompt', prompt);
  await p1.click('#task-form button[type=submit]');
  await until(p1, 'task status "task N running"',
    () => /^task \d+ running$/.test(document.getElementById('task-status').textContent));
  await until(p1, 'partial output while the task runs', () => {
    const status = document.getElementById('task-status').textContent;
    const out = document.getElementById('task-output').textContent;
    return status.endsWith(' running') && out.length > 0 && out.startsWith('Task ');
  });
  const partial = await text(p1, 'task-output');
  ok(`task: partial output visible while running (${JSON.stringify(partial.slice(0, 40))}…)`);
  await until(p1, 'task status "task N done"',
    () => /^task \d+ done$/.test(document.getElementById('task-status').textContent));
  const final = await text(p1, 'task-output');
  const changes = await p1.evaluate(() => window.__e2eOutput);
  const runningLens = [...new Set(changes.filter((c) => c.status.endsWith(' running') && c.len > 0)
    .map((c) => c.len))];
  const increasing = runningLens.every((l, i) => i === 0 || l > runningLens[i - 1]);
  if (!final.includes(`received the prompt "${prompt}"`) || !final.endsWith('then the end.')) {
    throw new Error(`task: unexpected final output ${JSON.stringify(final)}`);
  }
  if (runningLens.length < 5 || !increasing) {
    throw new Error(`task: output did not grow token by token: lengths ${JSON.stringify(runningLens)}`);
  }
  await until(p1, 'task meta "… done, K/K tokens"',
    () => /: done, (\d+)\/\1 tokens/.test(document.getElementById('task-meta').textContent));
  const progress = await p1.evaluate(() => {
    const p = document.getElementById('task-progress');
    return { value: p.value, max: p.max, rate: document.getElementById('task-rate').textContent };
  });
  if (progress.value !== progress.max || progress.max < 5 || !/^\d+(\.\d)? tokens\/s$/.test(progress.rate)) {
    throw new Error('task progress: ' + JSON.stringify(progress));
  }
  if (await text(p1, 'task-error')) throw new Error('task: error shown: ' + await text(p1, 'task-error'));
  ok(`task: output grew in ${runningLens.length} steps while running, then "done" with the full ${final.length}-char text`);
  ok(`task: the progress bar is full (${progress.value}/${progress.max}) and shows ${progress.rate}`);

  // Traffic: the server's figures, polled from /stats.
  await until(p1, 'traffic figures from the server', () =>
    /^\d+ \/ \d+$/.test(document.getElementById('traffic-messages').textContent) &&
    /\d/.test(document.getElementById('traffic-wire').textContent) &&
    /%\)$/.test(document.getElementById('traffic-saved').textContent));
  const saved = await text(p1, 'traffic-saved');
  ok(`traffic: the server's message and byte counts are shown (saved by compression: ${saved})`);

  // Screenshots (wide, then narrow) and the narrow layout's fit.
  const artifacts = process.env.E2E_ARTIFACTS ?? fileURLToPath(new URL('./artifacts/', import.meta.url));
  mkdirSync(artifacts, { recursive: true });
  await p1.setViewportSize({ width: 1280, height: 900 });
  await p1.screenshot({ path: `${artifacts}/demo-wide.png`, fullPage: true });
  await p1.setViewportSize({ width: 390, height: 844 });
  const fit = await p1.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
    columns: getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length,
  }));
  if (fit.scroll > fit.width || fit.columns !== 1) {
    throw new Error('the narrow layout does not fit: ' + JSON.stringify(fit));
  }
  await p1.screenshot({ path: `${artifacts}/demo-narrow.png`, fullPage: true });
  await p1.setViewportSize({ width: 1280, height: 720 });
  ok(`layout: one column without horizontal scrolling at 390 px; screenshots in ${artifacts}`);

  // 4./5. Restart: kill the server; the pages show it; start it again; they reconnect.
  const beforeRestart = Number(await text(p1, 'count'));
  await killServer();
  for (const p of pages) {
    await until(p, 'counter status red "disconnected/reconnecting"', () => {
      const s = document.getElementById('counter-status');
      return s.classList.contains('bad') && /disconnected|reconnecting/.test(s.textContent);
    });
    await until(p, 'a visible "Connection lost … Reconnecting" message', () =>
      /Connection lost .*Reconnecting/.test(document.getElementById('counter-error').textContent));
    await until(p, 'chat status "disconnected" with a message', () =>
      document.getElementById('chat-status').textContent.startsWith('disconnected') &&
      /Chat connection closed/.test(document.getElementById('chat-error').textContent));
    if (!(await visible(p, 'counter-error')) || !(await visible(p, 'chat-error'))) {
      throw new Error('the error messages are not visible');
    }
    if ((await text(p, 'count')) !== String(beforeRestart)) {
      throw new Error(`the count changed while disconnected: ${await text(p, 'count')}`);
    }
  }
  // An action while disconnected is refused with a message, not silently dropped.
  await p1.click('#inc');
  await until(p1, '"Not connected" message after clicking +1 while down', () =>
    /Not connected/.test(document.getElementById('counter-error').textContent));
  // A task request while the server is down fails with a message.
  await p2.click('#task-form button[type=submit]');
  await until(p2, 'task error "Could not start the task"', () =>
    /Could not start the task/.test(document.getElementById('task-error').textContent) &&
    document.getElementById('task-status').textContent === 'failed');
  if (!(await visible(p2, 'task-error'))) throw new Error('the task error is not visible');
  ok('server down: both pages show a red "disconnected/reconnecting" status and visible error messages (counter, chat, task); the count stays');

  await sleep(1500); // let the backoff grow a little before the server comes back
  await startServer(port);
  for (const p of pages) {
    await until(p, 'counter status "reconnected" after the restart', () => {
      const s = document.getElementById('counter-status');
      return s.classList.contains('ok') && /connected/.test(s.textContent);
    });
    await until(p, `count ${beforeRestart} (from before the restart)`,
      (n) => document.getElementById('count').textContent === String(n), beforeRestart);
    await until(p, 'the connection error message cleared',
      () => document.getElementById('counter-error').textContent === '');
    await until(p, '"2 tabs connected" again after the restart',
      () => document.getElementById('tabs').textContent === '2 tabs connected');
  }
  ok(`restart: same port and data dir; both pages reconnected by themselves and show the count ${beforeRestart} from before`);
  await p2.click('#inc');
  for (const p of pages) {
    await until(p, `count ${beforeRestart + 1} after +1 following the reconnect`,
      (n) => document.getElementById('count').textContent === String(n), beforeRestart + 1);
  }
  ok(`restart: +1 on page 2 after the reconnect shows ${beforeRestart + 1} on both pages`);

  // Chat after the restart: rejoining shows the message from before (history in SQLite).
  await p2.click('#join');
  await until(p2, 'chat status "joined as bob" after rejoining',
    () => document.getElementById('chat-status').textContent === 'joined as bob');
  await until(p2, 'the earlier message in the history', (m) =>
    [...document.querySelectorAll('#chat-log div')].some((d) => d.textContent.includes(m)), msg);
  ok('restart: rejoining the chat shows the message sent before the restart');

  if (pageErrors.length) throw new Error('uncaught page errors: ' + pageErrors.join('; '));
  for (const p of pages) {
    const g = await text(p, 'global-error');
    if (g) throw new Error('page error shown: ' + g);
  }
  ok('no uncaught errors in either page');


  // agentwire serve accepts permessage-deflate, which Chromium offers on every socket
  const ext = await pages[0].evaluate(() => new Promise((resolve, reject) => {
    const w = new WebSocket(location.origin.replace(/^http/, 'ws') + '/agents/counter-agent/demo');
    w.onopen = () => { resolve(w.extensions); w.close(); };
    w.onerror = () => reject(new Error('socket failed'));
  }));
  if (!ext.startsWith('permessage-deflate')) throw new Error('extensions: ' + JSON.stringify(ext));
  ok(`the page's sockets negotiate compression (${ext})`);
  console.log(`${passed} passed, 0 failed`);
} catch (e) {
  exitCode = 1;
  console.log(`not ok - ${e.message}`);
  for (const [i, p] of pages.entries()) {
    console.log(`# page ${i + 1}: ${JSON.stringify(await snapshot(p))}`);
  }
  console.log('# server log:\n' + serverLog.replace(/^/gm, '#   '));
  console.log(`${passed} passed, 1 failed`);
} finally {
  if (browser) await browser.close().catch(() => {});
  await killServer().catch(() => {});
}
process.exit(exitCode);
