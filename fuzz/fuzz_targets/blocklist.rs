//! Fuzz target: the blocklist reader (hosts files and plain domain lists),
//! with its contract checked by `tracker::fuzzing::blocklist`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::blocklist(data));
