//! Schedules fire on a live instance, wake a hibernated one, survive a restart and `kill -9`
//! (missed runs run once, found by the server itself), can be cancelled and listed; bad cron
//! expressions are refused; a failing schedule is reported and does not block the others.

mod common;

use agentwire::demo::counter::CounterAgent;
use agentwire::{
    Agent, BoxError, Call, Connection, Context, Limits, Reply, RpcError, Schedule, Server, Storage,
    When,
};
use common::{spawn, Client};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DATA_ENV: &str = "AGENTWIRE_TEST_SCHEDULE_DATA";
const EVENTUALLY: Duration = Duration::from_secs(10);

fn counter_server(storage: Storage, limits: Limits) -> Server {
    Server::builder()
        .agent("CounterAgent", |_| CounterAgent::new())
        .storage(storage)
        .limits(limits)
        .build()
}

/// The stored count of a CounterAgent instance, read from its database file (no request to
/// the server, which would wake the instance itself).
fn stored_count(dir: &std::path::Path, name: &str) -> Option<i64> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("counter-agent").join(format!("{name}.sqlite")),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let json: String = db
        .query_row("SELECT state FROM cf_agents_state", [], |r| r.get(0))
        .ok()?;
    serde_json::from_str::<Value>(&json).ok()?["count"].as_i64()
}

#[tokio::test]
async fn a_schedule_fires_on_a_live_instance_and_broadcasts() {
    let addr = spawn(counter_server(Storage::memory(), Limits::default())).await;
    let mut c = Client::connect(addr, "/agents/counter-agent/live")
        .await
        .unwrap();
    c.connect_frames().await;
    let id = c.call_ok("scheduleIncrement", json!([0.2, 5])).await;
    let list = c.call_ok("schedules", json!([])).await;
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["method"], "increment");
    assert_eq!(list[0]["type"], "delayed");
    assert_eq!(list[0]["payload"], 5);
    let (st, _) = c.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"]["count"], 5);
    assert_eq!(c.call_ok("schedules", json!([])).await, json!([]));
}

#[tokio::test]
async fn a_due_schedule_wakes_a_hibernated_instance() {
    let server = counter_server(
        Storage::memory(),
        Limits::default().with_idle_timeout(Some(Duration::from_millis(100))),
    );
    let addr = spawn(server.clone()).await;
    let mut c = Client::connect(addr, "/agents/counter-agent/sleepy")
        .await
        .unwrap();
    c.connect_frames().await;
    c.call_ok("scheduleIncrement", json!([2.0, 3])).await;
    // the instance hibernates while the socket stays open
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let info = server
            .instance_info("CounterAgent", "sleepy")
            .await
            .unwrap();
        if !info.awake {
            assert_eq!(info.starts, 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never hibernated");
        // (a query is an event too: ask less often than the idle timeout)
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // the schedule wakes it (a second start) and its broadcast arrives
    let (st, _) = c.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"]["count"], 3);
    let info = server
        .instance_info("CounterAgent", "sleepy")
        .await
        .unwrap();
    assert_eq!(info.starts, 2);
}

/// Not a test on its own: the server process of the kill -9 test.
#[test]
#[ignore = "run by schedules_survive_kill_9 as its server process"]
fn child_schedule_server() {
    let dir = std::env::var(DATA_ENV).expect("started by the schedule test");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        counter_server(Storage::sqlite(dir), Limits::default())
            .serve(listener)
            .await
            .unwrap();
    });
}

