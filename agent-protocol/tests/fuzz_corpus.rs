//! Replays the `protocol_classify` fuzz corpus through the fuzz entry point.

use std::path::Path;

#[test]
fn replay_protocol_classify_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/protocol_classify");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("no corpus at {}; skipping", dir.display());
        return;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            agentwire_protocol::fuzz::classify(&data);
            n += 1;
        }
    }
    assert!(n > 0, "empty corpus at {}", dir.display());
}
