//! The `mev` command's integration tests, one binary (one link on two
//! cores): the real binary and the libraries behind it.

mod journal;
mod pki_cli;
mod register;
mod report;
