//! # mev-broker: the routing service of the interagency exchange
//!
//! ## Layout, from the bottom up (no module uses one above it; a test,
//! `tests/it/layers.rs`, fails on a circle)
//! - [`clock`] — the system clock, or a manual one for tests.
//! - [`config`] — the broker's TOML configuration.
//! - [`register`] — the Unified Register of services and the working-day
//!   calendars, loaded from `schemas/`.
//! - [`metrics`] — counters and histograms.
//! - [`ratelimit`] — per-agency token buckets.
//! - [`journal`] — the journal's format: events, entries, the Merkle tree,
//!   signed tree heads.
//! - [`store`] — the broker's state, one module per concept (dedup index,
//!   open requests, timers, the journal's tables, the outbox) behind one
//!   interface (`Engine`, `Txn`, `State`); today's engine is redb through
//!   `mev-store`.
//! - [`context`] — what the broker's tasks share, built once at start.
//! - [`sign`] — receipts and notices signed by the exchange, put in the outbox.
//! - [`deadline`] — deadlines fixed, tracked and their timers fired.
//! - [`audit`] — checkpoints, sealed segments, verify, trace, prove, replay.
//! - [`outbox`] — publishes what the store holds until RabbitMQ confirms it.
//! - [`pipeline`] — decode → validate → verify → authorize → record → receipt → ack.
//! - [`http`] — the operators' endpoint.
//! - [`server`] — starting the broker over a transport (`mev broker` runs
//!   it; the `mev` command and its tools are the `mev-cli` crate).

pub mod audit;
pub mod clock;
pub mod config;
pub mod context;
pub mod deadline;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod ratelimit;
pub mod register;
pub mod server;
pub mod sign;
pub mod store;
