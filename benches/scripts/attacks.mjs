// Reproduces cheap attacks and heavy clients against `agentwire serve` on loopback and prints
// what the server did: clients served during each attack, RSS per idle socket with and without
// permessage-deflate, memory after a slow consumer, open files after an instance-name flood,
// CPU for a large broadcast to compressing sockets.
//
//   cargo build --release
//   (cd runtime/interop && npm install --no-save)        # provides `ws`
//   node benches/scripts/attacks.mjs target/release/agentwire [--quick]
//
// The server runs under `ulimit -n 1024` (a common default) with its default limits.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const require = createRequire(new URL("../../runtime/interop/package.json", import.meta.url));
const WebSocket = require("ws");

const bin = process.argv[2];
const quick = process.argv.includes("--quick");
if (!bin) {
  console.error("usage: node attacks.mjs <path to agentwire binary> [--quick]");
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startServer(extra = []) {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "agentwire-attacks-"));
  const child = spawn("bash", ["-c", `ulimit -n 1024; exec "$0" serve --addr 127.0.0.1:0 --data "$1" "\${@:2}"`, bin, data, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const ready = new Promise((resolve, reject) => {
    const on = (b) => {
      out += b.toString();
      const m = out.match(/http:\/\/(127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    };
    child.stdout.on("data", on);
    child.stderr.on("data", on);
    child.on("exit", (c) => reject(new Error(`server exited ${c}: ${out}`)));
  });
  return { child, data, ready };
}

const rssKiB = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);
const fds = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;
const cpuMs = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, 100 Hz ticks
};

async function get(host, p, timeout = 5000) {
  const t0 = performance.now();
  try {
    const r = await fetch(`http://${host}${p}`, { signal: AbortSignal.timeout(timeout) });
    await r.text();
    return { status: r.status, ms: performance.now() - t0 };
  } catch (e) {
    return { status: 0, ms: performance.now() - t0, error: e.name };
  }
}

/// n plain HTTP requests one after another; how many got an answer, and their statuses
async function probe(host, n = 20) {
  const res = [];
  for (let i = 0; i < n; i++) res.push(await get(host, `/agents/counter-agent/probe/status`));
  const ok = res.filter((r) => r.status === 200).length;
  const refused = res.filter((r) => r.status === 503).length;
  const hung = res.filter((r) => r.status === 0).length;
  const p50 = res.map((r) => r.ms).sort((a, b) => a - b)[Math.floor(n / 2)];
  return `${ok}/${n} served (503: ${refused}, no answer: ${hung}), p50 ${p50.toFixed(1)} ms`;
}

function rawSocket(host) {
  const [h, p] = host.split(":");
  return new Promise((resolve) => {
    const s = net.connect(Number(p), h, () => resolve(s));
    s.on("error", () => {});
  });
}

function wsOpen(host, name, deflate, q = "") {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}/agents/counter-agent/${name}${q}`, { perMessageDeflate: deflate });
    let n = 0;
    ws.on("message", () => {
      if (++n === 3) resolve(ws); // identity, state, MCP servers
    });
    ws.on("error", reject);
  });
}

function call(ws, method, args) {
  const id = Math.random().toString(36).slice(2);
  return new Promise((resolve) => {
    const on = (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === "rpc" && m.id === id && m.done !== false) {
        ws.off("message", on);
        resolve(m);
      }
    };
    ws.on("message", on);
    ws.send(JSON.stringify({ type: "rpc", id, method, args }));
  });
}

const results = [];
const report = (k, v) => {
  results.push([k, v]);
  console.log(`${k}: ${v}`);
};

// ---------------------------------------------------------------------------------------
{
  const s = startServer();
  const host = await s.ready;
  const pid = s.child.pid;
  report("baseline", await probe(host));

  // A. 1,100 silent TCP sockets (more than the file limit allows)
  const silent = [];
  for (let i = 0; i < 1100; i++) silent.push(await rawSocket(host));
  await sleep(200);
  report("A. 1,100 silent sockets held open", await probe(host));
  const cut = () => silent.filter((x) => x.destroyed || x.readableEnded).length;
  await sleep(quick ? 1000 : 21000);
  report("A. silent sockets closed by the server (after keep-alive timeout)", `${cut()}/1100`);
  silent.forEach((x) => x.destroy());

  // B. 500 slowloris sockets trickling header bytes
  const slow = [];
  for (let i = 0; i < 500; i++) {
    const x = await rawSocket(host);
    x.write("GET /agents/counter-agent/slow/status HTTP/1.1\r\nHost: x\r\n");
    slow.push(x);
  }
  const trickle = setInterval(() => slow.forEach((x) => !x.destroyed && x.write("X-a: b\r\n")), 1000);
  report("B. 500 slowloris sockets", await probe(host));
  await sleep(quick ? 2000 : 22000);
  clearInterval(trickle);
  report("B. slowloris sockets cut by the server", `${slow.filter((x) => x.destroyed || x.readableEnded).length}/500`);
  slow.forEach((x) => x.destroy());

  // C. a 10 GB Content-Length with no body
  {
    const x = await rawSocket(host);
    const t0 = performance.now();
    x.write("POST /agents/task-runner/c/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n");
    const answer = await new Promise((r) => {
      let b = "";
      x.on("data", (d) => (b += d));
      x.on("close", () => r(b.split("\r\n")[0] || "(closed)"));
      setTimeout(() => r("(nothing after 30 s)"), 30000);
    });
    report("C. 10 GB Content-Length, no body", `${answer} after ${(performance.now() - t0).toFixed(0)} ms`);
    x.destroy();
  }

  // D. instance-name flood: 600 new names in a burst
  {
    const before = fds(pid);
    const t0 = performance.now();
    const burst = [];
    for (let i = 0; i < 600; i++) burst.push(get(host, `/agents/counter-agent/flood-${i}/status`, 20000));
    const during = probe(host, 10);
    const r = await Promise.all(burst);
    report("D. 600 new instance names in a burst", `${r.filter((x) => x.status === 200).length}/600 answered in ${(performance.now() - t0).toFixed(0)} ms; meanwhile ${await during}`);
    await sleep(500);
    report("D. open files after the flood", `${fds(pid)} (before: ${before}; limit 1024)`);
  }
  s.child.kill("SIGKILL");
}

// ---------------------------------------------------------------------------------------
// E. RSS per idle WebSocket, browser-like (deflate offered) and plain
for (const deflate of [false, true]) {
  const s = startServer();
  const host = await s.ready;
  const pid = s.child.pid;
  await get(host, "/agents/counter-agent/idle/status");
  await sleep(300);
  const before = rssKiB(pid);
  const n = quick ? 200 : 600;
  const socks = [];
  for (let i = 0; i < n; i++) socks.push(await wsOpen(host, "idle", deflate));
  // each client makes one call, as a page does, then idles
  await Promise.all(socks.slice(0, 50).map((w) => call(w, "add", [1, 2])));
  await sleep(quick ? 1000 : 12000); // past the compression release time
  const per = ((rssKiB(pid) - before) * 1024) / n;
  report(`E. RSS per idle WebSocket, deflate ${deflate ? "offered" : "off"}`, `${(per / 1024).toFixed(1)} KiB (${n} sockets)`);
  socks.forEach((w) => w.terminate());
  s.child.kill("SIGKILL");
}

// ---------------------------------------------------------------------------------------
// F. a client that stops reading; G. a 256 KB broadcast to 500 compressing sockets
{
  const s = startServer();
  const host = await s.ready;
  const pid = s.child.pid;
  const sender = await wsOpen(host, "slowc", false);
  const stalled = await wsOpen(host, "slowc", false);
  stalled._socket.pause();
  const before = rssKiB(pid);
  const payload = "x".repeat(256 * 1024);
  for (let i = 0; i < 120; i++) await call(sender, "shout", [payload, true]);
  await sleep(500);
  const peak = rssKiB(pid);
  let conns = (await call(sender, "shout", ["?", true])).result;
  for (let i = 0; i < 50 && conns > 1; i++) {
    await sleep(500);
    conns = (await call(sender, "shout", ["?", true])).result;
  }
  await sleep(500);
  report("F. slow consumer (30 MB broadcast at it)", `disconnected: ${conns === 1}; server RSS ${before} KiB before, ${peak} KiB after the burst, ${rssKiB(pid)} KiB after the cut`);
  stalled.terminate();

  const n = quick ? 100 : 500;
  const socks = [];
  for (let i = 0; i < n; i++) socks.push(await wsOpen(host, "bcast", true));
  const other = await wsOpen(host, "other", false);
  const big = JSON.stringify({ count: 1, blob: Array.from({ length: 4000 }, (_, i) => ({ i, t: "some agent state text" })) });
  const cpu0 = cpuMs(pid);
  const got = Promise.all(socks.slice(1).map((w) => new Promise((r) => w.once("message", r))));
  const t0 = performance.now();
  socks[0].send(JSON.stringify({ type: "cf_agent_state", state: JSON.parse(big) }));
  const rpc = call(other, "add", [1, 2]).then(() => performance.now() - t0);
  await got;
  const all = performance.now() - t0;
  await sleep(200);
  report(`G. ${(big.length / 1024).toFixed(0)} KB state broadcast to ${n} deflate sockets`, `all delivered in ${all.toFixed(0)} ms, server CPU ${(cpuMs(pid) - cpu0).toFixed(0)} ms, unrelated RPC ${(await rpc).toFixed(1)} ms`);
  socks.forEach((w) => w.terminate());
  other.terminate();
  s.child.kill("SIGKILL");
}

console.log("\nsummary");
for (const [k, v] of results) console.log(`| ${k} | ${v} |`);
process.exit(0);
