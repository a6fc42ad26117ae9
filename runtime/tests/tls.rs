//! TLS on loopback with a certificate generated here (rcgen): `Server::serve_tls`, the Rust
//! client over `wss://` and `tail` over `https://`, both trusting only that certificate.

mod common;
#[path = "common/raw.rs"]
mod raw;

use agentwire::client::AgentClient;
use agentwire::tls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use agentwire::tls::rustls::RootCertStore;
use agentwire::{Limits, Storage};
use agentwire_sse::ReconnectPolicy;
use common::WAIT;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A writer the test can read while `tail` writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Serves the test agents over TLS with a fresh self-signed certificate for `localhost`;
/// returns the port and the certificate to trust.
async fn serve_tls() -> (u16, CertificateDer<'static>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = key.cert.der().clone();
    let private = PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let config = agentwire::tls::server_config(vec![cert.clone()], private.into()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = common::server_with(Storage::memory(), Limits::default());
    tokio::spawn(server.serve_tls(listener, Arc::new(config)));
    (port, cert)
}

fn trusting(cert: CertificateDer<'static>) -> agentwire::tls::rustls::ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    agentwire::tls::client_config_with_roots(roots)
}

#[tokio::test]
async fn client_over_wss_and_tail_over_https() {
    let (port, cert) = serve_tls().await;
    let tls = trusting(cert);

    let client = AgentClient::builder(format!("wss://localhost:{port}"), "TestAgent", "t")
        .tls_config(Arc::new(tls.clone()))
        .connect();
    let client = tokio::time::timeout(WAIT, client)
        .await
        .expect("connected in time")
        .unwrap();
    assert!(client.url().starts_with("wss://localhost:"));
    assert_eq!(client.call("increment", [2]).await.unwrap(), 2);

    let out = Shared::default();
    let url = format!("https://localhost:{port}/agents/test-agent/t/feed");
    let mut w = out.clone();
    let tail = tokio::spawn(async move {
        agentwire::tail::tail_with_tls(&url, ReconnectPolicy::default(), tls, &mut w).await
    });
    // Publish until the subscriber is attached and the event printed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !out.text().contains("over tls") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail printed: {}",
            out.text()
        );
        client.call("publish", ["over tls"]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = out.text().lines().next().unwrap().to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "msg");
    assert_eq!(v["data"], "over tls");
    tail.abort();
    client.close().await;
}

/// Mozilla's roots do not include a self-signed certificate: the handshake fails, and the
/// client reports the socket it could not open instead of connecting.
#[tokio::test]
async fn default_roots_refuse_a_self_signed_certificate() {
    let (port, _) = serve_tls().await;
    let client = AgentClient::builder(format!("wss://localhost:{port}"), "TestAgent", "t")
        .reconnect(None)
        .connect();
    let res = tokio::time::timeout(WAIT, client)
        .await
        .expect("fails in time");
    assert!(res.is_err());
}

/// The command: `agentwire serve --tls-cert --tls-key` with PEM files written here, and
/// `agentwire tail --ca-cert` following the demo counter's SSE route over `https://`.
#[test]
fn serve_and_tail_commands_over_tls() {
    use std::io::BufRead;
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("agentwire-tls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, key.cert.pem()).unwrap();
    std::fs::write(&key_pem, key.signing_key.serialize_pem()).unwrap();

    let serve = raw::Serve::start(
        "tls",
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let url = format!(
        "https://localhost:{}/agents/counter-agent/x/sse",
        serve.addr.port()
    );
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["tail", "--ca-cert", cert_pem.to_str().unwrap(), &url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(tail.stdout.take().unwrap());
    // Five ticks, then `done` (the process is killed below; a failure shows up as EOF here).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().take(6) {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 6 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap()),
            Err(e) => panic!("tail printed {lines:?}, then {e}"),
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(lines[0]["type"], "tick");
    assert_eq!(lines[0]["lastEventId"], "1");
    assert_eq!(lines[5]["type"], "done");
    assert_eq!(lines[5]["data"], "bye");
}
