//! TLS on loopback with a certificate generated here (rcgen): `Server::serve_tls`, the Rust
//! client over `wss://` and `tail` over `https://`, both trusting only that certificate.

mod common;

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
