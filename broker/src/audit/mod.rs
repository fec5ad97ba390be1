//! What is done with the journal kept in the store: checkpoints signed
//! while it grows ([`checkpoints`]), old entries sealed into segment files
//! ([`segment`]), and the auditor's operations ([`verify`]: verify
//! everything, trace, prove one entry, check a proof offline, replay).
//! The journal's format itself (events, entries, the Merkle tree, signed
//! tree heads) is [`crate::journal`].

pub mod checkpoints;
pub mod segment;
mod verify;

pub use verify::*;
