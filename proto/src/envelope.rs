//! Sealing and opening envelopes.
//!
//! Sealing sets the payload digest in the header, encodes the header once and
//! signs those bytes. Opening decodes the envelope, checks the payload digest
//! against the header and decodes the header from the bytes as transmitted;
//! [`Opened::verify`] then checks the signature over exactly those bytes and the
//! signer's certificate. Nothing is re-encoded between receipt and verification.

use crate::crypto::{CryptoError, SignatureVerifier, Signer};
use crate::error::{ErrorCode, Rejection};
use crate::pb::{Envelope, Header, Kind, Signature};
use crate::trust::{TrustStore, VerifiedCert};
use chrono::{DateTime, Utc};
use prost::Message;
use ring::digest::{digest, SHA256};

pub use crate::hex::hex;
pub use crate::limits::Limits;

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("signing failed: {0}")]
    Sign(#[from] CryptoError),
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Signs `header` (after setting its payload digest) and wraps it with `payload`.
///
/// `certificate_chain` is the signer's certificate (DER) first, then any intermediates.
pub fn seal(
    mut header: Header,
    payload: Vec<u8>,
    signer: &dyn Signer,
    certificate_chain: &[Vec<u8>],
) -> Result<Envelope, SealError> {
    header.payload_sha256 = sha256(&payload).to_vec();
    let header_bytes = header.encode_to_vec();
    let value = signer.sign(&header_bytes)?;
    Ok(Envelope {
        header: header_bytes,
        payload,
        signature: Some(Signature {
            algorithm: signer.algorithm() as i32,
            value,
            certificate_chain: certificate_chain.to_vec(),
        }),
    })
}

/// A decoded envelope whose payload digest matches its header; not yet verified.
#[derive(Debug, Clone)]
pub struct Opened {
    pub envelope: Envelope,
    /// The header, decoded from `envelope.header` as transmitted.
    pub header: Header,
    /// The message digest: SHA-256 of the header bytes (which bind the payload).
    pub digest: [u8; 32],
}

/// Decodes `bytes` as an envelope and checks its integrity (not its signature).
pub fn open(bytes: &[u8], limits: &Limits) -> Result<Opened, Rejection> {
    if bytes.len() > limits.max_message_bytes {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!(
                "message is {} bytes; the limit is {}",
                bytes.len(),
                limits.max_message_bytes
            ),
        ));
    }
    let envelope = Envelope::decode(bytes)
        .map_err(|e| Rejection::new(ErrorCode::Malformed, format!("not an envelope: {e}")))?;
    open_envelope(envelope, limits)
}

/// Checks an already decoded envelope's integrity (not its signature).
pub fn open_envelope(envelope: Envelope, limits: &Limits) -> Result<Opened, Rejection> {
    let header = Header::decode(envelope.header.as_slice()).map_err(|e| {
        Rejection::new(
            ErrorCode::MalformedHeader,
            format!("header does not decode: {e}"),
        )
    })?;
    crate::validate::check_repeated_limits(&header, envelope.signature.as_ref(), limits)?;
    if header.payload_sha256.as_slice() != sha256(&envelope.payload) {
        return Err(Rejection::new(
            ErrorCode::PayloadDigestMismatch,
            "header.payload_sha256 does not match the payload",
        ));
    }
    let digest = sha256(&envelope.header);
    Ok(Opened {
        envelope,
        header,
        digest,
    })
}

impl Opened {
    /// The header's kind, or `KindUnspecified` for an unknown number.
    pub fn kind(&self) -> Kind {
        Kind::try_from(self.header.kind).unwrap_or(Kind::Unspecified)
    }

    /// Verifies the signature over the header bytes as transmitted, and that
    /// the signer's certificate is trusted at `at` and bound to `signer_id`
    /// (normally the header's sender; the broker's id for receipts and notices).
    pub fn verify_as(
        &self,
        signer_id: &str,
        trust: &TrustStore,
        verifier: &dyn SignatureVerifier,
        at: DateTime<Utc>,
    ) -> Result<VerifiedCert, Rejection> {
        let sig = self.envelope.signature.as_ref().ok_or_else(|| {
            Rejection::new(
                ErrorCode::MissingField,
                "signature: missing (UZ annex 2 §14 item 7)",
            )
        })?;
        if sig.certificate_chain.is_empty() {
            return Err(Rejection::new(
                ErrorCode::MissingCertificate,
                "signature.certificate_chain: empty; the signer's certificate is required",
            ));
        }
        let cert = trust
            .verify_certificate(&sig.certificate_chain, signer_id, at)
            .map_err(|e| Rejection::new(e.code(), e.to_string()))?;
        let algorithm = crate::pb::SignatureAlgorithm::try_from(sig.algorithm)
            .unwrap_or(crate::pb::SignatureAlgorithm::Unspecified);
        if !verifier.supports(algorithm) {
            return Err(Rejection::new(
                ErrorCode::UnsupportedAlgorithm,
                format!("signature algorithm {} is not supported", sig.algorithm),
            ));
        }
        verifier
            .verify(algorithm, &cert.spki_der, &self.envelope.header, &sig.value)
            .map_err(|e| match e {
                CryptoError::UnsupportedAlgorithm(_) => {
                    Rejection::new(ErrorCode::UnsupportedAlgorithm, e.to_string())
                }
                other => Rejection::new(
                    ErrorCode::BadSignature,
                    format!("signature over the header does not verify: {other}"),
                ),
            })?;
        Ok(cert)
    }

    /// [`Opened::verify_as`] with the header's sender as the signer.
    pub fn verify(
        &self,
        trust: &TrustStore,
        verifier: &dyn SignatureVerifier,
        at: DateTime<Utc>,
    ) -> Result<VerifiedCert, Rejection> {
        let sender = self.header.sender.clone();
        self.verify_as(&sender, trust, verifier, at)
    }
}
