//! `cargo +nightly fuzz run verify_envelope`: see fuzz/README.md and [`mev_fuzz::verify_envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mev_fuzz::verify_envelope(data));
