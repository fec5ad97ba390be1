//! The audit journal: a tamper-evident history of every message.
//!
//! Every event the broker records — received, rejected (with its code),
//! forwarded, receipt sent, reply received, request closed, deadline events,
//! register loaded — is an entry appended in the same store transaction as
//! the state change it describes, carrying the full signed envelope it is
//! about (so the original signatures can be checked years later), the time
//! in UTC and in both parties' local time, and the hash of the entry before
//! it. The entries are the leaves of a Merkle tree in the style of RFC 6962 /
//! RFC 9162; the broker signs checkpoints (tree size and root) every few
//! seconds and when it stops. An auditor can then
//! - verify everything: each entry, the chain, the tree against every signed
//!   checkpoint, every signature; the first bad entry is named;
//! - prove one entry to a third party with a few hashes and a checkpoint,
//!   checked offline with the broker's certificate;
//! - trace a request and its reply, export, and replay a range.
//!
//! Reconstructing each message's movement is the exchange's duty (Tatarstan
//! §1.3, the definition of the exchange system).
//!
//! ## Layout
//! - [`merkle`]: hashing, the tree's right edge, inclusion and consistency proofs.
//! - [`entry`]: an entry's stored form.
//! - [`event`]: what is recorded: an [`Event`] of an [`EventKind`].
//! - [`checkpoint`]: signed tree heads.
//!
//! This module is the format only and reads no store. The tables live in
//! the broker's store ([`crate::store`]), which appends entries in its
//! transactions; what is done with them — the checkpoint task, sealing into
//! segment files, verify, trace, prove, replay — is [`crate::audit`]; the
//! command is `mev audit` (the `mev-cli` crate).

pub mod checkpoint;
pub mod entry;
pub mod event;
pub mod merkle;

pub use checkpoint::Checkpoint;
pub use event::{Event, EventKind};
