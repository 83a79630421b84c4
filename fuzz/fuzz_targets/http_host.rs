//! Fuzz target: the HTTP request reader (the Host of a flow's first TCP payload),
//! with its contract checked by `tracker::fuzzing::http_host`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::http_host(data));
