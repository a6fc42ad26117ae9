//! Classification, parsing, re-encoding and routing of arbitrary input: never panics, and the
//! invariants checked by `agentwire_protocol::fuzz::classify` hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_protocol::fuzz::classify(data));
