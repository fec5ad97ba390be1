//! # mev-broker: the routing service of the interagency exchange
//!
//! ## Layout
//! - [`register`] — the Unified Register of services, loaded from `schemas/`.
//! - [`pipeline`] — decode → validate → verify → authorize → record → forward → receipt → ack.
//! - [`store`] — the on-disk state (redb): dedup index, open requests,
//!   envelopes, outbox, events.
//! - [`outbox`] — publishes what the store holds until RabbitMQ confirms it.
//! - [`server`] — starting the broker over a transport; `mev broker`.
//! - [`config`] — the broker's TOML configuration.
//! - [`pki`] — the development PKI (`mev pki`).
//! - [`demo`] — `mev demo`, the exchange end to end.
//! - [`metrics`] — counters.
//! - [`clock`] — the system clock, or a manual one for tests.

pub mod clock;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod pki;
pub mod rabbitmq;
pub mod register;
pub mod report;
pub mod server;
pub mod status;
pub mod store;
