//! [`RingSigner`]: signing with ring from a PKCS#8 private key.
//!
//! The algorithm is read from the key: Ed25519, ECDSA P-256 (SHA-256) or
//! P-384 (SHA-384) with ASN.1 DER signatures, or RSA with PKCS#1 v1.5 and
//! SHA-256 (RSA PSS on request, [`RingSigner::from_pkcs8_der_for`]).

use super::ring_verifier::KeyKind;
use super::{CryptoError, Signer};
use crate::pb::SignatureAlgorithm;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair};
use std::fmt;
use x509_parser::asn1_rs::Any;
use x509_parser::prelude::{AlgorithmIdentifier, FromDer};

/// The PEM label of an unencrypted PKCS#8 private key.
const PKCS8_PEM_TAG: &str = "PRIVATE KEY";

enum Key {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

/// A private key held in memory, signing with ring.
pub struct RingSigner {
    key: Key,
    algorithm: SignatureAlgorithm,
    rng: SystemRandom,
}

impl fmt::Debug for RingSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl RingSigner {
    /// Reads a PEM `PRIVATE KEY` (unencrypted PKCS#8), detecting the algorithm.
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self, CryptoError> {
        Self::from_pkcs8_der(&pkcs8_der_from_pem(pem_text)?)
    }

    /// Reads a DER PKCS#8 private key, detecting the algorithm from the key:
    /// Ed25519, ECDSA P-256 or P-384, or RSA (signing with PKCS#1 v1.5).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let algorithm = match pkcs8_key_kind(der)? {
            KeyKind::Ed25519 => SignatureAlgorithm::Ed25519,
            KeyKind::EcP256 => SignatureAlgorithm::EcdsaP256Sha256,
            KeyKind::EcP384 => SignatureAlgorithm::EcdsaP384Sha384,
            KeyKind::Rsa => SignatureAlgorithm::RsaPkcs1Sha256,
            KeyKind::RsaPss => SignatureAlgorithm::RsaPssSha256,
            KeyKind::Other => {
                return Err(CryptoError::BadKey(
                    "the private key is not Ed25519, ECDSA P-256/P-384 or RSA".into(),
                ))
            }
        };
        Self::from_pkcs8_der_for(der, algorithm)
    }

    /// Reads a DER PKCS#8 private key for an explicitly chosen `algorithm`
    /// (e.g. RSA PSS). Fails if the key does not fit the algorithm.
    pub fn from_pkcs8_der_for(
        der: &[u8],
        algorithm: SignatureAlgorithm,
    ) -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        let key = match algorithm {
            SignatureAlgorithm::Ed25519 => Key::Ed25519(
                // ring's strict parser wants PKCS#8 v2 (with the public key);
                // OpenSSL writes v1, which the lenient parser accepts.
                Ed25519KeyPair::from_pkcs8(der)
                    .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
                    .map_err(CryptoError::KeyRejected)?,
            ),
            SignatureAlgorithm::EcdsaP256Sha256 => Key::Ecdsa(
                EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    der,
                    &rng,
                )
                .map_err(CryptoError::KeyRejected)?,
            ),
            SignatureAlgorithm::EcdsaP384Sha384 => Key::Ecdsa(
                EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    der,
                    &rng,
                )
                .map_err(CryptoError::KeyRejected)?,
            ),
            SignatureAlgorithm::RsaPkcs1Sha256 => Key::Rsa(
                RsaKeyPair::from_pkcs8(der).map_err(CryptoError::KeyRejected)?,
                &ring::signature::RSA_PKCS1_SHA256,
            ),
            SignatureAlgorithm::RsaPssSha256 => Key::Rsa(
                RsaKeyPair::from_pkcs8(der).map_err(CryptoError::KeyRejected)?,
                &ring::signature::RSA_PSS_SHA256,
            ),
            SignatureAlgorithm::Unspecified | SignatureAlgorithm::National1 => {
                return Err(CryptoError::UnsupportedAlgorithm(algorithm))
            }
        };
        Ok(RingSigner {
            key,
            algorithm,
            rng,
        })
    }

    /// The public key as carried in a SubjectPublicKeyInfo's bit string: the
    /// raw Ed25519 key, the uncompressed EC point, or the PKCS#1 RSAPublicKey.
    pub fn public_key(&self) -> &[u8] {
        match &self.key {
            Key::Ed25519(k) => k.public_key().as_ref(),
            Key::Ecdsa(k) => k.public_key().as_ref(),
            Key::Rsa(k, _) => k.public_key().as_ref(),
        }
    }
}

