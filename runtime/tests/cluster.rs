//! The cluster on a real PostgreSQL: leases, fencing, failover, forwarding, hibernation moving
//! an instance, schedules of a dead owner. Nodes are servers in this process, each on a tokio
//! runtime of its own so that a node can die at once (its runtime dropped: no release, no
//! goodbye, like `kill -9`).
//!
//! Needs `AGENTWIRE_TEST_POSTGRES` (a URL of a database the tests may write to;
//! `scripts/test-all.sh` starts a throwaway PostgreSQL with `scripts/cluster.sh pg-up` and sets
//! it). Without it every test here says so and returns.

mod common;

use agentwire::cluster::Node;
use agentwire::demo::counter::CounterAgent;
use agentwire::{Limits, Server, Storage};
use common::{http, Client, Frame};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const ENV: &str = "AGENTWIRE_TEST_POSTGRES";
const NS: &str = "counter-agent";

fn pg_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("{ENV} is not set: cluster test skipped (scripts/test-all.sh sets it)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{t}", std::process::id())
}

/// A node: a counter server on PostgreSQL, serving on a loopback port it advertises.
async fn node(url: &str, id: &str, ttl: Duration, limits: Limits) -> SocketAddr {
    node_server(url, id, ttl, limits).await.0
}

/// [`node`], with its server (for handles).
async fn node_server(url: &str, id: &str, ttl: Duration, limits: Limits) -> (SocketAddr, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let storage = Storage::postgres_node(
        url,
        Node::new(id).advertise(addr.to_string()).lease_ttl(ttl),
    )
    .unwrap();
    storage.connect().await.unwrap();
    let server = Server::builder()
        .agent("CounterAgent", |_| CounterAgent::new())
        .storage(storage)
        .limits(limits)
        .build();
    tokio::spawn(server.clone().serve(listener));
    (addr, server)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The lease and write count of an instance: (owner, epoch, version).
async fn row(db: &tokio_postgres::Client, name: &str) -> (Option<String>, i64, i64) {
    let r = db
        .query_one(
            "SELECT owner, epoch, version FROM agentwire_instances WHERE namespace = $1 AND name = $2",
            &[&NS, &name],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// The count stored in PostgreSQL: the instance's SQLite image, opened here.
async fn stored_count(db: &tokio_postgres::Client, name: &str) -> Option<i64> {
    let r = db
        .query_one(
            "SELECT image FROM agentwire_instances WHERE namespace = $1 AND name = $2",
            &[&NS, &name],
        )
        .await
        .ok()?;
    let image: Vec<u8> = r.get::<_, Option<Vec<u8>>>(0)?;
    let mut c = rusqlite::Connection::open_in_memory().unwrap();
    let len = image.len();
    c.deserialize_read_exact(rusqlite::MAIN_DB, &image[..], len, true)
        .unwrap();
    let json: String = c
        .query_row(
            "SELECT state FROM cf_agents_state WHERE id = 'STATE'",
            [],
            |r| r.get(0),
        )
        .ok()?;
    serde_json::from_str::<Value>(&json).ok()?["count"].as_i64()
}

async fn connected(addr: SocketAddr, name: &str) -> (Client, Value) {
    let mut c = Client::connect(addr, &format!("/agents/{NS}/{name}"))
        .await
        .unwrap_or_else(|s| panic!("connect answered {s}"));
    let frames = c.connect_frames().await;
    (c, frames[1]["state"].clone())
}

/// Reads until the socket closes; returns the close code and every text frame seen.
async fn until_closed(c: &mut Client, within: Duration) -> (Option<u16>, Vec<Value>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match c.recv_within(deadline - Instant::now()).await {
            Some(Frame::Close(code, _)) => return (Some(code), seen),
            Some(f) => seen.push(f.json()),
            None => return (None, seen),
        }
    }
    (None, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_stale_epoch_is_refused_and_the_sockets_close_with_1012() {
    let Some(url) = pg_url() else { return };
    let name = unique("fenced");
    let a = node(
        &url,
        &unique("a"),
        Duration::from_secs(3),
        Limits::default(),
    )
    .await;
    let db = sql(&url).await;
    let (mut c, _) = connected(a, &name).await;
    assert_eq!(c.call_ok("increment", json!([])).await, json!(1));
    assert_eq!(c.call_ok("increment", json!([])).await, json!(2));
    let (_, epoch, version) = row(&db, &name).await;
    // Another node takes the instance over (as after this node's lease ran out).
    db.execute(
        "UPDATE agentwire_instances SET owner = 'another-node', epoch = epoch + 1,
             expires_at = now() + interval '1 minute'
         WHERE namespace = $1 AND name = $2",
        &[&NS, &name],
    )
    .await
    .unwrap();
    // The old owner's next write is refused (or its renewal finds the lease gone first):
    // either way no increment is acknowledged and the socket closes with 1012.
    c.send_json(&json!({"type": "rpc", "id": "late", "method": "increment", "args": []}))
        .await;
    let (code, seen) = until_closed(&mut c, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1012), "frames: {seen:?}");
    assert!(
        !seen
            .iter()
            .any(|v| v["id"] == "late" && v["success"] == json!(true)),
        "a refused write was acknowledged: {seen:?}"
    );
    assert!(
        !seen.iter().any(|v| v["state"]["count"] == json!(3)),
        "a refused write was broadcast: {seen:?}"
    );
    let (owner, e2, v2) = row(&db, &name).await;
    assert_eq!(owner.as_deref(), Some("another-node"));
    assert_eq!(e2, epoch + 1);
    assert_eq!(v2, version, "the stale owner wrote");
    assert_eq!(stored_count(&db, &name).await, Some(2));
}

#[test]
fn when_an_owner_dies_its_instance_moves_within_the_lease_time_with_every_acknowledged_write() {
    let Some(url) = pg_url() else { return };
    let ttl = Duration::from_secs(2);
    let names: Vec<String> = (0..5).map(|i| unique(&format!("failover{i}"))).collect();
    // Node A takes the instances and acknowledges writes, then dies without a goodbye.
    let rt_a = runtime();
    let acked: Vec<i64> = rt_a.block_on(async {
        let a = node(&url, &unique("a"), ttl, Limits::default()).await;
        let mut acked = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (mut c, _) = connected(a, name).await;
            let mut last = 0;
            for _ in 0..=i {
                last = c.call_ok("increment", json!([])).await.as_i64().unwrap();
            }
            acked.push(last);
        }
        acked
    });
    let died = Instant::now();
    rt_a.shutdown_background();
    let rt_b = runtime();
    rt_b.block_on(async {
        let b = node(&url, &unique("b"), ttl, Limits::default()).await;
        let db = sql(&url).await;
        for (name, acked) in names.iter().zip(&acked) {
            let (mut c, state) = connected(b, name).await;
            assert_eq!(
                state["count"],
                json!(acked),
                "{name}: acknowledged writes lost"
            );
            assert_eq!(
                c.call_ok("increment", json!([])).await,
                json!(acked + 1),
                "{name}"
            );
            assert_eq!(stored_count(&db, name).await, Some(acked + 1));
        }
        let moved = died.elapsed();
        assert!(
            moved < ttl + Duration::from_secs(3),
            "instances answered again only after {moved:?} (lease {ttl:?})"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_node_that_does_not_own_the_instance_is_forwarded_to_the_owner() {
    let Some(url) = pg_url() else { return };
    let (ida, idb) = (unique("a"), unique("b"));
    let ttl = Duration::from_secs(3);
    let a = node(&url, &ida, ttl, Limits::default()).await;
    let b = node(&url, &idb, ttl, Limits::default()).await;
    let db = sql(&url).await;
    let name = unique("fwd");
    let (mut ca, _) = connected(a, &name).await;
    assert_eq!(ca.call_ok("increment", json!([])).await, json!(1));
    // HTTP through B runs on A
    let (status, headers, body) =
        http(b, "GET", &format!("/agents/{NS}/{name}/status"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-agentwire-node"], ida.as_str());
    assert_eq!(headers["x-agentwire-forwarded-by"], idb.as_str());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"]["count"],
        1
    );
    // a WebSocket through B is tunnelled to A: same instance, broadcasts both ways
    let (mut cb, state) = connected(b, &name).await;
    assert_eq!(state["count"], 1);
    assert_eq!(cb.call_ok("increment", json!([])).await, json!(2));
    let (st, _) = ca.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"]["count"], 2);
    assert_eq!(row(&db, &name).await.0.as_deref(), Some(ida.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_ended_on_one_node_wakes_on_another_with_its_state() {
    let Some(url) = pg_url() else { return };
    let (ida, idb) = (unique("a"), unique("b"));
    let ttl = Duration::from_secs(3);
    let quick = Limits::default().with_idle_timeout(Some(Duration::from_millis(200)));
    let a = node(&url, &ida, ttl, quick).await;
    let b = node(&url, &idb, ttl, Limits::default()).await;
    let db = sql(&url).await;
    let name = unique("moves");
    {
        let (mut c, _) = connected(a, &name).await;
        for _ in 0..3 {
            c.call_ok("increment", json!([])).await;
        }
        c.close(1000).await;
    }
    // hibernation, then the instance ends and gives its lease back
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(&db, &name).await.0.is_some() {
        assert!(Instant::now() < deadline, "the lease was not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut c, state) = connected(b, &name).await;
    assert_eq!(state["count"], 3);
    assert_eq!(c.call_ok("increment", json!([])).await, json!(4));
    assert_eq!(row(&db, &name).await.0.as_deref(), Some(idb.as_str()));
}

#[test]
fn a_schedule_of_a_dead_owner_runs_on_another_node() {
    let Some(url) = pg_url() else { return };
    let ttl = Duration::from_secs(1);
    let name = unique("sched");
    let rt_a = runtime();
    rt_a.block_on(async {
        let a = node(&url, &unique("a"), ttl, Limits::default()).await;
        let (mut c, _) = connected(a, &name).await;
        c.call_ok("scheduleIncrement", json!([1.5, 5])).await;
    });
    rt_a.shutdown_background();
    let rt_b = runtime();
    rt_b.block_on(async {
        // no request for the instance: the node finds the due schedule itself
        let _b = node(&url, &unique("b"), ttl, Limits::default()).await;
        let db = sql(&url).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while stored_count(&db, &name).await != Some(5) {
            assert!(Instant::now() < deadline, "the schedule did not run");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// A TCP relay in front of PostgreSQL that can be cut (a partition between a node and the
/// database).
struct Relay {
    url: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(url: &str) -> Relay {
        let (head, tail) = url.rsplit_once('@').expect("a URL with user@host");
        let (hostport, db) = tail.split_once('/').expect("a URL with a database");
        let upstream = hostport.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_url = format!("{head}@{}/{db}", listener.local_addr().unwrap());
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay {
            url: relay_url,
            tasks,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_stops_serving_within_the_lease_time() {
    let Some(url) = pg_url() else { return };
    let relay = Relay::start(&url).await;
    let ttl = Duration::from_secs(2);
    let a = node(&relay.url, &unique("a"), ttl, Limits::default()).await;
    let name = unique("cut");
    let (mut c, _) = connected(a, &name).await;
    assert_eq!(c.call_ok("increment", json!([])).await, json!(1));
    // another instance of the node that writes nothing after the cut
    let quiet = unique("quiet");
    let (mut reader, _) = connected(a, &quiet).await;
    relay.cut();
    let cut = Instant::now();
    // A write cannot be stored: it is not acknowledged and the socket closes with 1012.
    c.send_json(&json!({"type": "rpc", "id": "cut", "method": "increment", "args": []}))
        .await;
    let (code, seen) = until_closed(&mut c, ttl * 3).await;
    assert_eq!(code, Some(1012), "frames: {seen:?}");
    assert!(
        !seen
            .iter()
            .any(|v| v["id"] == "cut" && v["success"] == json!(true)),
        "a write that could not be stored was acknowledged: {seen:?}"
    );
    // The node's other instances stop serving before their leases could run out.
    let (code, _) = until_closed(&mut reader, ttl * 3).await;
    assert_eq!(code, Some(1012));
    let stopped = cut.elapsed();
    assert!(
        stopped >= ttl / 4 && stopped < ttl + Duration::from_secs(1),
        "stopped serving {stopped:?} after the cut (lease {ttl:?})"
    );
    // Nothing of it reached the database.
    let db = sql(&url).await;
    assert_eq!(stored_count(&db, &name).await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_call_on_a_node_that_does_not_own_the_instance_runs_on_the_owner() {
    let Some(url) = pg_url() else { return };
    let (ida, idb) = (unique("a"), unique("b"));
    let ttl = Duration::from_secs(3);
    let a = node(&url, &ida, ttl, Limits::default()).await;
    let (b, server_b) = node_server(&url, &idb, ttl, Limits::default()).await;
    let db = sql(&url).await;
    let name = unique("handle");
    let (mut ca, _) = connected(a, &name).await;
    assert_eq!(ca.call_ok("increment", json!([])).await, json!(1));
    // a handle on B: the call runs on A, its broadcast reaches A's socket
    let handle = server_b.agent::<CounterAgent>(&name).unwrap();
    let n: i64 = handle.call("increment", &()).await.unwrap();
    assert_eq!(n, 2);
    let (st, _) = ca.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"]["count"], 2);
    assert_eq!(row(&db, &name).await.0.as_deref(), Some(ida.as_str()));
    assert_eq!(stored_count(&db, &name).await, Some(2));
    // a method's error comes back as the call's error
    let err = handle
        .call::<Value, _>("noSuchMethod", &())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("noSuchMethod"), "{err}");
    // the path between nodes is for nodes only
    let body = format!(r#"{{"namespace":"{NS}","name":"{name}","method":"increment","args":[]}}"#);
    for headers in [
        vec![],
        vec![
            ("x-agentwire-forwarded-by", idb.as_str()),
            ("x-agentwire-token", "forged"),
        ],
    ] {
        let (status, _, _) = http(a, "POST", "/_agentwire/call", &headers, &body).await;
        assert_eq!(status, 403);
    }
    let _ = b;
    assert_eq!(stored_count(&db, &name).await, Some(2));
}
