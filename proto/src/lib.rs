//! # mev-proto: the wire of the interagency exchange
//!
//! The one crate that owns what crosses RabbitMQ; the broker and the adapter
//! library both depend on it and neither redefines a message. Pure: no I/O,
//! no async runtime.
//!
//! ## Layout
//! - [`pb`]: the protobuf types generated from `proto/mev/v1/envelope.proto`.
//! - [`error`]: stable numeric error codes ([`ErrorCode`]) and [`Rejection`].
//! - [`validate`]: the mandatory contents of requests (UZ annex 2 §14) and replies.
//! - [`envelope`]: sealing (sign the header bytes) and opening (decode, check
//!   the payload digest, verify the signature over the bytes as transmitted).
//! - [`crypto`]: the [`crypto::Signer`] and [`crypto::SignatureVerifier`] traits and
//!   their ring implementations; a national algorithm plugs in here.
//! - [`trust`]: certificate path validation against trusted CAs and CRLs, and
//!   the binding of a certificate to an agency id.
//! - [`confidential`]: optional payload encryption to the recipient agency's
//!   X25519 agreement key (the exchange routes and checks but cannot read it).
//! - [`time`]: conversions between wire timestamps and chrono.
//! - [`limits`]: the size limits a message is opened with; [`hex`]: hex text
//!   of digests (modules of their own so that no two modules use each other).

pub mod confidential;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod hex;
pub mod limits;
pub mod time;
pub mod trust;
pub mod validate;

/// Types generated from the `.proto` files by prost.
#[allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/mev.v1.rs"));
}

pub use envelope::{Opened, SealError};
pub use error::{ErrorCode, Rejection};
pub use pb::{Envelope, Header, Kind};
