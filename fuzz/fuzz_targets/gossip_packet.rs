//! Fuzz target `gossip_packet`: see `yeskv_fuzz::gossip_packet` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| yeskv_fuzz::gossip_packet(data));
