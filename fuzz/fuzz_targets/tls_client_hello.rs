//! Fuzz target: the TLS ClientHello reader (the SNI of a flow's first TCP payload),
//! with its contract checked by `tracker::fuzzing::tls_client_hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::tls_client_hello(data));
