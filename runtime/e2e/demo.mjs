// Browser end-to-end test of the `agentwire serve` demo page in headless Chromium.
//
// usage: node demo.mjs AGENTWIRE_BIN DATA_DIR
//   CHROMIUM=/usr/bin/chromium by default; playwright-core never downloads a browser.
//
// The test owns the server process: it starts `agentwire serve` on a free port, kills it
// (SIGKILL, as a crash) and starts it again on the same port and data directory to check
// that the page reconnects by itself. Everything is observed through the page's UI (the
// element ids of runtime/src/demo/index.html). One `ok - …` line per check; exit status 1
// on the first failure (with the pages' state and the server log printed).
import { spawn } from 'node:child_process';
import net from 'node:net';
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
  if (await text(p1, 'task-error')) throw new Error('task: error shown: ' + await text(p1, 'task-error'));
  ok(`task: output grew in ${runningLens.length} steps while running, then "done" with the full ${final.length}-char text`);

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