impl Signer for RingSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.key {
            Key::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            Key::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                // ring's error is deliberately opaque: there is no cause to keep.
                .map_err(|ring::error::Unspecified| CryptoError::SigningFailed),
            Key::Rsa(k, padding) => {
                let mut out = vec![0u8; k.public().modulus_len()];
                k.sign(*padding, &self.rng, message, &mut out)
                    .map_err(|ring::error::Unspecified| CryptoError::SigningFailed)?;
                Ok(out)
            }
        }
    }
}

/// The DER of the single unencrypted PKCS#8 key in `pem_text`.
pub(crate) fn pkcs8_der_from_pem(pem_text: &str) -> Result<Vec<u8>, CryptoError> {
    let blocks = pem::parse_many(pem_text)?;
    let mut keys = blocks.into_iter().filter(|p| p.tag() != "CERTIFICATE");
    let key = keys
        .next()
        .ok_or_else(|| CryptoError::BadKey("no PEM private key found".into()))?;
    if keys.next().is_some() {
        return Err(CryptoError::BadKey("more than one PEM private key".into()));
    }
    if key.tag() != PKCS8_PEM_TAG {
        return Err(CryptoError::BadKey(format!(
            "PEM label {:?}: expected an unencrypted PKCS#8 {PKCS8_PEM_TAG:?}",
            key.tag()
        )));
    }
    Ok(key.into_contents())
}

/// The key kind named by a PKCS#8 PrivateKeyInfo's privateKeyAlgorithm.
fn pkcs8_key_kind(der: &[u8]) -> Result<KeyKind, CryptoError> {
    let bad = |what: &str, e: &dyn fmt::Display| CryptoError::BadKey(format!("PKCS#8 {what}: {e}"));
    // PrivateKeyInfo ::= SEQUENCE { version INTEGER, privateKeyAlgorithm AlgorithmIdentifier, ... }
    let (_, info) = Any::from_der(der).map_err(|e| bad("structure", &e))?;
    let (rest, _version) = Any::from_der(info.data).map_err(|e| bad("version", &e))?;
    let (_, alg) = AlgorithmIdentifier::from_der(rest).map_err(|e| bad("algorithm", &e))?;
    Ok(KeyKind::of(&alg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{RingVerifier, SignatureVerifier};

    /// An Ed25519 PKCS#8 v1 document (as OpenSSL writes) around a fixed seed.
    fn ed25519_v1(seed: [u8; 32]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        der
    }

    #[test]
    fn reads_openssl_style_ed25519_keys_and_signs() {
        let signer = RingSigner::from_pkcs8_der(&ed25519_v1([7; 32])).unwrap();
        assert_eq!(signer.algorithm(), SignatureAlgorithm::Ed25519);
        let sig = signer.sign(b"message").unwrap();
        // SPKI for an Ed25519 key: fixed prefix, then the raw public key.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(signer.public_key());
        let v = RingVerifier::new();
        v.verify(SignatureAlgorithm::Ed25519, &spki, b"message", &sig)
            .unwrap();
        assert!(matches!(
            v.verify(SignatureAlgorithm::Ed25519, &spki, b"massage", &sig),
            Err(CryptoError::BadSignature)
        ));
        assert!(!format!("{signer:?}").contains("07"));
    }

    #[test]
    fn refuses_what_is_not_an_unencrypted_pkcs8_key() {
        assert!(matches!(
            RingSigner::from_pkcs8_der(b"junk"),
            Err(CryptoError::BadKey(_))
        ));
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            RingSigner::from_pkcs8_pem(sec1),
            Err(CryptoError::BadKey(_))
        ));
        assert!(matches!(
            RingSigner::from_pkcs8_pem("not pem"),
            Err(CryptoError::BadKey(_) | CryptoError::Pem(_))
        ));
        // An Ed25519 key cannot be forced into ECDSA.
        assert!(matches!(
            RingSigner::from_pkcs8_der_for(
                &ed25519_v1([1; 32]),
                SignatureAlgorithm::EcdsaP256Sha256
            ),
            Err(CryptoError::KeyRejected(_))
        ));
        assert!(matches!(
            RingSigner::from_pkcs8_der_for(&ed25519_v1([1; 32]), SignatureAlgorithm::National1),
            Err(CryptoError::UnsupportedAlgorithm(_))
        ));
    }
}
