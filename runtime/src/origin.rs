//! The server's `Origin` policy: which browser origins may change state or open WebSockets,
//! and the CORS headers they get (see [`ServerBuilder::allowed_origins`](crate::ServerBuilder::allowed_origins)).
//!
//! A small helper rather than tower-http's `CorsLayer`: the same list also refuses WebSocket
//! upgrades and state-changing requests from other origins (`403`), which a CORS layer does
//! not do, and it must let same-origin pages and non-browser clients through.

use crate::body::{response, Body};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

/// How long a browser may cache a preflight answer (`Access-Control-Max-Age`, seconds).
pub(crate) const PREFLIGHT_MAX_AGE: &str = "600";
/// The methods a preflight answer allows.
pub(crate) const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The allowed origins: `*` (any), or exact `scheme://host[:port]` values.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    any: bool,
    origins: Vec<String>,
}

/// Where a request comes from, as far as the policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No `Origin` header: not a browser's cross-site request.
    NoOrigin,
    /// `Origin` is the request's own `scheme://host`.
    SameOrigin,
    /// An origin in the list: gets CORS headers (the value is the `Origin` as sent).
    Allowed(HeaderValue),
    /// Any other origin (including `null`).
    Foreign,
}

impl OriginPolicy {
    pub(crate) fn new<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut p = Self::default();
        for o in origins {
            let o = o.as_ref().trim();
            if o == "*" {
                p.any = true;
            } else {
                let norm = normalize(o);
                if !norm.contains("://") && norm != "null" {
                    tracing::warn!(
                        origin = o,
                        "allowed origin is not scheme://host[:port]; it will never match"
                    );
                }
                p.origins.push(norm);
            }
        }
        p
    }

    pub(crate) fn extend(&mut self, other: OriginPolicy) {
        self.any |= other.any;
        self.origins.extend(other.origins);
    }

    /// Whether any origin is listed (then replies vary by `Origin`).
    pub(crate) fn is_listing(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    pub(crate) fn verdict(&self, headers: &HeaderMap, uri: &http::Uri) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Verdict::NoOrigin;
        };
        let Ok(text) = origin.to_str() else {
            return Verdict::Foreign;
        };
        let norm = normalize(text);
        if self.any || self.origins.contains(&norm) {
            return Verdict::Allowed(origin.clone());
        }
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        if host.is_some_and(|h| same_origin(&norm, h)) {
            return Verdict::SameOrigin;
        }
        Verdict::Foreign
    }
}

/// Lower case, without a trailing `/`.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether `origin` (normalized) names `host` (a `Host` header) with its scheme's default port
/// filled in on both sides. The scheme is not compared: behind a TLS-terminating proxy the
/// server sees plain HTTP for an `https://` page of the same host.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |a: &str| -> String {
        let a = a.trim().to_ascii_lowercase();
        // `[::1]:8787`, `[::1]`, `host:80`, `host`
        let has_port = match a.rfind(':') {
            Some(i) => !a[i..].contains(']'),
            None => false,
        };
        if has_port {
            a
        } else {
            format!("{a}:{default_port}")
        }
    };
    with_port(authority) == with_port(host)
}

/// Whether `method` changes state (refused from a foreign origin).
pub(crate) fn state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether the request is a CORS preflight.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed origin.
pub(crate) fn preflight(origin: HeaderValue, headers: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    // The headers the page asked for (its origin is trusted), else the usual one.
    let allow_headers = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .all(|t| header::HeaderName::from_bytes(t.trim().as_bytes()).is_ok())
            })
        })
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    h.append(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    r
}

/// Adds `Access-Control-Allow-Origin` for an allowed origin (unless the agent set one), and
/// `Vary: Origin` (a reply to one origin must not be cached for another).
pub(crate) fn decorate(resp: &mut Response<Body>, allowed: Option<HeaderValue>) {
    let h = resp.headers_mut();
    if let Some(origin) = allowed {
        if !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

/// `403` for a request from a foreign origin.
pub(crate) fn forbidden() -> Response<Body> {
    response::text(StatusCode::FORBIDDEN, "Forbidden: origin not allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(p: &OriginPolicy, origin: Option<&str>, host: &str) -> Verdict {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        p.verdict(&h, &"/x".parse().unwrap())
    }

    #[test]
    fn classifies_origins() {
        let p = OriginPolicy::new(["https://App.example/"]);
        assert_eq!(verdict(&p, None, "a:1"), Verdict::NoOrigin);
        assert!(matches!(
            verdict(&p, Some("https://app.example"), "a:1"),
            Verdict::Allowed(_)
        ));
        assert_eq!(
            verdict(&p, Some("http://127.0.0.1:8787"), "127.0.0.1:8787"),
            Verdict::SameOrigin
        );
        assert_eq!(
            verdict(&p, Some("http://localhost"), "localhost:80"),
            Verdict::SameOrigin
        );
        assert_eq!(
            verdict(&p, Some("http://[::1]:80"), "[::1]"),
            Verdict::SameOrigin
        );
        assert_eq!(
            verdict(&p, Some("http://evil.example"), "localhost:8787"),
            Verdict::Foreign
        );
        assert_eq!(
            verdict(&p, Some("http://localhost:9999"), "localhost:8787"),
            Verdict::Foreign
        );
        assert_eq!(
            verdict(&p, Some("null"), "localhost:8787"),
            Verdict::Foreign
        );
        let any = OriginPolicy::new(["*"]);
        assert!(matches!(
            verdict(&any, Some("null"), "h"),
            Verdict::Allowed(_)
        ));
    }
}
