#!/usr/bin/env node
// RPC throughput and broadcast fan-out of CounterAgent (`/agents/counter-agent/{name}`) on one
// or more targets, printed as a markdown table with one column per target. Fresh instance
// names per target and run.
//
//   node benches/scripts/cluster-bench.mjs [--seconds 5] [--instances 32] [--window 4]
//        [--receivers 100] [--rounds 50] LABEL=HOST:PORT[@WAKEHOST:PORT] …
//
// `@WAKEHOST:PORT` first opens one socket per instance on WAKEHOST and keeps it open, so that
// in a cluster the instances are owned by that node and the measured traffic to HOST:PORT is
// forwarded. `benches/scripts/cluster-bench.sh` starts a standalone node and a cluster and
// runs this on both.
//
// Metrics (raw WebSockets without compression, JSON RPC frames):
//   rpc-seq increment     one socket, one `increment` in flight (each one a durable write)
//   rpc increment         --instances sockets (one instance each), --window calls in flight each
//   rpc add               the same with `add(1, 2)`, which writes nothing
//   connect               --receivers sockets to one instance, until each has its state frame
//   fanout-shout          `shout(k, true)` on a sender socket: time until all --receivers got it
//   fanout-state          `increment` on the sender: time until all receivers got the new state
//
// `ws` comes from runtime/interop's packages (`cd runtime/interop && npm install --no-save`).
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../runtime/interop/package.json", import.meta.url));
const WebSocket = require("ws");

const argv = process.argv.slice(2);
const o = { seconds: 5, instances: 32, window: 4, receivers: 100, rounds: 50 };
const targets = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i].startsWith("--")) o[argv[i].slice(2)] = Number(argv[++i]);
  else {
    const m = /^([^=]+)=([^@]+)(?:@(.+))?$/.exec(argv[i]);
    if (!m) throw new Error(`not LABEL=HOST:PORT[@WAKEHOST:PORT]: ${argv[i]}`);
    targets.push({ label: m[1], host: m[2], wake: m[3] ?? null });
  }
}
if (!targets.length) {
  console.error("usage: cluster-bench.mjs [--seconds S] [--instances N] [--window W] [--receivers R] [--rounds K] LABEL=HOST:PORT[@WAKEHOST:PORT] …");
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 1) : "–");
let seq = 0;

class Conn {
  constructor(host, name) {
    this.state = undefined;
    this.node = null;
    this.pending = new Map();
    this.onframe = null;
    this.ws = new WebSocket(`ws://${host}/agents/counter-agent/${name}?_pk=${randomUUID()}`, {
      perMessageDeflate: false
    });
    this.ws.on("upgrade", (res) => (this.node = res.headers["x-agentwire-node"] ?? null));
    this.opened = new Promise((resolve, reject) => {
      this.ws.on("error", reject);
      this.ws.on("close", (code) => {
        reject(new Error(`closed ${code}`));
        for (const p of this.pending.values()) p.reject(new Error(`closed ${code}`));
      });
      this.ws.on("message", (data) => {
        const m = JSON.parse(data.toString());
        if (m.type === "cf_agent_state") {
          this.state = m.state;
          resolve(this);
        } else if (m.type === "rpc") {
          const p = this.pending.get(m.id);
          if (p && m.done !== false) {
            this.pending.delete(m.id);
            m.success === false ? p.reject(new Error(m.error)) : p.resolve(m.result);
          }
        }
        this.onframe?.(m);
      });
    });
  }
  call(method, args = []) {
    const id = String(++seq);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type: "rpc", id, method, args }));
    });
  }
  close() {
    this.ws.terminate();
  }
}
const open = (host, name) => new Conn(host, name).opened;

async function openMany(host, names, batch = 20) {
  const out = [];
  for (let i = 0; i < names.length; i += batch) {
    out.push(...(await Promise.all(names.slice(i, i + batch).map((n) => open(host, n)))));
  }
  return out;
}

// `window` loops per socket, each calling `method` back to back until the deadline.
async function load(conns, method, args, window, seconds) {
  const lat = [];
  const end = now() + seconds * 1000;
  const t0 = now();
  await Promise.all(
    conns.flatMap((c) =>
      Array.from({ length: window }, async () => {
        while (now() < end) {
          const t = now();
          await c.call(method, args);
          lat.push(now() - t);
        }
      })
    )
  );
  return { rate: lat.length / ((now() - t0) / 1000), p50: pct(lat, 50), p99: pct(lat, 99) };
}

