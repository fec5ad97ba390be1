//! [`VerifierSet`]: several [`SignatureVerifier`]s behind one, so a national
//! algorithm's verifier can sit beside ring's (see the [module docs](super)).

use super::{CryptoError, RingVerifier, SignatureVerifier};
use crate::pb::SignatureAlgorithm;
use std::fmt;

/// An ordered list of verifiers; each signature goes to the first one that
/// supports its algorithm.
#[derive(Default)]
pub struct VerifierSet {
    verifiers: Vec<Box<dyn SignatureVerifier>>,
}

impl VerifierSet {
    /// An empty set: supports nothing until verifiers are registered.
    pub fn new() -> Self {
        VerifierSet::default()
    }

    /// A set holding [`RingVerifier`]: the usual starting point.
    pub fn with_ring() -> Self {
        VerifierSet::new().with(Box::new(RingVerifier::new()))
    }

    /// Adds `verifier` after those already registered (builder form).
    pub fn with(mut self, verifier: Box<dyn SignatureVerifier>) -> Self {
        self.register(verifier);
        self
    }

    /// Adds `verifier` after those already registered.
    pub fn register(&mut self, verifier: Box<dyn SignatureVerifier>) -> &mut Self {
        self.verifiers.push(verifier);
        self
    }

    /// How many verifiers are registered.
    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    /// Whether no verifier is registered.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }
}

impl fmt::Debug for VerifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierSet")
            .field("verifiers", &self.verifiers.len())
            .finish()
    }
}

impl SignatureVerifier for VerifierSet {
    fn supports(&self, algorithm: SignatureAlgorithm) -> bool {
        self.verifiers.iter().any(|v| v.supports(algorithm))
    }

    fn verify(
        &self,
        algorithm: SignatureAlgorithm,
        spki_der: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.verifiers
            .iter()
            .find(|v| v.supports(algorithm))
            .ok_or(CryptoError::UnsupportedAlgorithm(algorithm))?
            .verify(algorithm, spki_der, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for a national verifier: accepts one fixed signature.
    struct Fake;
    impl SignatureVerifier for Fake {
        fn supports(&self, algorithm: SignatureAlgorithm) -> bool {
            algorithm == SignatureAlgorithm::National1
        }
        fn verify(
            &self,
            _: SignatureAlgorithm,
            _: &[u8],
            _: &[u8],
            signature: &[u8],
        ) -> Result<(), CryptoError> {
            if signature == b"ok" {
                Ok(())
            } else {
                Err(CryptoError::BadSignature)
            }
        }
    }

    #[test]
    fn dispatches_to_the_verifier_that_supports_the_algorithm() {
        let empty = VerifierSet::new();
        assert!(!empty.supports(SignatureAlgorithm::Ed25519));
        assert!(matches!(
            empty.verify(SignatureAlgorithm::Ed25519, b"", b"", b""),
            Err(CryptoError::UnsupportedAlgorithm(_))
        ));

        let set = VerifierSet::with_ring().with(Box::new(Fake));
        assert_eq!(set.len(), 2);
        assert!(set.supports(SignatureAlgorithm::Ed25519));
        assert!(set.supports(SignatureAlgorithm::National1));
        assert!(!set.supports(SignatureAlgorithm::Unspecified));
        assert!(set
            .verify(SignatureAlgorithm::National1, b"", b"m", b"ok")
            .is_ok());
        assert!(matches!(
            set.verify(SignatureAlgorithm::National1, b"", b"m", b"no"),
            Err(CryptoError::BadSignature)
        ));
    }
}
