//! `cargo +nightly fuzz run validate_header`: see fuzz/README.md and [`mev_fuzz::validate_header`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mev_fuzz::validate_header(data));
