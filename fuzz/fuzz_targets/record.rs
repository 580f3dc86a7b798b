//! Fuzz target `record`: see `yeskv_fuzz::record` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::record(data));
