//! Fuzz target `context_token`: see `yeskv_fuzz::context_token` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::context_token(data));
