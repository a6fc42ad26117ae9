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
}

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Waits for a log line containing `needle`.
    fn line(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
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

#[test]
fn serve_logs_and_answers_health_and_metrics() {
    let data = std::env::temp_dir().join(format!("agentwire-cli-{}", std::process::id()));
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics", "--data"])
        .arg(&data)
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
    let serve = Serve { child, lines };
    let start = serve.line("demo at http://");
    let addr = start
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_owned();

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
