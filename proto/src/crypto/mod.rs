//! Signing and verifying, behind two small traits.
//!
//! The broker and the adapter only see [`Signer`] and [`SignatureVerifier`].
//! The ring implementations cover Ed25519, ECDSA P-256/P-384 and RSA
//! (PKCS#1 v1.5 and PSS, 2048 bits and up); a national algorithm (GOST
//! R 34.10-2012, as the Russian and Uzbek PKIs use) is added by implementing
//! both traits and registering the verifier, without touching the broker.
//!
//! ## Layout
//! - [`RingSigner`]: Ed25519, ECDSA P-256/P-384 and RSA signing from a PKCS#8 key.
//! - [`RingVerifier`]: verification of every ring algorithm the wire names.
//! - [`VerifierSet`]: several verifiers behind one [`SignatureVerifier`].
//! - [`Identity`]: an agency's signing key together with its certificate chain.
//!
//! ## Adding GOST (or any national algorithm)
//! 1. Implement [`Signer`] for the national key (its `algorithm()` returns
//!    `SignatureAlgorithm::National1`, or a new variant added to
//!    `envelope.proto`), and build an [`Identity`] with [`Identity::new`].
//! 2. Implement [`SignatureVerifier`] whose `supports()` is true only for that
//!    algorithm and whose `verify()` reads the GOST public key from the
//!    SubjectPublicKeyInfo (x509-parser's `PublicKey::GostR3410_2012`).
//! 3. Register it next to ring's:
//!    `VerifierSet::with_ring().with(Box::new(GostVerifier::new()))`, and hand
//!    that set to the broker and the adapters. Nothing else changes: the
//!    envelope code asks the set, and the set asks the first verifier that
//!    supports the algorithm.
//!
//! Certificate path validation ([`crate::trust`]) uses rustls-webpki, which
//! knows no GOST; a PKI whose CA signs with GOST needs a matching path
//! validator as well.

mod identity;
mod ring_signer;
mod ring_verifier;
mod verifier_set;

pub use identity::{Identity, IdentityError};
pub use ring_signer::RingSigner;
pub use ring_verifier::RingVerifier;
pub use verifier_set::VerifierSet;

use crate::pb::SignatureAlgorithm;

/// Something that can sign with a private key.
pub trait Signer: Send + Sync {
    /// The algorithm of the signatures this signer makes.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// Signs `message`, returning the signature bytes in the algorithm's wire form.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// Something that can verify signatures of one or more algorithms.
pub trait SignatureVerifier: Send + Sync {
    /// Whether this verifier handles `algorithm`.
    fn supports(&self, algorithm: SignatureAlgorithm) -> bool;
    /// Verifies `signature` over `message` with the public key in
    /// `spki_der` (a DER SubjectPublicKeyInfo, as found in a certificate).
    fn verify(
        &self,
        algorithm: SignatureAlgorithm,
        spki_der: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError>;
}

/// Why signing or verifying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// No verifier (or signer) handles this algorithm.
    #[error("signature algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(SignatureAlgorithm),
    /// The signature is not valid for the message and key.
    #[error("the signature does not verify")]
    BadSignature,
    /// The key cannot be used: malformed, or of another type than the algorithm.
    #[error("the public key is malformed or does not match the algorithm: {0}")]
    BadKey(String),
    /// The crypto library failed to produce a signature.
    #[error("signing failed")]
    SigningFailed,
    /// The private key was refused by ring (wrong algorithm, bad encoding).
    #[error("private key rejected: {0}")]
    KeyRejected(ring::error::KeyRejected),
    /// The private key's PEM armour does not parse.
    #[error("PEM does not parse")]
    Pem(#[from] pem::PemError),
}
