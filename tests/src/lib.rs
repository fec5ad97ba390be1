//! Test harness for mev's integration tests.
