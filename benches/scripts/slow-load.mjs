// Latency of `increment` on an agent instance that has slow calls in flight: `--slow` calls of
// `slow(--ms)` are sent on one socket (each waits `--ms` ms as an upstream call would), then a
// second socket on the same instance calls `increment` one call at a time until the slow calls
// have answered. Prints one JSON line: increment count, p50/p99/max in ms, and whether every
// increment answered while all slow calls were still in flight.
//
//   cargo build --release -p agentwire --example counter
//   target/release/examples/counter --addr 127.0.0.1:8787 &
//   (cd runtime/interop && npm install --no-save)        # provides `ws`
//   node benches/scripts/slow-load.mjs 127.0.0.1:8787 [--slow 20] [--ms 5000]
import { createRequire } from "node:module";

const require = createRequire(new URL("../../runtime/interop/package.json", import.meta.url));
const WebSocket = require("ws");

const host = process.argv[2];
if (!host) {
  console.error("usage: node slow-load.mjs <host:port> [--slow N] [--ms MS]");
  process.exit(2);
}
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const slowN = arg("--slow", 20);
const ms = arg("--ms", 5000);
const instance = `slow-load-${process.pid}`;

function open(pk) {
  const ws = new WebSocket(`ws://${host}/agents/counter-agent/${instance}?_pk=${pk}`);
  const waiting = new Map();
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString());
    if (m.type === "rpc" && m.done !== false && waiting.has(m.id)) {
      waiting.get(m.id)(m);
      waiting.delete(m.id);
    }
  });
  const call = (id, method, args) =>
    new Promise((resolve) => {
      waiting.set(id, resolve);
      ws.send(JSON.stringify({ type: "rpc", id, method, args }));
    });
  return new Promise((resolve, reject) => {
    ws.on("open", () => resolve({ ws, call }));
    ws.on("error", reject);
  });
}

const a = await open("slow");
const b = await open("fast");
const t0 = performance.now();
let slowDone = 0;
let firstSlowAt = null;
const slow = [];
for (let i = 0; i < slowN; i++) {
  slow.push(
    a.call(`s${i}`, "slow", [ms]).then((r) => {
      if (r.result !== ms) throw new Error(`slow answered ${JSON.stringify(r)}`);
      firstSlowAt ??= performance.now() - t0;
      slowDone++;
    }),
  );
}
const lat = [];
let n = 0;
let allDuringSlow = true;
while (slowDone === 0 && performance.now() - t0 < ms - 100) {
  const t = performance.now();
  const r = await b.call(`i${n++}`, "increment", []);
  if (!r.success) throw new Error(`increment failed: ${JSON.stringify(r)}`);
  lat.push(performance.now() - t);
  if (slowDone > 0) allDuringSlow = false;
}
await Promise.all(slow);
const total = performance.now() - t0;
lat.sort((x, y) => x - y);
const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];
console.log(
  JSON.stringify({
    slow_calls: slowN,
    slow_ms: ms,
    increments: lat.length,
    increment_p50_ms: +pct(50).toFixed(3),
    increment_p99_ms: +pct(99).toFixed(3),
    increment_max_ms: +lat[lat.length - 1].toFixed(3),
    increments_all_before_first_slow_reply: allDuringSlow,
    first_slow_reply_ms: +firstSlowAt.toFixed(1),
    all_slow_done_ms: +total.toFixed(1),
  }),
);
a.ws.close();
b.ws.close();
