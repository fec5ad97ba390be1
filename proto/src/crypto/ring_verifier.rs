//! [`RingVerifier`]: signature verification with ring for every non-national
//! algorithm on the wire, from a DER SubjectPublicKeyInfo.
//!
//! The SPKI's algorithm must match the signature algorithm (an Ed25519 key
//! never verifies an ECDSA signature, a P-384 key never a P-256 one), so a
//! signer cannot pick the algorithm to confuse the verifier.

use super::{CryptoError, SignatureVerifier};
use crate::pb::SignatureAlgorithm;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_SIG_ED25519,
};
use x509_parser::prelude::{AlgorithmIdentifier, FromDer, SubjectPublicKeyInfo};

/// The kind of a public or private key, read from its AlgorithmIdentifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Ed25519,
    EcP256,
    EcP384,
    Rsa,
    /// An RSA key restricted to PSS (id-RSASSA-PSS).
    RsaPss,
    Other,
}

impl KeyKind {
    /// Reads the key kind from an AlgorithmIdentifier (of an SPKI or PKCS#8 key).
    pub(crate) fn of(alg: &AlgorithmIdentifier<'_>) -> KeyKind {
        let oid = &alg.algorithm;
        if *oid == OID_SIG_ED25519 {
            KeyKind::Ed25519
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            KeyKind::Rsa
        } else if *oid == OID_PKCS1_RSASSAPSS {
            KeyKind::RsaPss
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => KeyKind::EcP256,
                Some(c) if c == OID_NIST_EC_P384 => KeyKind::EcP384,
                _ => KeyKind::Other,
            }
        } else {
            KeyKind::Other
        }
    }
}

/// Verifies Ed25519, ECDSA P-256/SHA-256 and P-384/SHA-384 (ASN.1 DER
/// signatures), RSA PKCS#1 v1.5/SHA-256 and RSA PSS/SHA-256 (2048 to 8192 bits).
#[derive(Debug, Clone, Copy, Default)]
pub struct RingVerifier;

impl RingVerifier {
    /// A new ring verifier (it holds no state).
    pub fn new() -> Self {
        RingVerifier
    }

    /// ring's algorithm for `algorithm`, and whether a key of `kind` fits it.
    fn ring_algorithm(
        algorithm: SignatureAlgorithm,
    ) -> Option<(&'static dyn VerificationAlgorithm, &'static [KeyKind])> {
        Some(match algorithm {
            SignatureAlgorithm::Ed25519 => (&signature::ED25519, &[KeyKind::Ed25519]),
            SignatureAlgorithm::EcdsaP256Sha256 => {
                (&signature::ECDSA_P256_SHA256_ASN1, &[KeyKind::EcP256])
            }
            SignatureAlgorithm::EcdsaP384Sha384 => {
                (&signature::ECDSA_P384_SHA384_ASN1, &[KeyKind::EcP384])
            }
            SignatureAlgorithm::RsaPkcs1Sha256 => {
                (&signature::RSA_PKCS1_2048_8192_SHA256, &[KeyKind::Rsa])
            }
            SignatureAlgorithm::RsaPssSha256 => (
                &signature::RSA_PSS_2048_8192_SHA256,
                &[KeyKind::Rsa, KeyKind::RsaPss],
            ),
            SignatureAlgorithm::Unspecified | SignatureAlgorithm::National1 => return None,
        })
    }
}

impl SignatureVerifier for RingVerifier {
    fn supports(&self, algorithm: SignatureAlgorithm) -> bool {
        Self::ring_algorithm(algorithm).is_some()
    }

    fn verify(
        &self,
        algorithm: SignatureAlgorithm,
        spki_der: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let (ring_alg, kinds) =
            Self::ring_algorithm(algorithm).ok_or(CryptoError::UnsupportedAlgorithm(algorithm))?;
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| CryptoError::BadKey(format!("SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(CryptoError::BadKey(
                "trailing bytes after the SubjectPublicKeyInfo".into(),
            ));
        }
        let kind = KeyKind::of(&spki.algorithm);
        if !kinds.contains(&kind) {
            return Err(CryptoError::BadKey(format!(
                "a {kind:?} key ({}) cannot verify {algorithm:?}",
                spki.algorithm.algorithm
            )));
        }
        // For RSA the bit string holds the PKCS#1 RSAPublicKey, which is what
        // ring wants; for EC the uncompressed point; for Ed25519 the raw key.
        UnparsedPublicKey::new(ring_alg, spki.subject_public_key.data.as_ref())
            .verify(message, signature)
            // ring's error is deliberately opaque: there is no cause to keep.
            .map_err(|ring::error::Unspecified| CryptoError::BadSignature)
    }
}
