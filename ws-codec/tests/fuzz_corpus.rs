//! Replays the checked-in fuzz corpora (`fuzz/corpus/ws_*`) through the fuzz entry points, so
//! stable `cargo test` exercises them.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn ws_frame() {
    replay("ws_frame", agentwire_ws::fuzz::frame);
}

#[test]
fn ws_server() {
    replay("ws_server", agentwire_ws::fuzz::server);
}

#[test]
fn ws_client() {
    replay("ws_client", agentwire_ws::fuzz::client);
}

#[test]
fn ws_handshake() {
    replay("ws_handshake", agentwire_ws::fuzz::handshake);
}

#[cfg(feature = "deflate")]
#[test]
fn ws_deflate_server() {
    replay("ws_deflate_server", agentwire_ws::fuzz::deflate_server);
}

#[cfg(feature = "deflate")]
#[test]
fn ws_deflate_client() {
    replay("ws_deflate_client", agentwire_ws::fuzz::deflate_client);
}

#[cfg(feature = "deflate")]
#[test]
fn ws_deflate_release() {
    replay("ws_deflate_release", agentwire_ws::fuzz::deflate_release);
}
