//! Signed checkpoints: the journal's size and Merkle root at a moment,
//! signed by the broker's key (RFC 9162 §4.10's signed tree head, as text).
//! Written every few seconds while entries arrive and when the broker stops
//! ([`crate::audit::checkpoints`]);
//! an auditor keeps copies elsewhere, so that a truncated or rewritten log
//! contradicts a checkpoint it cannot forge.

use super::merkle::{to_hex, Hash};
use mev_proto::crypto::{Identity, SignatureVerifier};
use mev_proto::pb::SignatureAlgorithm;
use mev_proto::trust::TrustStore;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often a checkpoint is written while the journal grows.
pub const EVERY: Duration = Duration::from_secs(10);

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The broker that signed it (its certificate is bound to this id).
    pub broker: String,
    /// Entries covered: the tree of entries `0..size`.
    pub size: u64,
    /// The Merkle root of that tree (hex).
    pub root: String,
    /// When it was signed (UTC, ms since the epoch).
    pub at_ms: i64,
    /// The signature algorithm (`mev.v1.SignatureAlgorithm` number).
    pub algorithm: i32,
    /// The signature over [`Checkpoint::signed_text`] (hex).
    pub signature: String,
    /// The broker's certificate chain (hex DER), its own first.
    pub certificate_chain: Vec<String>,
}

/// Why a checkpoint does not hold.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint does not decode: {0}")]
    Decode(String),
    #[error("checkpoint signature does not verify: {0}")]
    Signature(String),
    #[error("checkpoint certificate: {0}")]
    Certificate(String),
}

impl Checkpoint {
    /// The exact text that is signed.
    pub fn signed_text(broker: &str, size: u64, root_hex: &str, at_ms: i64) -> String {
        format!("mev-checkpoint v1\nbroker {broker}\nsize {size}\nroot {root_hex}\nat {at_ms}\n")
    }

    /// Signs the tree head `size`, `root` with `identity`.
    pub fn sign(identity: &Identity, size: u64, root: &Hash, at_ms: i64) -> Result<Self, String> {
        let root = to_hex(root);
        let text = Self::signed_text(&identity.agency, size, &root, at_ms);
        let signature = identity
            .signer
            .sign(text.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Checkpoint {
            broker: identity.agency.clone(),
            size,
            root,
            at_ms,
            algorithm: identity.signer.algorithm() as i32,
            signature: to_hex_bytes(&signature),
            certificate_chain: identity
                .certificate_chain
                .iter()
                .map(|c| to_hex_bytes(c))
                .collect(),
        })
    }

    /// Checks the signature with the key of the certificate it carries and,
    /// given `trust`, that the certificate chains to a trusted CA and is
    /// bound to `broker` at the time of signing.
    pub fn verify(
        &self,
        verifier: &dyn SignatureVerifier,
        trust: Option<&TrustStore>,
    ) -> Result<(), CheckpointError> {
        let chain: Vec<Vec<u8>> = self
            .certificate_chain
            .iter()
            .map(|h| from_hex_bytes(h))
            .collect::<Option<_>>()
            .ok_or_else(|| CheckpointError::Decode("certificate_chain is not hex".into()))?;
        let signature = from_hex_bytes(&self.signature)
            .ok_or_else(|| CheckpointError::Decode("signature is not hex".into()))?;
        let algorithm = SignatureAlgorithm::try_from(self.algorithm)
            .map_err(|_| CheckpointError::Decode(format!("algorithm {}", self.algorithm)))?;
        let leaf = chain
            .first()
            .ok_or_else(|| CheckpointError::Certificate("no certificate".into()))?;
        let spki = spki_of(leaf).map_err(CheckpointError::Certificate)?;
        let text = Self::signed_text(&self.broker, self.size, &self.root, self.at_ms);
        verifier
            .verify(algorithm, &spki, text.as_bytes(), &signature)
            .map_err(|e| CheckpointError::Signature(e.to_string()))?;
        if let Some(trust) = trust {
            let at = chrono::DateTime::from_timestamp_millis(self.at_ms).unwrap_or_default();
            trust
                .verify_certificate(&chain, &self.broker, at)
                .map_err(|e| CheckpointError::Certificate(e.to_string()))?;
        }
        Ok(())
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| e.to_string())?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

pub fn to_hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn from_hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
