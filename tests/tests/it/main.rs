//! The integration tests of mev against the real RabbitMQ at `AMQP_URL`
//! (default amqp://guest:guest@127.0.0.1:5672/%2f), in one test binary: one
//! binary links once, where one per file linked eight times.
//!
//! Run one area with its module path, e.g.
//! `cargo test -p mev-tests --test it faults:: -- --nocapture`.

mod confidential;
mod disk_full;
mod exchange;
mod faults;
mod hostile;
mod isolation;
mod operators;
mod security;
mod store_memory;
mod tls;
