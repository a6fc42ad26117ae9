//! The URL the client connects to, and random ids.

use super::ClientError;
use agentwire_protocol::{camel_case_to_kebab_case, CONNECTION_ID_PARAM};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where to connect: the request URI plus the socket address parts.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `ws://host[:port]/{prefix}/{namespace}/{name}?_pk=…[&…]`.
    pub(crate) uri: http::Uri,
    /// Host for the TCP connection (IPv6 literals without brackets).
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// TLS (`wss://`): the configuration to connect with (feature `tls`).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Builds the connection URL the way the reference client does:
/// `{base}/{prefix}/{kebab(agent)}/{name}?_pk={id}[&{query}]`.
///
/// `base` is `ws://host[:port]`, `http://host[:port]` or `host[:port]`, or with the feature
/// `tls` `wss://host[:port]` / `https://host[:port]`; a path in it is kept in front of the
/// prefix.
pub(crate) fn target(
    base: &str,
    prefix: &str,
    agent: &str,
    name: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<Target, ClientError> {
    let bad = |why: &str| ClientError::Url(format!("{base}: {why}"));
    let secure = base.starts_with("wss://") || base.starts_with("https://");
    let rest = if let Some(r) = base.strip_prefix("ws://") {
        r
    } else if let Some(r) = base.strip_prefix("http://") {
        r
    } else if secure && cfg!(not(feature = "tls")) {
        return Err(bad("TLS (wss://) needs the feature `tls`"));
    } else if let Some(r) = base.strip_prefix("wss://") {
        r
    } else if let Some(r) = base.strip_prefix("https://") {
        r
    } else if base.contains("://") {
        return Err(bad("expected ws:// or http://"));
    } else {
        base
    };
    let (authority, base_path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let mut path = String::with_capacity(64);
    path.push_str(base_path);
    for seg in prefix.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(seg);
    }
    path.push('/');
    path.push_str(&camel_case_to_kebab_case(agent));
    path.push('/');
    encode_path(name, &mut path);
    path.push('?');
    path.push_str(CONNECTION_ID_PARAM);
    path.push('=');
    encode_form(id, &mut path);
    for (k, v) in query {
        path.push('&');
        encode_form(k, &mut path);
        path.push('=');
        encode_form(v, &mut path);
    }
    let scheme = if secure { "wss" } else { "ws" };
    let uri: http::Uri = format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| bad(&format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok(Target {
        uri,
        host,
        port,
        #[cfg(feature = "tls")]
        tls: secure.then(|| std::sync::Arc::new(crate::tls::client_config())),
    })
}

/// Appends `s` with the characters of the WHATWG path percent-encode set escaped (what the
/// browser's URL parser does to the name the reference client inserts verbatim).
fn encode_path(s: &str, out: &mut String) {
    for b in s.bytes() {
        if matches!(b, 0..=0x20 | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | 0x7f..) {
            push_escape(b, out);
        } else {
            out.push(char::from(b));
        }
    }
}

/// Appends `s` encoded as `URLSearchParams` does (`application/x-www-form-urlencoded`).
fn encode_form(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => push_escape(b, out),
        }
    }
}

fn push_escape(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// 64 random bits (std's randomly keyed SipHash over a counter and the clock; ids only, not
/// cryptography).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}

/// A random UUID v4 in its text form, like the reference client's connection ids.
pub(crate) fn uuid_v4() -> String {
    let hi = random_u64();
    let lo = random_u64();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_like_the_reference_client() {
        let t = target(
            "ws://127.0.0.1:8787/",
            "agents",
            "CounterAgent",
            "hello world",
            "3f6c-1",
            &[("tag".into(), "a b&c".into())],
        )
        .unwrap();
        assert_eq!(
            t.uri.to_string(),
            "ws://127.0.0.1:8787/agents/counter-agent/hello%20world?_pk=3f6c-1&tag=a+b%26c"
        );
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8787));
        let t = target("localhost", "api/agents", "counter-agent", "x", "i", &[]).unwrap();
        assert_eq!(
            t.uri.to_string(),
            "ws://localhost/api/agents/counter-agent/x?_pk=i"
        );
        assert_eq!(t.port, 80);
        let t = target("http://[::1]:9/base", "agents", "A", "n", "i", &[]).unwrap();
        assert_eq!(t.uri.path(), "/base/agents/a/n");
        assert_eq!(t.host, "::1");
        let t = target("wss://x/b", "agents", "A", "n", "i", &[]);
        #[cfg(feature = "tls")]
        {
            let t = t.unwrap();
            assert_eq!(t.uri.to_string(), "wss://x/b/agents/a/n?_pk=i");
            assert_eq!(t.port, 443);
            assert!(t.tls.is_some());
        }
        #[cfg(not(feature = "tls"))]
        assert!(t.is_err());
        assert!(target("ftp://x", "agents", "A", "n", "i", &[]).is_err());
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = uuid_v4();
        let b = uuid_v4();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
