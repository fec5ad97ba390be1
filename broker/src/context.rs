//! The broker's shared context: what its tasks read, built once at start.

use crate::clock::Clock;
use crate::metrics::Counters;
use crate::ratelimit::RateLimiter;
use crate::register::Register;
use crate::store::Store;
use mev_proto::crypto::{Identity, SignatureVerifier};
use mev_proto::envelope::Limits;
use mev_proto::trust::TrustStore;
use std::sync::Arc;

/// What the pipeline's stages, the deadline timers, the checkpoints and
/// the operators' endpoint read: the register, the trust anchors, the
/// broker's identity, the store, the limits, the counters and the clock.
pub struct Context {
    pub register: Arc<Register>,
    pub trust: Arc<TrustStore>,
    pub verifier: Arc<dyn SignatureVerifier>,
    /// The broker's own signing identity (receipts, notices).
    pub identity: Identity,
    pub store: Arc<Store>,
    pub limits: Limits,
    /// How far `sent_at` may be from the clock; `None` = unchecked.
    pub max_clock_skew: Option<chrono::TimeDelta>,
    /// How old `sent_at` may be; older copies are refused as replays (the
    /// dedup index forgets ids after this long). `None` = unchecked.
    pub max_message_age: Option<chrono::TimeDelta>,
    /// Per-agency message rate; `None` = unlimited.
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub counters: Arc<Counters>,
    /// Where the time comes from (the system's; a manual clock in tests).
    pub clock: Clock,
    /// The fraction of the allowed time after which an unanswered request
    /// is at risk and its provider warned; `None` = no warnings.
    pub at_risk_fraction: Option<f64>,
}

impl Context {
    /// A context with the defaults `mev broker` starts from: the ring
    /// verifier, default limits, no clock-skew, age or rate limits, fresh
    /// counters, the system clock, at-risk warnings at 0.8 of the allowed
    /// time. Override fields with struct update syntax:
    /// `Context { clock, ..Context::new(register, trust, identity, store) }`.
    pub fn new(
        register: Arc<Register>,
        trust: Arc<TrustStore>,
        identity: Identity,
        store: Arc<Store>,
    ) -> Context {
        Context {
            register,
            trust,
            verifier: Arc::new(mev_proto::crypto::RingVerifier::new()),
            identity,
            store,
            limits: Limits::default(),
            max_clock_skew: None,
            max_message_age: None,
            rate_limit: None,
            counters: Arc::new(Counters::default()),
            clock: Clock::system(),
            at_risk_fraction: Some(0.8),
        }
    }
}
