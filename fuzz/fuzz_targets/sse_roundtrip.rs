#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_sse::fuzz::roundtrip(data));
