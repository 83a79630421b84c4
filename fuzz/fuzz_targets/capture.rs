//! Fuzz target: the pcap/pcapng reader and import-pcap's per-frame counting,
//! with its contract checked by `tracker::fuzzing::capture`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::capture(data));
