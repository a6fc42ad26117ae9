// Interop with Node `ws`: (A) ws as the client of examples/echo_std, (B) ws as the server for
// examples/client. usage: node node.mjs BIN_DIR   (BIN_DIR holds the release examples)
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';

const bin = process.argv[2] ?? '../../target/release/examples';
let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
}

async function startEcho() {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const proc = spawn(`${bin}/echo_std`, [`127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (let i = 0; i < 100; i++) {
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      await once(ws, 'open');
      ws.close();
      await once(ws, 'close');
      return { proc, port };
    } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  throw new Error('echo_std did not start');
}

function nextMessage(ws) {
  return new Promise((resolve, reject) => {
    const onError = (e) => reject(e);
    ws.once('error', onError);
    ws.once('message', (data, isBinary) => {
      ws.removeListener('error', onError);
      resolve({ data, isBinary });
    });
  });
}

async function partA() {
  const { proc, port } = await startEcho();
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, ['chat', 'other']);
    await once(ws, 'open');
    check('A subprotocol selected', ws.protocol === 'chat', ws.protocol);
    for (const text of ['hello', '', 'héllo € 😀 ' + 'ä'.repeat(1000)]) {
      ws.send(text);
      const m = await nextMessage(ws);
      check(`A text echo (${text.length} chars)`, !m.isBinary && m.data.toString('utf8') === text);
    }
    for (const size of [1, 125, 126, 65535, 65536, 1 << 20, 8 << 20]) {
      const buf = randomBytes(size);
      ws.send(buf);
      const m = await nextMessage(ws);
      check(`A binary echo ${size} bytes`, m.isBinary && Buffer.compare(m.data, buf) === 0);
    }
    // a fragmented text message with a code point split across fragments
    const euro = Buffer.from('€');
    ws.send(Buffer.concat([Buffer.from('frag-'), euro.subarray(0, 1)]), { binary: false, fin: false });
    ws.send(euro.subarray(1), { binary: false, fin: false });
    ws.send(Buffer.from('-end'), { binary: false, fin: true });
    const f = await nextMessage(ws);
    check('A fragmented text reassembled', f.data.toString('utf8') === 'frag-€-end', f.data.toString());
    ws.ping(Buffer.from('are you there'));
    const [pong] = await once(ws, 'pong');
    check('A pong echoes ping payload', pong.toString() === 'are you there');
    ws.close(4000, 'bye');
    const [code, reason] = await once(ws, 'close');
    check('A close handshake echoes code', code === 4000, `code ${code} reason ${reason}`);

    // invalid UTF-8 must close with 1007
    const bad = new WebSocket(`ws://127.0.0.1:${port}/`);
    await once(bad, 'open');
    bad.send(Buffer.from([0x68, 0xc0, 0xaf]), { binary: false });
    const [badCode] = await once(bad, 'close');
    check('A invalid utf-8 closes with 1007', badCode === 1007, `code ${badCode}`);

    // many concurrent connections
    const many = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
      const c = new WebSocket(`ws://127.0.0.1:${port}/`);
      await once(c, 'open');
      c.send(`conn ${i}`);
      const m = await nextMessage(c);
      c.close(1000);
      await once(c, 'close');
      return m.data.toString() === `conn ${i}`;
    }));
    check('A 50 concurrent connections echo', many.every(Boolean));
  } finally {
    proc.kill();
  }
}

async function partB() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: () => false });
  await once(wss, 'listening');
  const port = wss.address().port;
  const seen = [];
  let closeInfo = null, pongPayload = null;
  wss.on('connection', (ws, req) => {
    seen.push(req.url);
    ws.ping(Buffer.from('hb'));
    ws.on('pong', (p) => { pongPayload = p.toString(); });
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code, reason) => { closeInfo = { code, reason: reason.toString() }; });
  });
  const msgs = ['hello from agentwire', 'ünïcödé €', 'x'.repeat(70000)];
  const proc = spawn(`${bin}/client`, ['--echo', `ws://127.0.0.1:${port}/path?q=1`, ...msgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { err += d; });
  const [exitCode] = await once(proc, 'exit');
  await new Promise((r) => setTimeout(r, 100));
  check('B client exits 0', exitCode === 0, err);
  check('B request target kept', seen[0] === '/path?q=1', seen[0]);
  check('B echoes printed in order', out === msgs.map((m) => m + '\n').join(''), JSON.stringify(out.slice(0, 80)));
  check('B auto pong answered server ping', pongPayload === 'hb', String(pongPayload));
  check('B close 1000 received by ws', closeInfo?.code === 1000 && closeInfo?.reason === 'done', JSON.stringify(closeInfo));
  check('B client saw a clean close', /closed clean=true error=None/.test(err), err);
  wss.close();
}

await partA();
await partB();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
