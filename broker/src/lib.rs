//! # mev-broker: the routing service of the interagency exchange
//!
//! ## Layout
//! - [`register`] — the Unified Register of services, loaded from `schemas/`.
//! - [`pipeline`] — decode → validate → verify → authorize → record → forward → receipt → ack.
//! - [`store`] — the on-disk state (redb): dedup index, open requests, events.
//! - [`server`] — starting the broker over a transport; `mev broker`.
//! - [`config`] — the broker's TOML configuration.
//! - [`pki`] — the development PKI (`mev pki`).
//! - [`demo`] — `mev demo`, the exchange end to end.
//! - [`metrics`] — counters.

pub mod config;
pub mod demo;
pub mod metrics;
pub mod pipeline;
pub mod pki;
pub mod register;
pub mod server;
pub mod store;
