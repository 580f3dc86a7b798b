//! Fuzz target `peer_message`: see `yeskv_fuzz::peer_message` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::peer_message(data));
