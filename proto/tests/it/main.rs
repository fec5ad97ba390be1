//! mev-proto's integration tests, one binary (one link on two cores):
//! envelope properties, certificate trust, and the fuzz regressions.

mod envelope_props;
mod fuzz_regressions;
mod pki_support;
mod trust;
