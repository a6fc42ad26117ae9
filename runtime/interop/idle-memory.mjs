#!/usr/bin/env node
// Measures what an idle, evicted (hibernated) instance with N open sockets costs the server.
//
//   node idle-memory.mjs <counter binary> [N=1000]
//
// Starts the counter example with a 1 s idle timeout, reads its resident memory (VmRSS from
// /proc, Linux only) after a warm-up, opens N raw WebSockets to one instance, waits for each
// one's connect frames, stays silent until the instance has been evicted, and reads VmRSS
// again. Prints the difference per socket. The sockets stay open throughout.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";

const [bin, nArg] = process.argv.slice(2);
const N = Number(nArg || 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rss = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m[1]) * 1024;
};

const data = mkdtempSync(join(tmpdir(), "agentwire-mem-"));
const server = spawn(bin, ["--addr", "127.0.0.1:0", "--data", data, "--idle", "1"], {
  stdio: ["ignore", "ignore", "pipe"]
});
const host = await new Promise((resolve, reject) => {
  let err = "";
  server.stderr.on("data", (d) => {
    err += d;
    const m = /listening on http:\/\/(\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  server.on("exit", (c) => reject(new Error(`server exited ${c}`)));
});

const open = (name, pk) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}/agents/counter-agent/${name}?_pk=${pk}`, {
      perMessageDeflate: false
    });
    let n = 0;
    ws.on("message", () => {
      if (++n === 3) resolve(ws);
    });
    ws.on("error", reject);
  });

// warm-up: one instance used and closed, so allocator and runtime pools exist
for (let i = 0; i < 20; i++) (await open("warmup", `w${i}`)).close();
await sleep(2500);
const before = rss(server.pid);

const sockets = [];
for (let i = 0; i < N; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + 50); j++) batch.push(open("idle", `s${j}`));
  sockets.push(...(await Promise.all(batch)));
}
const connected = rss(server.pid);
await sleep(3000); // > idle timeout: the instance is evicted, the sockets stay open
const evicted = rss(server.pid);
const open_ = sockets.filter((s) => s.readyState === WebSocket.OPEN).length;

const fmt = (b) => `${(b / 1024 / 1024).toFixed(1)} MiB`;
console.log(`sockets open: ${open_}/${N}`);
console.log(`server RSS: warm ${fmt(before)}, connected ${fmt(connected)}, evicted ${fmt(evicted)}`);
console.log(
  `idle evicted instance with ${N} sockets: ${fmt(evicted - before)} ` +
    `(${Math.round((evicted - before) / N)} bytes per socket)`
);
for (const s of sockets) s.terminate();
server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
rmSync(data, { recursive: true, force: true });
