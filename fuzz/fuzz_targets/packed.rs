//! Fuzz target: the packed days' decoders (roll-ups, raw flows, the DNS log), with their
//! contract checked by `tracker::fuzzing::packed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::packed(data));
