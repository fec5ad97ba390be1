//! `cargo +nightly fuzz run envelope_open`: see fuzz/README.md and [`mev_fuzz::envelope_open`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mev_fuzz::envelope_open(data));
