//! URL routing: `/{prefix}/{namespace}/{instance}[/{rest}]`, class name → namespace, `_pk`.

use std::borrow::Cow;

/// The default URL prefix, `agents`.
pub const DEFAULT_PREFIX: &str = "agents";

/// The query parameter that carries the client-chosen connection id.
pub const CONNECTION_ID_PARAM: &str = "_pk";

/// The agent-addressing part of a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPath<'a> {
    /// Namespace segment (compare with [`camel_case_to_kebab_case`] of the registered class or
    /// binding names; an unknown namespace is answered `400` `Invalid request`).
    pub namespace: Cow<'a, str>,
    /// Instance name, raw: *not* percent-decoded (`hello%20world` stays as it is). It is the
    /// storage key and the `name` of the identity frame.
    pub instance: Cow<'a, str>,
    /// The non-empty segments after the instance, if any. The router ignores them; the
    /// application sees them in the request URL.
    pub rest: Vec<Cow<'a, str>>,
}

impl AgentPath<'_> {
    /// `rest` joined with `/` (empty when there are no extra segments).
    pub fn rest_path(&self) -> String {
        self.rest.join("/")
    }
}

/// Splits an origin-form request target into its path and its query (without `?`). A
/// fragment, if any, is dropped. An empty query (a bare trailing `?`, as `agentFetch` sends)
/// is returned as `None`.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    match target.split_once('?') {
        Some((path, "")) => (path, None),
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Routes a request path (no query) the way the reference router does.
///
/// The path is first normalised like a WHATWG URL path (`\` also separates segments, `.` and
/// `..` segments — including their `%2e` spellings — are resolved, characters outside the URL
/// path set are percent-encoded); then it is split on `/` with empty segments dropped. The
/// leading segments must equal the segments of `prefix` (case-sensitive; `prefix` may contain
/// `/`, e.g. `api/agents`; its empty segments are ignored) and at least two more segments must
/// follow: the namespace and the instance. Otherwise this is not an agent request: `None`.
///
/// ```
/// use agentwire_protocol::parse_agent_path;
/// let p = parse_agent_path("/agents/counter-agent/hello%20world/status", "agents").unwrap();
/// assert_eq!(p.namespace, "counter-agent");
/// assert_eq!(p.instance, "hello%20world");
/// assert_eq!(p.rest_path(), "status");
/// assert!(parse_agent_path("/agents/counter-agent", "agents").is_none());
/// ```
pub fn parse_agent_path<'a>(path: &'a str, prefix: &str) -> Option<AgentPath<'a>> {
    let segments = normalise(path);
    let mut segments = segments.into_iter().filter(|s| !s.is_empty());
    for want in prefix.split('/').filter(|s| !s.is_empty()) {
        if segments.next()? != want {
            return None;
        }
    }
    let namespace = segments.next()?;
    let instance = segments.next()?;
    Some(AgentPath {
        namespace,
        instance,
        rest: segments.collect(),
    })
}

/// WHATWG path-state processing of an absolute path of a special URL: segments (empty ones
/// kept), dot segments resolved, percent-encoding applied.
fn normalise(path: &str) -> Vec<Cow<'_, str>> {
    let path = path.strip_prefix(['/', '\\']).unwrap_or(path);
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    let mut pieces = path.split(['/', '\\']).peekable();
    while let Some(seg) = pieces.next() {
        let last = pieces.peek().is_none();
        if is_double_dot(seg) {
            out.pop();
            if last {
                out.push(Cow::Borrowed(""));
            }
        } else if is_single_dot(seg) {
            if last {
                out.push(Cow::Borrowed(""));
            }
        } else {
            out.push(percent_encode_path(seg));
        }
    }
    out
}

fn is_single_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

fn is_double_dot(s: &str) -> bool {
    matches!(s, "..")
        || s.eq_ignore_ascii_case(".%2e")
        || s.eq_ignore_ascii_case("%2e.")
        || s.eq_ignore_ascii_case("%2e%2e")
}

/// The WHATWG path percent-encode set: C0 controls, space, `"`, `#`, `<`, `>`, `?`, `` ` ``,
/// `{`, `}`, DEL and everything non-ASCII.
fn in_path_set(b: u8) -> bool {
    matches!(b, 0..=0x20 | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | 0x7f..)
}

fn percent_encode_path(seg: &str) -> Cow<'_, str> {
    if !seg.bytes().any(in_path_set) {
        return Cow::Borrowed(seg);
    }
    let mut out = String::with_capacity(seg.len() + 8);
    for b in seg.bytes() {
        if in_path_set(b) {
            out.push('%');
            out.push(hex_upper(b >> 4));
            out.push(hex_upper(b & 0xf));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

fn hex_upper(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0xf)])
}

/// Class (or binding) name → URL namespace, exactly as the reference implementation does it.
///
/// 1. If the name is entirely upper-case and has at least one cased letter: lower-case it and
///    replace `_` with `-`.
/// 2. Otherwise replace every ASCII upper-case letter `X` by `-x`, drop one leading `-`,
///    replace `_` with `-`, and drop one trailing `-`.
///
/// ```
/// use agentwire_protocol::camel_case_to_kebab_case as kebab;
/// assert_eq!(kebab("CounterAgent"), "counter-agent");
/// assert_eq!(kebab("MyHTTPAgent"), "my-h-t-t-p-agent");
/// assert_eq!(kebab("MY_AGENT"), "my-agent");
/// ```
pub fn camel_case_to_kebab_case(name: &str) -> String {
    let lower = name.to_lowercase();
    if lower != name && name.to_uppercase() == name {
        return lower.replace('_', "-");
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    let out = out.strip_prefix('-').unwrap_or(&out).replace('_', "-");
    match out.strip_suffix('-') {
        Some(s) => s.to_owned(),
        None => out,
    }
}

/// The connection id the client asked for: the first `_pk` parameter of the query, decoded as
/// `URLSearchParams` does (`+` is a space, `%XX` escapes, invalid UTF-8 replaced). `None` when
/// absent, in which case the server generates an id. An empty `_pk=` gives `Some("")`, as
/// upstream.
///
/// ```
/// use agentwire_protocol::connection_id;
/// assert_eq!(connection_id("_pk=3f6c-1&readonly=1").as_deref(), Some("3f6c-1"));
/// assert_eq!(connection_id("tag=blue").as_deref(), None);
/// ```
pub fn connection_id(query: &str) -> Option<Cow<'_, str>> {
    query_param(query, CONNECTION_ID_PARAM)
}

/// The first value of parameter `name` in an `application/x-www-form-urlencoded` query string
/// (as `URLSearchParams.get`). A leading `?` is ignored.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let query = query.strip_prefix('?').unwrap_or(query);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k) == name {
            return Some(form_decode(v));
        }
    }
    None
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
pub fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex_val(*b)),
                bytes.get(i + 2).and_then(|b| hex_val(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
