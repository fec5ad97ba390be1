//! [`DevPki`]: an in-memory development CA for the demo and tests.

use super::certs::{ca_params, crl, make_leaf, CertSpec};
use super::{KeyAlg, PkiError};
use mev_proto::crypto::{Identity, IdentityError, RingSigner};
use mev_proto::trust::TrustStore;
use rcgen::{CertifiedIssuer, KeyPair};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// An in-memory development CA for the demo and tests.
pub struct DevPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// Every certificate issued: (agency named, serial).
    issued: Mutex<Vec<(Option<String>, Vec<u8>)>>,
    /// Serials revoked so far, so revocations accumulate.
    revoked: Mutex<BTreeSet<Vec<u8>>>,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

impl DevPki {
    /// A new CA with a fresh key. Another `DevPki::new()` is a foreign CA.
    pub fn new() -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(DevPki {
            ca: CertifiedIssuer::self_signed(ca_params(), key)?,
            issued: Mutex::new(Vec::new()),
            revoked: Mutex::new(BTreeSet::new()),
        })
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> String {
        self.ca.pem()
    }

    /// A trust store trusting this CA, with no CRLs.
    pub fn trust_store(&self) -> Result<TrustStore, PkiError> {
        Ok(TrustStore::new(&[self.ca_cert_der()])?)
    }

    /// A good identity for `agency`.
    pub fn issue(&self, agency: &str, alg: KeyAlg) -> Result<Identity, PkiError> {
        self.issue_with(agency, &CertSpec::new(agency, alg))
    }

    /// An identity claiming to be `claimed`, with a certificate made to `spec`.
    pub fn issue_with(&self, claimed: &str, spec: &CertSpec) -> Result<Identity, PkiError> {
        let (cert_der, key, serial) = make_leaf(&self.ca, spec)?;
        let signer =
            RingSigner::from_pkcs8_der(key.serialized_der()).map_err(IdentityError::from)?;
        lock(&self.issued).push((spec.agency.clone(), serial));
        Ok(Identity::new(claimed, Arc::new(signer), vec![cert_der]))
    }

    /// An identity whose certificate expired two days ago.
    pub fn issue_expired(&self, agency: &str, alg: KeyAlg) -> Result<Identity, PkiError> {
        self.issue_with(agency, &CertSpec::new(agency, alg).valid_days(-30, -2))
    }

    /// An identity whose certificate becomes valid in two days.
    pub fn issue_not_yet_valid(&self, agency: &str, alg: KeyAlg) -> Result<Identity, PkiError> {
        self.issue_with(agency, &CertSpec::new(agency, alg).valid_days(2, 30))
    }

    /// An identity claiming `claimed` with a certificate naming `named`.
    pub fn issue_for_other_agency(
        &self,
        claimed: &str,
        named: &str,
        alg: KeyAlg,
    ) -> Result<Identity, PkiError> {
        self.issue_with(claimed, &CertSpec::new(named, alg))
    }

    /// An identity whose certificate lacks the digitalSignature key usage.
    pub fn issue_without_signing_usage(
        &self,
        agency: &str,
        alg: KeyAlg,
    ) -> Result<Identity, PkiError> {
        let spec = CertSpec {
            digital_signature: false,
            ..CertSpec::new(agency, alg)
        };
        self.issue_with(agency, &spec)
    }

    /// A CRL (DER) signed by this CA listing exactly `serials`.
    pub fn crl_der(&self, serials: &[Vec<u8>]) -> Result<Vec<u8>, PkiError> {
        Ok(crl(&self.ca, serials)?.der().to_vec())
    }

    /// Revokes every certificate issued so far naming `agency`; returns the
    /// CRL (DER) of everything revoked so far, for [`TrustStore::set_crls`].
    pub fn revoke_agency(&self, agency: &str) -> Result<Vec<u8>, PkiError> {
        let mut revoked = lock(&self.revoked);
        for (named, serial) in lock(&self.issued).iter() {
            if named.as_deref() == Some(agency) {
                revoked.insert(serial.clone());
            }
        }
        let serials: Vec<Vec<u8>> = revoked.iter().cloned().collect();
        drop(revoked);
        self.crl_der(&serials)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data are only appended to; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
