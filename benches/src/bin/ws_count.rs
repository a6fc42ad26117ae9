//! One WebSocket decode arm of the `ws` bench over its workload `a` (100,000 masked 32-byte
//! text frames in 64 KiB reads), once: for instruction counts under `valgrind --tool=callgrind`.
//! The arms are the bench's own ([`agentwire_benches::ws`]); the arm `none` builds the wire
//! only — subtract its count.
//!
//! ```sh
//! cargo build --release -p agentwire-benches --bin ws_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/ws_count agentwire
//! ```

use agentwire_benches::ws::{dec_agentwire, dec_soketto, dec_tungstenite, workload};

fn main() {
    let arm = std::env::args().nth(1).unwrap_or_default();
    let w = workload("a_text32_masked", 100_000, 32, true, true);
    let total = w.frames * w.payload.len();
    let got = match arm.as_str() {
        "agentwire" => dec_agentwire(&w),
        "tungstenite" => dec_tungstenite(&w),
        "soketto" => dec_soketto(&w),
        "none" => total,
        _ => {
            eprintln!("usage: ws_count agentwire|tungstenite|soketto|none");
            std::process::exit(2);
        }
    };
    assert_eq!(got, total, "{arm}");
    println!("{arm}: {got} payload bytes");
}
