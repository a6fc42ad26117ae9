//! Replays the checked-in fuzz corpora (`fuzz/corpus/sse_*`) through the same invariant checks
//! the fuzz targets run, so stable `cargo test` exercises every input the fuzzers kept.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn sse_decode_corpus() {
    assert!(replay("sse_decode", agentwire_sse::fuzz::decode) > 0);
}

#[test]
fn sse_roundtrip_corpus() {
    assert!(replay("sse_roundtrip", agentwire_sse::fuzz::roundtrip) > 0);
}
