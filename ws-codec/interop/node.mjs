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

// permessage-deflate (examples built with the `deflate` feature): negotiated with ws in both
// roles, and compressed both ways, proven by the bytes on the socket.
function stateJson(n) {
  const items = Array.from({ length: n }, (_, i) => ({ id: i, role: i % 2 ? 'assistant' : 'user', text: `message number ${i} about the weather in Lisbon` }));
  return JSON.stringify({ type: 'cf_agent_state', state: { count: n, items } });
}

async function partC() {
  const { proc, port } = await startEcho();
  try {
    const variants = [
      ['defaults', true],
      ['no context takeover, 10-bit server window', { clientNoContextTakeover: true, serverNoContextTakeover: true, serverMaxWindowBits: 10 }],
    ];
    for (const [label, pmd] of variants) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: pmd });
      await once(ws, 'open');
      check(`C ${label}: permessage-deflate negotiated`, ws.extensions.startsWith('permessage-deflate'), ws.extensions);
      const sock = ws._socket;
      const big = stateJson(1000); // ~70 KiB of JSON
      const [r0, w0] = [sock.bytesRead, sock.bytesWritten];
      ws.send(big);
      const m = await nextMessage(ws);
      const [read, written] = [sock.bytesRead - r0, sock.bytesWritten - w0];
      check(`C ${label}: ${big.length} B JSON echoed intact`, !m.isBinary && m.data.toString() === big);
      check(`C ${label}: compressed both ways (${written} B sent, ${read} B received)`, written * 5 < big.length && read * 5 < big.length);
      // many small messages with context, binary too
      let okAll = true;
      for (let i = 0; i < 50; i++) {
        const t = stateJson(i % 7);
        ws.send(i % 2 ? Buffer.from(t) : t);
        const e = await nextMessage(ws);
        okAll &&= e.data.toString() === t && e.isBinary === Boolean(i % 2);
      }
      check(`C ${label}: 50 mixed messages echoed`, okAll);
      ws.close(1000);
      await once(ws, 'close');
    }
  } finally {
    proc.kill();
  }

  // ws as the server, examples/client as the client
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: { threshold: 0 } });
  await once(wss, 'listening');
  let ext = null, bytesIn = 0, echoedBack = 0;
  wss.on('connection', (ws, req) => {
    ext = ws.extensions;
    ws.on('message', (data, isBinary) => { echoedBack += data.length; ws.send(data, { binary: isBinary }); });
    ws.on('close', () => { bytesIn = req.socket.bytesRead; });
  });
  const big = stateJson(1000);
  const msgs = ['small', big];
  const client = spawn(`${bin}/client`, ['--echo', `ws://127.0.0.1:${wss.address().port}/`, ...msgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  client.stdout.on('data', (d) => { out += d; });
  client.stderr.on('data', (d) => { err += d; });
  const [exitCode] = await once(client, 'exit');
  await new Promise((r) => setTimeout(r, 100));
  check('C client: exits 0', exitCode === 0, err);
  check('C client: permessage-deflate negotiated with ws', typeof ext === 'string' && ext.startsWith('permessage-deflate'), String(ext));
  check('C client: echoes printed', out === msgs.map((m) => m + '\n').join(''));
  check(`C client: sent compressed (${bytesIn} B on the wire for ${echoedBack} B of messages)`, bytesIn > 0 && bytesIn * 5 < echoedBack);
  wss.close();
}

await partA();
await partB();
await partC();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
