//! The adapter's public error.

use crate::store::StoreError;
use crate::transport::TransportError;
use mev_proto::{ErrorCode, Rejection};

/// What went wrong in the adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The message broker could not be reached or refused an operation.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The exchange rejected the message (a signed negative receipt).
    #[error("rejected by the exchange: {0}")]
    Rejected(Rejection),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Seal(#[from] mev_proto::SealError),
    /// The message built by the caller is invalid (checked before sending).
    #[error("invalid message: {0}")]
    Invalid(Rejection),
    /// The adapter shut down before the answer arrived.
    #[error("the adapter shut down before the answer arrived")]
    Closed,
    /// The adapter's store (its outbox and dedup index) failed; the message
    /// was not sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Waiting took longer than allowed.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl AdapterError {
    /// Whether sending the same message again may succeed.
    pub fn can_be_recovered(&self) -> bool {
        match self {
            AdapterError::Transport(e) => e.can_be_recovered(),
            AdapterError::Rejected(r) => {
                r.code == ErrorCode::Internal || r.code == ErrorCode::RateLimited
            }
            AdapterError::Timeout(_) => true,
            _ => false,
        }
    }
}
