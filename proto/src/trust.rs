//! Certificate trust: path validation to configured CAs (rustls-webpki),
//! revocation by CRL, the digital-signature key usage, and the binding of a
//! certificate to an agency id (a SAN URI `urn:mev:agency:<ID>`).
//!
//! Checks, in order: the end-entity certificate parses; the chain builds to a
//! trusted CA at the given time (validity, signatures, CA constraints, and
//! revocation against the loaded CRLs); the certificate names the expected
//! agency; its keyUsage, if present, allows digital signatures.
//!
//! Revocation policy: every certificate on the path is looked up in the CRL
//! its issuer published, if one is loaded. When no CRL from that issuer is
//! loaded the status is taken as good (the operator decides which CRLs to
//! load); a CRL's nextUpdate is not enforced, so a stale CRL still revokes.
//! A loaded CRL whose signature does not verify makes every certificate of
//! that issuer fail with [`TrustError::Config`]: fail closed, and tell the
//! operator.
//!
//! Extended key usage: a certificate without one is fine; one with an EKU
//! must allow clientAuth, emailProtection, documentSigning or any purpose.

use crate::error::ErrorCode;
use crate::hex::hex;
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, ExtendedKeyUsageValidator, KeyPurposeId,
    KeyPurposeIdIter, KeyUsage, OwnedCertRevocationList, RequiredEkuNotFoundContext,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The SAN URI prefix that binds a certificate to an agency id.
pub const AGENCY_URI_PREFIX: &str = "urn:mev:agency:";

/// A certificate that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedCert {
    /// The agency id the certificate is bound to.
    pub agency: String,
    /// The DER SubjectPublicKeyInfo of the certificate's key.
    pub spki_der: Vec<u8>,
    /// The subject, as text.
    pub subject: String,
    /// The serial number, lowercase hex of its DER integer contents.
    pub serial: String,
}

/// Why a certificate was not accepted. Each has its own [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The chain is empty.
    #[error("no certificate supplied")]
    NoCertificate,
    /// A certificate does not parse.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// No path to a trusted CA (unknown issuer, bad signature, constraints).
    #[error("certificate does not chain to a trusted CA: {0}")]
    Untrusted(String),
    /// The certificate (or one on its path) has expired.
    #[error("certificate expired")]
    Expired,
    /// The certificate (or one on its path) is not yet valid.
    #[error("certificate is not yet valid")]
    NotYetValid,
    /// The certificate (or one on its path) is on a loaded CRL.
    #[error("certificate is revoked")]
    Revoked,
    /// The certificate names another agency, or none (`found` empty).
    #[error("certificate is bound to agency {found:?}, not {expected:?}")]
    AgencyMismatch {
        /// The agency the certificate was expected to name.
        expected: String,
        /// The agency it names (empty: none).
        found: String,
    },
    /// The certificate's key usage or extended key usage forbids signing.
    #[error("certificate does not allow digital signatures: {0}")]
    Usage(String),
    /// A configured trust anchor or CRL is unusable.
    #[error("trust anchor or CRL is unusable: {0}")]
    Config(String),
}

impl TrustError {
    /// The stable code a receipt carries for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TrustError::NoCertificate => ErrorCode::MissingCertificate,
            TrustError::Malformed(_) => ErrorCode::UntrustedCertificate,
            TrustError::Untrusted(_) => ErrorCode::UntrustedCertificate,
            TrustError::Expired => ErrorCode::CertificateExpired,
            TrustError::NotYetValid => ErrorCode::CertificateNotYetValid,
            TrustError::Revoked => ErrorCode::CertificateRevoked,
            TrustError::AgencyMismatch { .. } => ErrorCode::CertificateAgencyMismatch,
            TrustError::Usage(_) => ErrorCode::CertificateUsage,
            TrustError::Config(_) => ErrorCode::Internal,
        }
    }
}

/// Trusted CAs and loaded CRLs. CRLs can be replaced at run time
/// ([`TrustStore::set_crls`]) so revocation takes effect without a restart.
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    crls: RwLock<Vec<CertRevocationList<'static>>>,
    /// Bumped whenever the CRLs change: cached verdicts of older generations
    /// are not used.
    crl_generation: AtomicU64,
    /// Chains that passed every check, so the path (an ECDSA or RSA
    /// signature per certificate) is not validated again for each message
    /// signed under the same certificate. Only successes are kept.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

/// A cached success: valid for the same chain and agency, at times inside
/// every certificate's validity, under the same CRLs.
struct Verified {
    cert: VerifiedCert,
    /// Latest notBefore and earliest notAfter on the chain (Unix seconds).
    from: i64,
    until: i64,
    crl_generation: u64,
}

/// Chains remembered at most; the cache starts afresh when it is full
/// (agencies are few, their certificates fewer than this).
const VERIFIED_CACHE: usize = 4096;

