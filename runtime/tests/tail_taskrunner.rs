//! `agentwire::tail` against the demo `TaskRunner`'s token stream (`GET …/tasks/{id}/events`)
//! through a TCP proxy that cuts the first two connections in the middle of the stream: the
//! output has every token exactly once, in order, then the `done` event, and `tail` ends
//! normally on the server's `204` once nothing is missing.

mod common;

use agentwire::demo::tasks::{task_tokens, TaskRunner};
use agentwire::{Limits, Storage};
use agentwire_sse::ReconnectPolicy;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Generous: the machine running the tests may be slow and busy.
const WAIT: Duration = Duration::from_secs(60);
const TOKEN_DELAY: Duration = Duration::from_millis(20);
/// Connections cut by the proxy (the first ones), and after how many token events each.
const CUTS: usize = 2;
const EVENTS_BEFORE_CUT: usize = 4;

/// The offset of the `nth` (1-based) occurrence of `needle` in `hay`.
fn occurrence(hay: &[u8], needle: &[u8], nth: usize) -> Option<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .nth(nth - 1)
        .map(|(i, _)| i)
}

/// What the proxy saw: the `Last-Event-ID` of every request (`None`: absent).
type Requests = Arc<Mutex<Vec<Option<String>>>>;

/// Forwards connections to `upstream`. Each of the first [`CUTS`] connections is cut once
/// [`EVENTS_BEFORE_CUT`] token events went through, in the middle of the next one (after its
/// `id:` line, which must not count as received), then both sides are dropped.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((client, _)) = listener.accept().await {
            let cut = n < CUTS;
            n += 1;
            let server = TcpStream::connect(upstream).await.unwrap();
            tokio::spawn(pipe(client, server, cut, seen.clone()));
        }
    });
    (addr, requests)
}

async fn pipe(client: TcpStream, server: TcpStream, cut: bool, requests: Requests) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        // Every request head (GETs without bodies; the client may send the next request on
        // the same kept-alive connection once a stream has ended).
        let mut head = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            head.extend_from_slice(&buf[..n]);
            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("last-event-id:"))
                    .map(|v| v.trim().to_owned());
                requests.lock().unwrap().push(id);
                head.drain(..end + 4);
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut all = Vec::new();
        let mut sent = 0;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            all.extend_from_slice(&buf[..n]);
            // Where the token event after the first EVENTS_BEFORE_CUT starts being named:
            // even when several events arrive in one read, the cut falls inside that one,
            // after its complete `id:` line.
            let cut_at = cut
                .then(|| occurrence(&all, b"event: token", EVENTS_BEFORE_CUT + 1))
                .flatten()
                .map(|at| at + 3);
            let end = cut_at.unwrap_or(all.len());
            cw.write_all(&all[sent..end]).await?;
            sent = end;
            if cut_at.is_some() {
                return Ok(());
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[tokio::test]
async fn tail_resumes_a_cut_task_stream_without_loss_or_duplicates() {
    let runner = TaskRunner::with_token_delay(TOKEN_DELAY);
    let server = common::spawn(agentwire::demo::server_with(
        Storage::memory(),
        Limits::default(),
        runner,
    ))
    .await;
    let base = "/agents/task-runner/tail/tasks";
    let prompt = "resume me after a cut";
    let created = common::create_task(server, base, prompt).await;
    let id = created["id"].as_u64().unwrap();
    let expected = task_tokens(id, prompt);
    let k = expected.len();
    assert!(
        k > (CUTS + 1) * EVENTS_BEFORE_CUT,
        "enough tokens to cut twice"
    );

    let (addr, requests) = proxy(server).await;
    let url = format!("http://{addr}{base}/{id}/events");
    // Reconnect 100 ms after a cut instead of the default 3 s; the jitter is seeded.
    let policy = ReconnectPolicy::default()
        .default_retry(Duration::from_millis(100))
        .jitter_seed(7);
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, agentwire::tail::tail(&url, policy, &mut out))
        .await
        .expect("tail ends once the stream is finished")
        .expect("the 204 at the end is a normal end");

    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let (tokens, rest): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|l| l["type"] == "token");

    // every token exactly once, in order, with its id
    let ids: Vec<String> = tokens
        .iter()
        .map(|l| l["lastEventId"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (1..=k).map(|i| i.to_string()).collect();
    assert_eq!(ids, want);
    let text: String = tokens
        .iter()
        .map(|l| {
            let data: Value = serde_json::from_str(l["data"].as_str().unwrap()).unwrap();
            data["token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, expected.concat());

    // then one `done` event, the last line (it has no id of its own: the last one stays)
    assert_eq!(rest.len(), 1, "{rest:?}");
    let done = lines.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["lastEventId"], k.to_string());
    assert_eq!(
        serde_json::from_str::<Value>(done["data"].as_str().unwrap()).unwrap(),
        json!({"id": id, "tokens": k})
    );

    // the requests: a fresh one, one resume per cut (each after the last complete event,
    // not the partial one), and the last resume, with nothing missing, answered 204
    let requests = requests.lock().unwrap().clone();
    let mut want: Vec<Option<String>> = vec![None];
    want.extend((1..=CUTS).map(|c| Some((c * EVENTS_BEFORE_CUT).to_string())));
    want.push(Some(k.to_string()));
    assert_eq!(requests, want);
}
