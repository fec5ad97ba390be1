//! # mev-broker: the routing service of the interagency exchange
//!
//! ## Layout
//! - [`register`] — the Unified Register of services, loaded from `schemas/`.
//! - [`pipeline`] — decode → validate → verify → authorize → record → forward → receipt → ack.
//! - [`store`] — the on-disk state (redb): dedup index, open requests,
//!   envelopes, outbox, events.
//! - [`outbox`] — publishes what the store holds until RabbitMQ confirms it.
//! - [`server`] — starting the broker over a transport (`mev broker` runs it;
//!   the `mev` command and its tools are the `mev-cli` crate).
//! - [`config`] — the broker's TOML configuration.
//! - [`metrics`] — counters.
//! - [`clock`] — the system clock, or a manual one for tests.

pub mod clock;
pub mod config;
pub mod deadline;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod register;
pub mod server;
pub mod store;
