//! # mev-cli: the `mev` command and its tools
//!
//! The broker service itself is `mev-broker`; this crate is what runs it
//! (`mev broker`) and the tools around it, each a module:
//! - [`demo`] — `mev demo`: the exchange end to end, embedded or over RabbitMQ;
//! - [`pki`] — `mev pki`: the development PKI on disk ([`mev_devpki`]);
//! - [`register`] — `mev register check`;
//! - [`audit`] — `mev audit`: verify, trace, export, prove, check a proof, seal, replay;
//! - [`report`] — `mev report`: quality reports from the journal;
//! - [`status`] — `mev status`: a running broker's state, from its endpoint;
//! - [`deploy`] — `mev deploy`: RabbitMQ definitions with per-agency accounts.

pub mod audit;
pub mod demo;
pub mod deploy;
pub mod pki;
pub mod register;
pub mod report;
pub mod status;
