//! Fuzz target `layout_store`: see `yeskv_fuzz::layout_store` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::layout_store(data));
