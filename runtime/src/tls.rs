//! TLS with rustls (feature `tls`): configurations for the client (`wss://`), `tail`
//! (`https://`) and [`Server::serve_tls`](crate::Server::serve_tls).
//!
//! The cryptography is rustls's `ring` provider, chosen per configuration (not installed
//! process-wide, so an application that installs another provider is not disturbed). Clients
//! trust Mozilla's root certificates compiled in ([`webpki_roots`]): the same trust on every
//! platform, also in containers without a system store. For a private CA or a self-signed
//! certificate, pass its roots to [`client_config_with_roots`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use agentwire::Server;
//! use std::sync::Arc;
//!
//! let config = agentwire::tls::server_config_from_pem("cert.pem".as_ref(), "key.pem".as_ref())?;
//! let server = Server::builder().build();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! server.serve_tls(listener, Arc::new(config)).await?;
//! # Ok(()) }
//! ```

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

pub use rustls;

/// Loading a certificate or key, or building a configuration, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting Mozilla's roots.
pub fn client_config() -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    client_config_with_roots(roots)
}

/// A client configuration trusting exactly `roots`.
pub fn client_config_with_roots(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| unreachable!("ring supports the default versions: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Certificates read from a PEM file (e.g. a CA to trust, or a server's chain).
pub fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate".into()));
    }
    Ok(certs)
}

/// A server configuration for this certificate chain and key (HTTP/1.1 by ALPN).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// [`server_config`] from PEM files: the certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1), what `agentwire serve --tls-cert/--tls-key` reads.
pub fn server_config_from_pem(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs = certs_from_pem(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    server_config(certs, key)
}
