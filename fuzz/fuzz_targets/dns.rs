//! Fuzz target: the DNS message parser (UDP, and TCP with its length prefix),
//! with its contract checked by `tracker::fuzzing::dns`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::dns(data));