fn chain_key(chain: &[Vec<u8>], agency: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in chain.iter().map(Vec::as_slice).chain([agency.as_bytes()]) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.anchors.len())
            .field("crls", &self.crl_count())
            .finish()
    }
}

impl TrustStore {
    /// A store trusting the CA certificates `anchors_der` (DER), with no CRLs.
    pub fn new(anchors_der: &[Vec<u8>]) -> Result<Self, TrustError> {
        if anchors_der.is_empty() {
            return Err(TrustError::Config("no trust anchors given".into()));
        }
        let anchors = anchors_der
            .iter()
            .enumerate()
            .map(|(i, der)| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| TrustError::Config(format!("trust anchor #{}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustStore {
            anchors,
            crls: RwLock::new(Vec::new()),
            crl_generation: AtomicU64::new(0),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// A store trusting every `CERTIFICATE` in `anchors_pem`.
    pub fn from_pem(anchors_pem: &str) -> Result<Self, TrustError> {
        Self::new(&pem_blocks(anchors_pem, "CERTIFICATE")?)
    }

    /// Replaces the loaded CRLs (DER) with `crls_der`; an empty list unloads
    /// them all. On error the previous CRLs stay in force.
    pub fn set_crls(&self, crls_der: Vec<Vec<u8>>) -> Result<(), TrustError> {
        let crls = crls_der
            .iter()
            .enumerate()
            .map(|(i, der)| {
                OwnedCertRevocationList::from_der(der)
                    .map(CertRevocationList::from)
                    .map_err(|e| TrustError::Config(format!("CRL #{}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A panic while holding the lock cannot leave a half-written list:
        // the list is only ever replaced whole, so a poisoned lock is usable.
        let mut current = self.crls.write().unwrap_or_else(|p| p.into_inner());
        *current = crls;
        // Under the write lock: a verification that read the old CRLs
        // caches its verdict under the old generation.
        self.crl_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// How many CRLs are loaded.
    pub fn crl_count(&self) -> usize {
        self.crls.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Checks `chain` (end-entity DER first, then intermediates) at time `at`,
    /// and that the end-entity certificate is bound to `agency`.
    ///
    /// A chain that passed is remembered (see [`TrustStore`]'s cache): the
    /// same chain and agency at a time inside every certificate's validity,
    /// under the same CRLs, passes again without its signatures being
    /// checked again. Loading CRLs forgets every remembered verdict.
    pub fn verify_certificate(
        &self,
        chain: &[Vec<u8>],
        agency: &str,
        at: DateTime<Utc>,
    ) -> Result<VerifiedCert, TrustError> {
        let key = chain_key(chain, agency);
        let t = at.timestamp();
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.get(&key) {
                if v.crl_generation == self.crl_generation.load(Ordering::SeqCst)
                    && (v.from..=v.until).contains(&t)
                {
                    return Ok(v.cert.clone());
                }
            }
        }
        let generation = self.crl_generation.load(Ordering::SeqCst);
        let cert = self.verify_uncached(chain, agency, at)?;
        let mut window = (i64::MIN, i64::MAX);
        for der in chain {
            let (_, c) =
                X509Certificate::from_der(der).map_err(|e| TrustError::Malformed(e.to_string()))?;
            let v = c.validity();
            window.0 = window.0.max(v.not_before.timestamp());
            window.1 = window.1.min(v.not_after.timestamp());
        }
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(
            key,
            Verified {
                cert: cert.clone(),
                from: window.0,
                until: window.1,
                crl_generation: generation,
            },
        );
        Ok(cert)
    }

    fn verify_uncached(
        &self,
        chain: &[Vec<u8>],
        agency: &str,
        at: DateTime<Utc>,
    ) -> Result<VerifiedCert, TrustError> {
        let (ee_der, intermediates) = chain.split_first().ok_or(TrustError::NoCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(ee_der).map_err(|e| TrustError::Malformed(e.to_string()))?;

        let ee_der = CertificateDer::from(ee_der.as_slice());
        let ee = EndEntityCert::try_from(&ee_der).map_err(map_webpki)?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let time = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(at.timestamp()).unwrap_or(0),
        ));
        {
            let crls = self.crls.read().unwrap_or_else(|p| p.into_inner());
            let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
            let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
                b.with_depth(RevocationCheckDepth::Chain)
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .with_expiration_policy(ExpirationPolicy::Ignore)
                    .build()
            });
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &intermediates,
                time,
                SigningPurposes,
                revocation,
                None,
            )
            .map_err(map_webpki)?;
        }

        let found = agency_of(&cert)?;
        match found {
            Some(id) if !id.is_empty() && id == agency => {}
            other => {
                return Err(TrustError::AgencyMismatch {
                    expected: agency.to_owned(),
                    found: other.unwrap_or_default(),
                })
            }
        }
        match cert.key_usage() {
            Err(e) => return Err(TrustError::Malformed(format!("keyUsage: {e}"))),
            Ok(Some(ku)) if !ku.value.digital_signature() => {
                return Err(TrustError::Usage(format!(
                    "keyUsage is {} without digitalSignature",
                    ku.value
                )))
            }
            Ok(_) => {}
        }
        Ok(VerifiedCert {
            agency: agency.to_owned(),
            spki_der: cert.public_key().raw.to_vec(),
            subject: cert.subject().to_string(),
            serial: hex(cert.raw_serial()),
        })
    }
}

/// The DER of every `X509 CRL` block in `crls_pem`, for [`TrustStore::set_crls`].
pub fn crls_from_pem(crls_pem: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    pem_blocks(crls_pem, "X509 CRL")
}

/// The agency id a certificate (DER) binds through its SAN URI
/// `urn:mev:agency:<ID>`, or `None` if it names none.
pub fn certificate_agency(cert_der: &[u8]) -> Result<Option<String>, TrustError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| TrustError::Malformed(e.to_string()))?;
    agency_of(&cert)
}

fn agency_of(cert: &X509Certificate<'_>) -> Result<Option<String>, TrustError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TrustError::Malformed(format!("subjectAltName: {e}")))?;
    let mut found: Option<&str> = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(id) = uri.strip_prefix(AGENCY_URI_PREFIX) else {
            continue;
        };
        match found {
            Some(prev) if prev != id => {
                return Err(TrustError::Malformed(format!(
                    "the certificate names two agencies, {prev:?} and {id:?}"
                )))
            }
            _ => found = Some(id),
        }
    }
    Ok(found.map(str::to_owned))
}

/// The contents of every PEM block labelled `tag` in `text`; at least one.
fn pem_blocks(text: &str, tag: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    let blocks: Vec<Vec<u8>> = pem::parse_many(text)
        .map_err(|e| TrustError::Config(format!("PEM: {e}")))?
        .into_iter()
        .filter(|p| p.tag() == tag)
        .map(pem::Pem::into_contents)
        .collect();
    if blocks.is_empty() {
        return Err(TrustError::Config(format!("no {tag} PEM block found")));
    }
    Ok(blocks)
}

/// Maps a webpki path-validation error to ours.
fn map_webpki(e: webpki::Error) -> TrustError {
    use webpki::Error as E;
    #[allow(deprecated)]
    match e {
        E::CertExpired { .. } => TrustError::Expired,
        E::CertNotValidYet { .. } => TrustError::NotYetValid,
        E::CertRevoked => TrustError::Revoked,
        E::RequiredEkuNotFound
        | E::RequiredEkuNotFoundContext(_)
        | E::EmptyEkuExtension
        | E::CaUsedAsEndEntity => TrustError::Usage(format!("{e:?}")),
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::UnsupportedCertVersion
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::InvalidSerialNumber
        | E::InvalidCertValidity
        | E::UnsupportedCriticalExtension => TrustError::Malformed(format!("{e:?}")),
        E::InvalidCrlSignatureForPublicKey
        | E::IssuerNotCrlSigner
        | E::CrlExpired { .. }
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | E::UnknownRevocationStatus
        | E::InvalidCrlNumber => TrustError::Config(format!("CRL: {e:?}")),
        _ => TrustError::Untrusted(format!("{e:?}")),
    }
}

/// The extended key usages that allow signing messages.
const SIGNING_EKUS: [&[u8]; 4] = [
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02], // 1.3.6.1.5.5.7.3.2 clientAuth
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04], // 1.3.6.1.5.5.7.3.4 emailProtection
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x24], // 1.3.6.1.5.5.7.3.36 documentSigning
    &[0x55, 0x1d, 0x25, 0x00],                         // 2.5.29.37.0 anyExtendedKeyUsage
];

/// Accepts a certificate without an EKU extension, or one allowing signing.
struct SigningPurposes;

impl ExtendedKeyUsageValidator for SigningPurposes {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if SIGNING_EKUS.iter().any(|oid| KeyPurposeId::new(oid) == id) {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            RequiredEkuNotFoundContext {
                required: KeyUsage::client_auth(),
                present,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn trust_store_is_send_and_sync() {
        assert_send_sync::<TrustStore>();
    }

    #[test]
    fn rejects_empty_anchor_lists_and_garbage() {
        assert!(matches!(TrustStore::new(&[]), Err(TrustError::Config(_))));
        assert!(matches!(
            TrustStore::new(&[b"not a certificate".to_vec()]),
            Err(TrustError::Config(_))
        ));
        assert!(matches!(
            TrustStore::from_pem("no pem here"),
            Err(TrustError::Config(_))
        ));
        assert!(matches!(crls_from_pem(""), Err(TrustError::Config(_))));
    }
}
