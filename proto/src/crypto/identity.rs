//! [`Identity`]: who signs (an agency or the broker), with what key, and the
//! certificate chain that vouches for that key.

use super::ring_signer::pkcs8_der_from_pem;
use super::{CryptoError, RingSigner, Signer};
use crate::trust::{certificate_agency, TrustError};
use std::fmt;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An agency's (or the broker's) signing identity.
#[derive(Clone)]
pub struct Identity {
    /// The agency id the certificate binds (its SAN URI `urn:mev:agency:<ID>`).
    pub agency: String,
    /// The private key.
    pub signer: Arc<dyn Signer>,
    /// DER certificates: the identity's own first, then any intermediates.
    pub certificate_chain: Vec<Vec<u8>>,
}

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The private key is unusable.
    #[error("private key")]
    Key(#[from] CryptoError),
    /// The certificate PEM does not parse.
    #[error("certificate PEM does not parse")]
    Pem(#[from] pem::PemError),
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("no certificate in the certificate PEM")]
    NoCertificate,
    /// The identity's certificate is malformed.
    #[error("certificate")]
    Certificate(#[source] TrustError),
    /// The certificate carries no `urn:mev:agency:` SAN URI.
    #[error("the certificate names no agency (no SAN URI urn:mev:agency:<ID>)")]
    NoAgency,
    /// The private key is not the key the certificate certifies.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

impl Identity {
    /// An identity from parts, for signers other than ring's (e.g. GOST).
    pub fn new(
        agency: impl Into<String>,
        signer: Arc<dyn Signer>,
        certificate_chain: Vec<Vec<u8>>,
    ) -> Self {
        Identity {
            agency: agency.into(),
            signer,
            certificate_chain,
        }
    }

    /// Loads a PKCS#8 private key PEM and a certificate chain PEM (own
    /// certificate first). The agency id is read from the certificate, and
    /// the key must be the one the certificate certifies.
    pub fn from_pem(key_pem: &str, cert_chain_pem: &str) -> Result<Identity, IdentityError> {
        let signer = RingSigner::from_pkcs8_der(&pkcs8_der_from_pem(key_pem)?)?;
        let certificate_chain: Vec<Vec<u8>> = pem::parse_many(cert_chain_pem)?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        let own = certificate_chain
            .first()
            .ok_or(IdentityError::NoCertificate)?;
        let agency = certificate_agency(own)
            .map_err(IdentityError::Certificate)?
            .ok_or(IdentityError::NoAgency)?;
        let (_, cert) = X509Certificate::from_der(own)
            .map_err(|e| IdentityError::Certificate(TrustError::Malformed(e.to_string())))?;
        if cert.public_key().subject_public_key.data.as_ref() != signer.public_key() {
            return Err(IdentityError::KeyMismatch);
        }
        Ok(Identity {
            agency,
            signer: Arc::new(signer),
            certificate_chain,
        })
    }

    /// The identity's own certificate (DER), if the chain is not empty.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate_chain.first().map(Vec::as_slice)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("agency", &self.agency)
            .field("algorithm", &self.signer.algorithm())
            .field("certificates", &self.certificate_chain.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

    /// A self-signed certificate for `key`, naming `agency` if given, as PEM.
    fn cert_pem(key: &KeyPair, agency: Option<&str>) -> String {
        let mut params = CertificateParams::default();
        if let Some(a) = agency {
            let uri = format!("{}{a}", crate::trust::AGENCY_URI_PREFIX);
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        params.self_signed(key).unwrap().pem()
    }

    #[test]
    fn loads_key_and_chain_and_reads_the_agency() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let id = Identity::from_pem(&key.serialize_pem(), &cert_pem(&key, Some("UZ-GNK"))).unwrap();
        assert_eq!(id.agency, "UZ-GNK");
        assert_eq!(id.certificate_chain.len(), 1);
        assert!(id.certificate().is_some());
        let debug = format!("{id:?}");
        assert!(
            debug.contains("UZ-GNK") && debug.contains("EcdsaP256Sha256"),
            "{debug}"
        );
        assert!(!debug.contains("PRIVATE"));
    }

    #[test]
    fn refuses_mismatched_or_incomplete_material() {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let other = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let key_pem = key.serialize_pem();
        assert!(matches!(
            Identity::from_pem(&key_pem, &cert_pem(&other, Some("UZ-GNK"))),
            Err(IdentityError::KeyMismatch)
        ));
        assert!(matches!(
            Identity::from_pem(&key_pem, &cert_pem(&key, None)),
            Err(IdentityError::NoAgency)
        ));
        assert!(matches!(
            Identity::from_pem(&key_pem, ""),
            Err(IdentityError::NoCertificate)
        ));
        assert!(matches!(
            Identity::from_pem("", &cert_pem(&key, Some("UZ-GNK"))),
            Err(IdentityError::Key(_))
        ));
    }
}
