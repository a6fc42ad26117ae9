//! One SSE decode arm over one workload, once: for instruction counts under
//! `valgrind --tool=callgrind`, which do not depend on the machine's load (criterion ratios on
//! a shared machine do). The arm `none` builds the workload only; subtract its count.
//!
//! ```sh
//! cargo build --release -p agentwire-benches --bin sse_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/sse_count a agentwire
//! ```

use agentwire_benches::sse::{self, Chunking};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (workload, arm) = match &args[..] {
        [_, w, a] => (w.as_str(), a.as_str()),
        _ => {
            eprintln!("usage: sse_count a|c_tokens|b|c_big agentwire|sse-stream|floor|none");
            std::process::exit(2);
        }
    };
    let w = match workload {
        "a" => sse::tokens(Chunking::Fixed(16 * 1024)),
        "c_tokens" => sse::tokens(Chunking::Random(4096)),
        "b" => sse::big(Chunking::Fixed(16 * 1024)),
        "c_big" => sse::big(Chunking::Random(4096)),
        other => panic!("unknown workload {other}"),
    };
    let chunks = &w.chunks;
    // the bench's own arms (`agentwire_benches::sse`)
    let (n, bytes) = match arm {
        "agentwire" => sse::ours_batch(chunks),
        "sse-stream" => sse::sse_stream(chunks),
        "floor" => sse::floor(chunks),
        "none" => (w.specs.len(), w.data_bytes),
        other => panic!("unknown arm {other}"),
    };
    assert_eq!(
        (n, bytes),
        (w.specs.len(), w.data_bytes),
        "{arm} on {workload}"
    );
    println!("{arm} {workload}: {n} events, {bytes} data bytes");
}
