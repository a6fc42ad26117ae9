//! Routing tables (spec §1).

use agentwire_protocol::{
    camel_case_to_kebab_case as kebab, connection_id, parse_agent_path, query_param, split_target,
};

#[test]
fn kebab_case_table() {
    let table = [
        ("CounterAgent", "counter-agent"),
        ("myAgent", "my-agent"),
        ("ChatAgentV2", "chat-agent-v2"),
        ("MyHTTPAgent", "my-h-t-t-p-agent"),
        ("AIChatAgent", "a-i-chat-agent"),
        ("HTTP", "http"),
        ("MY_AGENT", "my-agent"),
        ("my_agent", "my-agent"),
        ("Agent_", "agent"),
        ("counter-agent", "counter-agent"),
        // digits are not separated; all-digit names have no letters
        ("Agent2Go", "agent2-go"),
        ("123", "123"),
        ("A1", "a1"),
        // one leading / trailing dash dropped, after the replacements
        ("_Agent", "--agent"),
        ("x__", "x-"),
        ("", ""),
        ("_", ""),
        // the upper-case test is Unicode-aware; the per-letter split is ASCII-only
        ("ÄGENT", "ägent"),
        ("MyÄgent", "myÄgent"),
    ];
    for (name, ns) in table {
        assert_eq!(kebab(name), ns, "{name}");
    }
}

type Routed = Option<(String, String, Vec<String>)>;

fn route(path: &str, prefix: &str) -> Routed {
    parse_agent_path(path, prefix).map(|p| {
        (
            p.namespace.into_owned(),
            p.instance.into_owned(),
            p.rest.into_iter().map(|s| s.into_owned()).collect(),
        )
    })
}

#[test]
fn routing_table() {
    let some = |ns: &str, inst: &str, rest: &[&str]| {
        Some((
            ns.to_owned(),
            inst.to_owned(),
            rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ))
    };
    let table: &[(&str, &str, Routed)] = &[
        (
            "/agents/counter-agent/golden",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        (
            "/agents/counter-agent/golden/",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        (
            "//agents//counter-agent///golden",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        (
            "/agents/counter-agent/golden/status",
            "agents",
            some("counter-agent", "golden", &["status"]),
        ),
        ("/agents/a/b/c/d/", "agents", some("a", "b", &["c", "d"])),
        // raw instance name: no percent-decoding, case kept
        (
            "/agents/counter-agent/hello%20world",
            "agents",
            some("counter-agent", "hello%20world", &[]),
        ),
        (
            "/agents/counter-agent/Golden",
            "agents",
            some("counter-agent", "Golden", &[]),
        ),
        // the URL layer percent-encodes what a path may not hold
        (
            "/agents/counter-agent/hello world",
            "agents",
            some("counter-agent", "hello%20world", &[]),
        ),
        (
            "/agents/counter-agent/é",
            "agents",
            some("counter-agent", "%C3%A9", &[]),
        ),
        // not enough segments, wrong prefix, case-sensitive prefix
        ("/agents/counter-agent", "agents", None),
        ("/agents/counter-agent/", "agents", None),
        ("/agents", "agents", None),
        ("/", "agents", None),
        ("", "agents", None),
        ("/api/counter-agent/golden", "agents", None),
        ("/Agents/counter-agent/golden", "agents", None),
        // prefixes with `/`
        (
            "/api/agents/counter-agent/golden",
            "api/agents",
            some("counter-agent", "golden", &[]),
        ),
        (
            "/api/agents/counter-agent/golden",
            "/api/agents/",
            some("counter-agent", "golden", &[]),
        ),
        ("/agents/counter-agent/golden", "api/agents", None),
        ("/x/y", "", some("x", "y", &[])),
        // dot segments and backslashes, as a WHATWG URL parser resolves them
        (
            "/agents/x/../counter-agent/golden",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        (
            "/agents/./counter-agent/%2E/golden",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        ("/agents/counter-agent/golden/..", "agents", None),
        (
            "\\agents\\counter-agent\\golden",
            "agents",
            some("counter-agent", "golden", &[]),
        ),
        // the `sub` segment is not special here (sub-agents are out of scope)
        (
            "/agents/p/n/sub/c/m",
            "agents",
            some("p", "n", &["sub", "c", "m"]),
        ),
    ];
    for (path, prefix, want) in table {
        assert_eq!(&route(path, prefix), want, "{path} with prefix {prefix:?}");
    }
    let p = parse_agent_path("/agents/a/b/c//d", "agents").unwrap();
    assert_eq!(p.rest_path(), "c/d");
}

#[test]
fn request_targets_and_connection_ids() {
    assert_eq!(
        split_target("/agents/counter-agent/golden?_pk=abc&readonly=1"),
        ("/agents/counter-agent/golden", Some("_pk=abc&readonly=1"))
    );
    // agentFetch sends a bare `?`: no query
    assert_eq!(
        split_target("/agents/counter-agent/golden/status?"),
        ("/agents/counter-agent/golden/status", None)
    );
    assert_eq!(split_target("/a/b/c"), ("/a/b/c", None));
    assert_eq!(split_target("/a/b/c?x=1#frag"), ("/a/b/c", Some("x=1")));

    let table: &[(&str, Option<&str>)] = &[
        (
            "_pk=3f6c0e2a-0000-4000-8000-000000000001",
            Some("3f6c0e2a-0000-4000-8000-000000000001"),
        ),
        ("_pk=raw-5&protocol=0", Some("raw-5")),
        ("readonly=1&_pk=x&tag=idle", Some("x")),
        ("_pk=first&_pk=second", Some("first")),
        ("_pk=", Some("")),
        ("_pk", Some("")),
        ("_pk=a%20b+c", Some("a b c")),
        ("%5Fpk=enc", Some("enc")),
        ("_pk=%zz", Some("%zz")),
        ("_pk=%ff", Some("\u{fffd}")),
        ("?_pk=q", Some("q")),
        ("tag=blue", None),
        ("", None),
        ("&&", None),
        ("_PK=x", None),
    ];
    for (query, want) in table {
        assert_eq!(connection_id(query).as_deref(), *want, "{query}");
    }
    assert_eq!(
        query_param("readonly=1&tag=blue", "tag").as_deref(),
        Some("blue")
    );
}

#[test]
fn golden_connect_urls_route() {
    let transcript = include_str!("fixtures/golden-transcript.jsonl");
    let mut n = 0;
    for line in transcript.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["dir"] != "connect" {
            continue;
        }
        let url = v["url"].as_str().unwrap();
        let target = &url[url.find("/agents").unwrap()..];
        let (path, query) = split_target(target);
        let p = parse_agent_path(path, "agents").unwrap();
        if p.namespace == "counter-agent" {
            assert_eq!(p.instance, "golden");
            let pk = connection_id(query.unwrap()).unwrap();
            assert!(url.contains(&format!("_pk={pk}")));
            n += 1;
        } else {
            assert_eq!(p.namespace, "no-such-agent-xyz");
            assert_eq!(p.instance, "x");
            assert!(query.is_none());
        }
    }
    assert_eq!(n, 14);
}