#[tokio::test]
async fn schedules_survive_kill_9_and_missed_ones_run_at_start() {
    let dir = std::env::temp_dir().join(format!("agentwire-sched-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, addr) = common::start_child_server("child_schedule_server", DATA_ENV, &dir);
    let mut c = Client::connect(addr, "/agents/counter-agent/k9")
        .await
        .unwrap();
    c.connect_frames().await;
    c.call_ok("scheduleIncrement", json!([0.5, 7])).await;
    c.call_ok("scheduleIncrement", json!([3600, 100])).await;
    drop(c);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // the first schedule comes due while the server is down
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stored_count(&dir, "k9"), Some(0));
    let (mut child, _addr) = common::start_child_server("child_schedule_server", DATA_ENV, &dir);
    // the server finds the instance itself and runs the missed schedule once
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while stored_count(&dir, "k9") != Some(7) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missed schedule never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_count(&dir, "k9"), Some(7), "ran more than once");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records what its schedules did.
#[derive(Default, Clone)]
struct Sched {
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent for Sched {
    type State = Value;

    async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        let ms = |i| -> Result<Duration, RpcError> { Ok(Duration::from_millis(call.arg(i)?)) };
        let s = match call.method() {
            "after" => cx.schedule(When::delay(ms(0)?), call.arg::<String>(1)?.as_str(), &()),
            "every" => cx.schedule_every(ms(0)?, "tick", &()),
            "cron" => cx.schedule(When::cron(call.arg::<String>(0)?), "tick", &()),
            "cancel" => return Reply::json(&cx.cancel_schedule(&call.arg::<String>(0)?)?),
            "list" => return Reply::json(&cx.schedules()?),
            _ => return Err(RpcError::NoSuchMethod),
        };
        Reply::json(&s.map_err(RpcError::new)?.id)
    }

    async fn on_schedule(&mut self, _cx: &mut Context<Self>, s: Schedule) -> Result<(), BoxError> {
        self.log.lock().unwrap().push(s.method.clone());
        match s.method.as_str() {
            "fail" => Err("this schedule fails".into()),
            _ => Ok(()),
        }
    }

    async fn on_error(&mut self, _cx: &mut Context<Self>, _c: Option<&Connection>, e: &BoxError) {
        self.log.lock().unwrap().push(format!("error: {e}"));
    }
}

async fn sched_server(storage: Storage) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let agent = Sched::default();
    let log = agent.log.clone();
    let server = Server::builder()
        .agent("Sched", move |_| agent.clone())
        .storage(storage)
        .build();
    (spawn(server).await, log)
}

async fn wait_log(log: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let l = log.lock().unwrap().clone();
        if l.len() >= n {
            return l;
        }
        assert!(tokio::time::Instant::now() < deadline, "log: {l:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancel_list_cron_errors_and_failures() {
    let (addr, log) = sched_server(Storage::memory()).await;
    let mut c = Client::connect(addr, "/agents/sched/s").await.unwrap();
    c.recv_json().await; // identity (no state)
    c.recv_json().await; // MCP servers
                         // cancel: never runs; a second cancel finds nothing
    let id = c.call_ok("after", json!([300, "cancelled"])).await;
    assert_eq!(c.call_ok("list", json!([])).await[0]["id"], id);
    assert_eq!(c.call_ok("cancel", json!([id])).await, json!(true));
    assert_eq!(c.call_ok("cancel", json!([id])).await, json!(false));
    // cron: errors are refused with the expression named; a valid one is listed
    for bad in ["nonsense", "* * *", "61 * * * *"] {
        let r = c.call("cron", json!([bad])).await;
        assert_eq!(r["success"], false, "{bad}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("invalid cron expression"),
            "{r}"
        );
    }
    c.call_ok("cron", json!(["*/5 * * * *"])).await;
    let list = c.call_ok("list", json!([])).await;
    assert_eq!(list[0]["type"], "cron");
    assert_eq!(list[0]["cron"], "*/5 * * * *");
    // a failing schedule is reported to on_error and does not keep the next from running
    c.call_ok("after", json!([100, "fail"])).await;
    c.call_ok("after", json!([100, "ok"])).await;
    let l = wait_log(&log, 3).await;
    assert!(
        l.contains(&"fail".to_owned()) && l.contains(&"ok".to_owned()),
        "{l:?}"
    );
    assert!(
        l.contains(&"error: this schedule fails".to_owned()),
        "{l:?}"
    );
    assert!(!l.iter().any(|e| e == "cancelled"));
    // only the cron schedule is left
    assert_eq!(
        c.call_ok("list", json!([])).await.as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_interval_repeats_and_missed_runs_run_once_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("agentwire-sched-every-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // first server, on a runtime of its own that is then dropped (a stop, not a graceful one)
    let (started, ready) = std::sync::mpsc::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let d = dir.clone();
    let first = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        started
            .send(rt.block_on(sched_server(Storage::sqlite(d))))
            .unwrap();
        let _ = stopped.recv();
        drop(rt);
    });
    let (addr, log) = ready.recv().unwrap();
    let mut c = Client::connect(addr, "/agents/sched/e").await.unwrap();
    c.recv_json().await;
    c.recv_json().await;
    c.call_ok("every", json!([150])).await;
    let l = wait_log(&log, 2).await;
    assert_eq!(&l[..2], ["tick", "tick"]);
    drop(c);
    stop.send(()).unwrap();
    tokio::task::spawn_blocking(move || first.join().unwrap())
        .await
        .unwrap();
    // down for many intervals
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_addr, log) = sched_server(Storage::sqlite(&dir)).await;
    let l = wait_log(&log, 1).await;
    assert_eq!(l[0], "tick");
    // once at start, then on the interval again (not a burst of the ~6 missed ones)
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(log.lock().unwrap().len(), 1, "{:?}", log.lock().unwrap());
    wait_log(&log, 2).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Not a test on its own: the server process of the TaskRunner kill -9 test.
#[test]
#[ignore = "run by task_runner_survives_kill_9 as its server process"]
fn child_task_server() {
    let dir = std::env::var(DATA_ENV).expect("started by the task test");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        let runner =
            agentwire::demo::tasks::TaskRunner::with_token_delay(Duration::from_millis(40));
        agentwire::demo::server_with(Storage::sqlite(dir), Limits::default(), runner)
            .serve(listener)
            .await
            .unwrap();
    });
}

