//! Fuzz target `rpc_frame`: see `yeskv_fuzz::rpc_frame` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::rpc_frame(data));
