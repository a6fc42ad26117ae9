#!/usr/bin/env node
// Interop check of the agentwire runtime against the real JavaScript client.
//
// Starts the `counter` example (path of the built binary as the first argument), then
// drives it with `AgentClient` / `agentFetch` from the npm package `agents` (0.32.0) and
// raw `ws` sockets, checking a handful of behaviours end to end. Prints one line per check
// and then `N passed, M failed`; exits non-zero on any failure.
//
//   node check.mjs ../../target/release/examples/counter

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentClient, agentFetch } from "agents/client";
import WebSocket from "ws";

const bin = process.argv[2];
if (!bin) {
  console.error("usage: check.mjs <path to the counter example binary>");
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = (p, ms, what) =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timed out: ${what}`)))]);
async function eventually(fn, what, ms = 4000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out: ${what}`);
}
function same(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

// --- start the server on a free port with fresh storage --------------------------------
const data = mkdtempSync(join(tmpdir(), "agentwire-interop-"));
const server = spawn(bin, ["--addr", "127.0.0.1:0", "--data", data], {
  stdio: ["ignore", "ignore", "pipe"]
});
const host = await new Promise((resolve, reject) => {
  let err = "";
  server.stderr.on("data", (d) => {
    err += d;
    const m = /listening on http:\/\/(\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  server.on("exit", (code) => reject(new Error(`server exited (${code}): ${err}`)));
  setTimeout(() => reject(new Error("server did not start")), 10000);
});

const name = `interop-${Date.now().toString(36)}`;
const clients = [];
const client = (extra = {}) => {
  const seen = { states: [], errors: [] };
  const c = new AgentClient({
    agent: "CounterAgent",
    name,
    host,
    WebSocket,
    onStateUpdate: (state, source) => seen.states.push({ state, source }),
    onStateUpdateError: (e) => seen.errors.push(e),
    ...extra
  });
  clients.push(c);
  return { c, seen };
};

let passed = 0;
let failed = 0;
async function check(title, fn) {
  try {
    await deadline(fn(), 15000, title);
    passed++;
    console.log(`ok - ${title}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${title} # ${e.message}`);
  }
}

// --- checks ------------------------------------------------------------------------------
const A = client();
const B = client();

await check("AgentClient becomes ready with the stored state", async () => {
  await deadline(A.c.ready, 5000, "A.ready");
  await deadline(B.c.ready, 5000, "B.ready");
  same(A.c.agent, "counter-agent", "agent namespace");
  same(A.c.state, { count: 0 }, "initial state");
});

await check("setState from one client is broadcast to the other, not echoed", async () => {
  A.c.setState({ count: 7 });
  await eventually(() => B.seen.states.some((s) => s.state.count === 7 && s.source === "server"), "B sees 7");
  await sleep(100);
  same(A.seen.states.filter((s) => s.source === "server" && s.state.count === 7).length, 0, "echo to A");
});

await check("callable methods: result, void, streaming, errors", async () => {
  same(await A.c.call("add", [19, 23]), 42, "add");
  same(await A.c.call("nothing", []), undefined, "nothing");
  const chunks = [];
  const done = await A.c.call("countdown", [2], { stream: { onChunk: (c) => chunks.push(c) } });
  same([chunks, done], [[2, 1], "liftoff"], "countdown");
  let err;
  await A.c.call("fail", ["nope"]).catch((e) => (err = e.message));
  same(err, "nope", "fail");
  await A.c.call("missing", []).catch((e) => (err = e.message));
  same(err, "Method missing does not exist", "unknown method");
});

await check("server-side setState reaches every client and the caller first", async () => {
  const n = await B.c.call("increment", [3]);
  same(n, 10, "increment result");
  same(B.c.state, { count: 10 }, "caller state before the reply");
  await eventually(() => A.c.state?.count === 10, "A state 10");
});

await check("readonly connections are refused writes but may call", async () => {
  const R = client({ query: { readonly: "1" } });
  await deadline(R.c.ready, 5000, "R.ready");
  R.c.setState({ count: 99 });
  await eventually(() => R.seen.errors.length > 0, "state error");
  same(R.seen.errors[0], "Connection is readonly", "error text");
  let err;
  await R.c.call("increment", []).catch((e) => (err = e.message));
  same(err, "Connection is readonly", "mutating call");
  same(await R.c.call("add", [1, 2]), 3, "read-only call");
});

await check("a raw socket sees identity, state, MCP servers, then echoes", async () => {
  const ws = new WebSocket(`ws://${host}/agents/counter-agent/${name}?_pk=raw-interop&tag=t1`);
  const frames = [];
  ws.on("message", (d) => frames.push(String(d)));
  await new Promise((r, j) => (ws.on("open", r), ws.on("error", j)));
  await eventually(() => frames.length >= 3, "connect frames");
  same(frames.slice(0, 3).map((f) => JSON.parse(f).type), ["cf_agent_identity", "cf_agent_state", "cf_agent_mcp_servers"], "order");
  ws.send(JSON.stringify({ type: "rpc", id: "w", method: "whoami", args: [] }));
  ws.send("plain text");
  await eventually(() => frames.length >= 5, "replies");
  same(JSON.parse(frames[3]).result.tags, ["raw-interop", "t1"], "tags");
  same(JSON.parse(frames[4]), { type: "echo", data: "plain text" }, "echo");
  ws.close();
});

await check("agentFetch reaches onRequest; SSE streams ticks with ids (no resume, as the reference)", async () => {
  const opts = { agent: "CounterAgent", name, host, protocol: "http" };
  const st = await (await agentFetch({ ...opts, path: "status" })).json();
  same([st.ok, st.name, st.state], [true, name, { count: 10 }], "status");
  const sse = await (await agentFetch({ ...opts, path: "sse" })).text();
  same((sse.match(/^id: \d+$/gm) || []).join(","), "id: 1,id: 2,id: 3,id: 4,id: 5", "ids");
  // the contract's route does not resume: Last-Event-ID is ignored, all five ticks again
  const again = await (await agentFetch({ ...opts, path: "sse" }, { headers: { "Last-Event-ID": "3" } })).text();
  same((again.match(/^id: \d+$/gm) || []).join(","), "id: 1,id: 2,id: 3,id: 4,id: 5", "ids with Last-Event-ID");
  const bad = await fetch(`http://${host}/agents/no-such-agent/x`);
  same(bad.status, 400, "unknown namespace");
});

// --- done --------------------------------------------------------------------------------
for (const c of clients) c.close();
await sleep(100);
server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
rmSync(data, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
