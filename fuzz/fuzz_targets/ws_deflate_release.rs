#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentwire_ws::fuzz::deflate_release(data));
