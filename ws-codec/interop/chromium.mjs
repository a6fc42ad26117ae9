// Interop with headless Chromium's native WebSocket against examples/echo_std.
// usage: node chromium.mjs BIN_DIR   (CHROMIUM=/usr/bin/chromium by default; never downloads)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { chromium } from 'playwright-core';

const bin = process.argv[2] ?? '../../target/release/examples';
const port = 20000 + Math.floor(Math.random() * 20000);
// WS_STATS: the echo prints each connection's wire byte counts when it ends
const echo = spawn(`${bin}/echo_std`, [`127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WS_STATS: '1' } });
let echoErr = '';
echo.stderr.on('data', (d) => { echoErr += d; process.stderr.write(d); });
for (let i = 0; i < 100; i++) {
  const ok = await new Promise((r) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true); });
    s.on('error', () => r(false));
  });
  if (ok) break;
  await new Promise((r) => setTimeout(r, 100));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = 0, passed = 0;
try {
  const page = await browser.newPage();
  const results = await page.evaluate(async (url) => {
    const out = [];
    const ws = new WebSocket(url, ['chat']);
    ws.binaryType = 'arraybuffer';
    const queue = [];
    let waiter = null;
    ws.onmessage = (e) => { if (waiter) { const w = waiter; waiter = null; w(e.data); } else queue.push(e.data); };
    const next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => { waiter = r; });
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    out.push(['subprotocol chat', ws.protocol === 'chat', ws.protocol]);
    for (const t of ['hello chromium', '', 'unicode € 😀 ' + 'é'.repeat(70000)]) {
      ws.send(t);
      const got = await next();
      out.push([`text echo ${t.length} chars`, got === t, typeof got]);
    }
    for (const size of [10, 200, 70000, 4 << 20]) {
      const buf = new Uint8Array(size);
      for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) & 0xff;
      ws.send(buf);
      const got = new Uint8Array(await next());
      let same = got.length === size;
      for (let i = 0; same && i < size; i++) same = got[i] === buf[i];
      out.push([`binary echo ${size} bytes`, same, got.length]);
    }
    const closed = new Promise((r) => { ws.onclose = (e) => r(e); });
    ws.close(4001, 'bye from chromium');
    const e = await closed;
    out.push(['clean close echoes code', e.wasClean && e.code === 4001, `${e.wasClean} ${e.code} ${e.reason}`]);
    return out;
  }, `ws://127.0.0.1:${port}/`);
  // Chromium offers permessage-deflate on every connection; the echo example accepts it (built
  // with the `deflate` feature) and compresses every message. Compressed both ways is proven by
  // the echo's wire byte counts for this connection.
  const sent = await page.evaluate(async (url) => {
    const out = [];
    const ws = new WebSocket(url);
    const queue = [];
    let waiter = null;
    ws.onmessage = (e) => { if (waiter) { const w = waiter; waiter = null; w(e.data); } else queue.push(e.data); };
    const next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => { waiter = r; });
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    out.push(['permessage-deflate negotiated', ws.extensions.startsWith('permessage-deflate'), ws.extensions]);
    let chars = 0;
    for (let round = 0; round < 3; round++) {
      const json = JSON.stringify({ type: 'cf_agent_state', state: { round, items: Array.from({ length: 2000 }, (_, i) => ({ id: i, text: `token ${i} of the stream` })) } });
      ws.send(json);
      const back = await next();
      chars += json.length;
      out.push([`compressed JSON echo round ${round} (${json.length} chars)`, back === json, String(back).length]);
    }
    const closed = new Promise((r) => { ws.onclose = r; });
    ws.close(1000);
    await closed;
    return { out, chars };
  }, `ws://127.0.0.1:${port}/deflate-check`);
  results.push(...sent.out);
  let stats = null;
  for (let i = 0; i < 50 && !stats; i++) {
    const m = /stats \/deflate-check frames_received=\d+ bytes_received=(\d+) bytes_sent=(\d+)/.exec(echoErr);
    if (m) stats = { received: Number(m[1]), sent: Number(m[2]) };
    else await new Promise((r) => setTimeout(r, 100));
  }
  results.push([
    `compressed both ways (${sent.chars} chars each way; server received ${stats?.received} B, sent ${stats?.sent} B)`,
    stats !== null && stats.received * 5 < sent.chars && stats.sent * 5 < sent.chars,
    JSON.stringify(stats),
  ]);
  for (const [name, ok, detail] of results) {
    if (ok) { passed++; console.log(`ok   chromium ${name}`); } else { failed++; console.log(`FAIL chromium ${name} ${detail}`); }
  }
} finally {
  await browser.close();
  echo.kill();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