async function bench(t) {
  const tag = `${t.label}-${Date.now().toString(36)}`;
  const r = {};
  const keep = [];
  const names = Array.from({ length: o.instances }, (_, i) => `bench-${tag}-${i}`);
  const fan = `bench-${tag}-fan`;
  if (t.wake) keep.push(...(await openMany(t.wake, [...names, fan])));

  // one socket, one call in flight
  {
    const [c] = await openMany(t.host, [names[0]]);
    for (let i = 0; i < 50; i++) await c.call("increment"); // warm-up
    r.seq = await load([c], "increment", [], 1, Math.min(o.seconds, 3));
    r.node = c.node;
    c.close();
  }
  // many instances, a window each
  const conns = await openMany(t.host, names);
  r.owners = [...new Set(conns.map((c) => c.node))].join(" ");
  r.inc = await load(conns, "increment", [], o.window, o.seconds);
  r.add = await load(conns, "add", [1, 2], o.window, o.seconds);
  conns.forEach((c) => c.close());

  // fan-out to receivers of one instance
  const t0 = now();
  const recv = await openMany(t.host, Array(o.receivers).fill(fan));
  r.connect = now() - t0;
  const sender = await open(t.host, fan);
  const shout = [];
  const state = [];
  for (let k = 0; k < o.rounds; k++) {
    for (const [kind, lat] of [["shout", shout], ["state", state]]) {
      let left = recv.length;
      const start = now();
      let target = null;
      const all = new Promise((resolve) => {
        for (const c of recv) {
          let got = false;
          c.onframe = (m) => {
            const hit = kind === "shout"
              ? m.type === "shout" && m.payload === k
              : m.type === "cf_agent_state" && target !== null && m.state?.count >= target;
            if (hit && !got) {
              got = true;
              if (--left === 0) resolve();
            }
          };
        }
      });
      if (kind === "shout") await sender.call("shout", [k, true]);
      else target = await sender.call("increment");
      // a state frame may have arrived before the reply told the target: count those again
      if (kind === "state") for (const c of recv) if (c.state?.count >= target) c.onframe({ type: "cf_agent_state", state: c.state });
      await all;
      lat.push(now() - start);
    }
  }
  r.shout = { p50: pct(shout, 50), p99: pct(shout, 99) };
  r.state = { p50: pct(state, 50), p99: pct(state, 99) };
  recv.forEach((c) => c.close());
  sender.close();
  keep.forEach((c) => c.close());
  await sleep(200);
  return r;
}

const results = [];
for (const t of targets) {
  process.stderr.write(`-- ${t.label}: ${t.host}${t.wake ? ` (instances woken on ${t.wake})` : ""}\n`);
  results.push(await bench(t));
}

const rows = [
  ["serving node(s) (x-agentwire-node)", (r) => r.owners || "–"],
  ["rpc-seq increment calls/s (1 in flight)", (r) => f1(r.seq.rate)],
  ["rpc-seq increment p50 / p99 ms", (r) => `${f1(r.seq.p50)} / ${f1(r.seq.p99)}`],
  [`rpc increment calls/s (${o.instances} instances × ${o.window} in flight)`, (r) => f1(r.inc.rate)],
  ["rpc increment p50 / p99 ms", (r) => `${f1(r.inc.p50)} / ${f1(r.inc.p99)}`],
  [`rpc add calls/s (${o.instances} × ${o.window}, no write)`, (r) => f1(r.add.rate)],
  ["rpc add p50 / p99 ms", (r) => `${f1(r.add.p50)} / ${f1(r.add.p99)}`],
  [`connect ${o.receivers} sockets to one instance, ms`, (r) => f1(r.connect)],
  [`fanout-shout to ${o.receivers}, all delivered p50 / p99 ms`, (r) => `${f1(r.shout.p50)} / ${f1(r.shout.p99)}`],
  [`fanout-state (increment) to ${o.receivers}, p50 / p99 ms`, (r) => `${f1(r.state.p50)} / ${f1(r.state.p99)}`]
];
console.log(`| metric | ${targets.map((t) => t.label).join(" | ")} |`);
console.log(`|---|${targets.map(() => "---").join("|")}|`);
for (const [title, f] of rows) console.log(`| ${title} | ${results.map(f).join(" | ")} |`);
process.exit(0);
