//! Fuzz target: the QUIC Initial reader (decryption, CRYPTO frames, the ClientHello's SNI),
//! with its contract checked by `tracker::fuzzing::quic_initial`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::quic_initial(data));