/// The `token` events (id, token) and whether `done` came, of an SSE body.
fn tokens_of(body: &str) -> (Vec<(u64, String)>, bool) {
    let mut out = Vec::new();
    let mut done = false;
    for block in body.split("\n\n") {
        let mut id = None;
        let mut event = "";
        let mut data = "";
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v;
            }
        }
        match event {
            "token" => {
                let v: Value = serde_json::from_str(data).unwrap();
                out.push((id.unwrap(), v["token"].as_str().unwrap().to_owned()));
            }
            "done" => done = true,
            _ => {}
        }
    }
    (out, done)
}

#[tokio::test]
async fn task_runner_survives_kill_9_mid_task() {
    let dir = std::env::temp_dir().join(format!("agentwire-task-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tasks = "/agents/task-runner/k9/tasks";
    let (mut child, addr) = common::start_child_server("child_task_server", DATA_ENV, &dir);
    let task = common::create_task(addr, tasks, "what survives a crash").await;
    let id = task["id"].as_u64().unwrap();
    let total = task["tokens"].as_u64().unwrap() as usize;
    let status = format!("{tasks}/{id}");
    // wait until some tokens, not all, were produced, then kill -9
    let before = loop {
        let (_, _, b) = common::http(addr, "GET", &status, &[], "").await;
        let v: Value = serde_json::from_str(&b).unwrap();
        if v["emitted"].as_u64().unwrap() >= 5 {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(before["status"], "running");
    let (mut child, addr) = common::start_child_server("child_task_server", DATA_ENV, &dir);
    // replay from the start after the restart: every token once, in order, then done
    let events = format!("{status}/events");
    let (code, _, body) = common::http(addr, "GET", &events, &[("last-event-id", "0")], "").await;
    assert_eq!(code, 200);
    let (toks, done) = tokens_of(&body);
    assert!(done, "{body}");
    assert_eq!(toks.len(), total);
    for (i, (tid, _)) in toks.iter().enumerate() {
        assert_eq!(*tid, i as u64 + 1);
    }
    let text: String = toks.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        text,
        agentwire::demo::tasks::task_tokens(id, "what survives a crash").concat()
    );
    // what was reported before the kill is a prefix of it
    assert!(text.starts_with(before["output"].as_str().unwrap()));
    let (_, _, b) = common::http(addr, "GET", &status, &[], "").await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["status"], "done");
    // nothing missing: 204
    let last = total.to_string();
    let (code, _, _) = common::http(addr, "GET", &events, &[("last-event-id", &last)], "").await;
    assert_eq!(code, 204);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_handle_schedules_on_an_instance_no_client_visits() {
    let agent = Sched::default();
    let log = agent.log.clone();
    let server = Server::builder()
        .agent("Sched", move |_| agent.clone())
        .build();
    let _addr = spawn(server.clone()).await;
    let h = server.agent::<Sched>("from-outside").unwrap();
    let s = h
        .schedule(
            When::delay(Duration::from_millis(50)),
            "outside",
            &json!({"n": 1}),
        )
        .await
        .unwrap();
    assert_eq!(h.schedules().await.unwrap()[0].id, s.id);
    assert_eq!(wait_log(&log, 1).await, ["outside"]);
    assert!(h.schedules().await.unwrap().is_empty());
    let s = h
        .schedule(When::cron("0 0 1 1 *"), "yearly", &())
        .await
        .unwrap();
    assert!(h.cancel_schedule(&s.id).await.unwrap());
    assert!(matches!(
        h.schedule(When::cron("nope"), "x", &()).await,
        Err(agentwire::HandleError::Schedule(_))
    ));
}
