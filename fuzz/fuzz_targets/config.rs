//! Fuzz target: the configuration file's reader (`/etc/tracker/tracker.toml`, `--config FILE`),
//! with its contract checked by `tracker::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker::fuzzing::config(data));
