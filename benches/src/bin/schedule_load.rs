//! Schedules at scale: 10,000 pending schedules across 1,000 instances (SQLite storage).
//! Prints the memory they take, how long a server takes to start over them (loading the
//! index), and how late they fire (p50 / p99 / max).
//!
//! ```sh
//! cargo run --release -p agentwire-benches --bin schedule_load -- [instances] [per-instance]
//! ```

use agentwire::{Agent, BoxError, Context, HttpRequest, Schedule, Server, Storage, When};
use http::Response;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `POST /agents/load/{name}?n=K&at=MS` schedules K calls spread over the second after `at`.
#[derive(Clone, Default)]
struct Load {
    late: Arc<Mutex<Vec<u64>>>,
}

impl Agent for Load {
    type State = serde_json::Value;

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        req: HttpRequest,
    ) -> Result<Response<agentwire::Body>, BoxError> {
        let q = req.uri().query().unwrap_or("");
        let get = |k: &str| -> u64 {
            agentwire::protocol::query_param(q, k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (n, at) = (get("n"), get("at"));
        for i in 0..n {
            let t = UNIX_EPOCH + Duration::from_millis(at + i * 1000 / n.max(1));
            cx.schedule(When::at(t), "fire", &i)?;
        }
        Ok(agentwire::body::response::text(http::StatusCode::OK, "ok"))
    }

    async fn on_schedule(&mut self, _cx: &mut Context<Self>, s: Schedule) -> Result<(), BoxError> {
        let late = now_ms().saturating_sub(s.time);
        self.late.lock().unwrap().push(late);
        Ok(())
    }
}

fn server(dir: &std::path::Path, agent: Load) -> Server {
    Server::builder()
        .agent("Load", move |_| agent.clone())
        .storage(Storage::sqlite(dir))
        .build()
}

async fn post(addr: std::net::SocketAddr, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let instances = args.first().copied().unwrap_or(1000);
    let per = args.get(1).copied().unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("agentwire-schedule-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // 1. create the schedules, due 20–21 s from now, with a first server on a runtime of its
    //    own, stopped before they are due
    let rss0 = rss_kib();
    let d = dir.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let first = server(&d, Load::default());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(first.clone().serve(listener));
            let due = now_ms() + 20_000;
            let t = Instant::now();
            for i in 0..instances {
                post(addr, &format!("/agents/load/i{i}?n={per}&at={due}")).await;
            }
            println!(
                "created {} schedules on {instances} instances in {:.2} s",
                instances * per,
                t.elapsed().as_secs_f64()
            );
            println!(
                "server RSS with them pending: {} KiB more than before ({} instances indexed, {} awake)",
                rss_kib().saturating_sub(rss0),
                first.scheduled_instances(),
                first.awake_instances()
            );
        });
        drop(rt);
    })
    .join()
    .unwrap();

    // 2. a second server over the same data: start-up (index load), then the firing
    let agent = Load::default();
    let late = agent.late.clone();
    let t = Instant::now();
    let second = server(&dir, agent);
    let build = t.elapsed();
    println!(
        "start-up of a server over them: {:.1} ms to load the index of {} instances",
        build.as_secs_f64() * 1000.0,
        second.scheduled_instances()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(second.clone().serve(listener));
    let total = (instances * per) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = late.lock().unwrap().len();
        if n >= total || Instant::now() > deadline {
            break;
        }
    }
    let mut l = late.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "fired {}/{}; lateness p50 {} ms, p99 {} ms, max {} ms",
        l.len(),
        total,
        pct(0.5),
        pct(0.99),
        l.last().copied().unwrap_or(0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
