//! The `agentwire` command as a process: `--version`, `--help`, bad flags, and `serve` with its
//! log lines, `/healthz`, `/readyz`, `/metrics` and `/stats`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_agentwire");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run agentwire")
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("agentwire {}", env!("CARGO_PKG_VERSION"))
    );
    for cmd in [&["--help"][..], &["serve", "--help"], &["tail", "--help"]] {
        let out = run(cmd);
        assert!(out.status.success(), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: agentwire"), "{cmd:?}: {text}");
    }
    let help = String::from_utf8_lossy(&run(&["serve", "--help"]).stdout).into_owned();
    for flag in [
        "--addr",
        "--data",
        "--no-deflate",
        "--metrics-addr",
        "--log-format",
        "--idle-timeout",
        "AGENTWIRE_MAX_QUEUED_BYTES",
        "--tls-cert",
        "AGENTWIRE_TLS_KEY",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let out = run(&["serve", "--idle-timeout", "later"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--idle-timeout"));
    assert_eq!(run(&["--nonsense"]).status.code(), Some(2));
    // a certificate without its key (and the reverse) is refused before anything starts
    let out = run(&["serve", "--tls-cert", "cert.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// The first log line containing `needle`, waiting for it if need be.
    fn line(&self, needle: &str) -> String {
        if let Some(l) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => {
                    self.seen.borrow_mut().push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }
}

fn get(addr: &str, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts `agentwire serve` on a free port with `extra` flags; returns it and its address.
fn serve(data: &std::path::Path, extra: &[&str]) -> (Serve, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let serve = Serve {
        child,
        lines,
        seen: Default::default(),
    };
    let addr = address_in(&serve.line("demo at http://"));
    (serve, addr)
}

/// `host:port` after the `http://` of a log line.
fn address_in(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_owned()
}

/// Opens a WebSocket to the counter agent by hand; returns the stream after the `101`.
fn websocket(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /agents/counter-agent/cli HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

fn temp_data(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("agentwire-cli-{tag}-{}", std::process::id()))
}

#[test]
fn serve_logs_websocket_open_and_close() {
    let data = temp_data("ws");
    let (serve, addr) = serve(&data, &[]);
    let mut ws = websocket(&addr);
    let open = serve.line("websocket open");
    assert!(open.contains("agent=\"counter-agent\""), "{open}");
    assert!(open.contains("name=\"cli\""), "{open}");
    assert!(open.contains("peer=127.0.0.1:"), "{open}");
    // A masked Close frame: 1000 "bye".
    let mask = [1u8, 2, 3, 4];
    let payload = [0x03, 0xe8, b'b', b'y', b'e'];
    let mut frame = vec![0x88, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).unwrap();
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    let closed = serve.line("websocket closed");
    for part in [
        "code=1000",
        "reason=\"bye\"",
        "clean=true",
        "duration_ms=",
        "id=",
    ] {
        assert!(closed.contains(part), "{part} missing: {closed}");
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn readyz_turns_503_while_shutting_down() {
    let data = temp_data("ready");
    let (serve, addr) = serve(
        &data,
        &["--metrics-addr", "127.0.0.1:0", "--shutdown-grace", "5s"],
    );
    let ops = address_in(&serve.line("metrics at http://"));
    assert!(get(&ops, "/readyz", "").starts_with("HTTP/1.1 200"));
    assert!(get(&ops, "/metrics", "").contains("agentwire_instances"));
    // An open WebSocket that never answers the server's Close keeps the shutdown going.
    let _ws = websocket(&addr);
    serve.line("websocket open");
    let term = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    serve.line("shutting down");
    let ready = get(&ops, "/readyz", "");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(get(&ops, "/healthz", "").starts_with("HTTP/1.1 200"));
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn serve_logs_and_answers_health_and_metrics() {
    let data = temp_data("http");
    let (serve, addr) = serve(&data, &["--metrics"]);

    let health = get(&addr, "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(&addr, "/readyz", "");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // A refused WebSocket handshake is logged at the default level, with the peer.
    let refused = get(&addr, "/agents/counter-agent/x", "Upgrade: websocket\r\n");
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    let line = serve.line("websocket handshake refused");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    let metrics = get(&addr, "/metrics", "");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("application/openmetrics-text"));
    assert!(metrics.contains("agentwire_websockets "), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"));

    let stats = get(&addr, "/stats", "");
    assert!(stats.contains("\"wire_bytes_out\":"), "{stats}");
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn json_log_lines_parse_and_carry_the_spans() {
    let data = temp_data("json");
    let (serve, addr) = serve(&data, &["--log-format", "json"]);
    let start: serde_json::Value = serde_json::from_str(&serve.line("demo at http://")).unwrap();
    assert_eq!(start["level"], "INFO");
    let _ws = websocket(&addr);
    let open: serde_json::Value = serde_json::from_str(&serve.line("websocket open")).unwrap();
    assert_eq!(open["fields"]["message"], "websocket open");
    let spans = open["spans"].as_array().unwrap();
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["http", "request", "ws"], "{open}");
    assert_eq!(open["span"]["agent"], "counter-agent");
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}
