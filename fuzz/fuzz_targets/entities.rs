//! Fuzz target: the entity table's TOML loader (`--entities FILE`, the built-in table overridden),
//! with its contract checked by `tracker::fuzzing::entities`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::entities(data));
