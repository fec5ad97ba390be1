//! Certificate trust: each way a certificate can be wrong is rejected with its
//! own error, and a good one passes.

use super::pki_support;

use chrono::Utc;
use mev_proto::envelope::hex;
use mev_proto::trust::{certificate_agency, crls_from_pem, TrustError, TrustStore};
use mev_proto::ErrorCode;
use pki_support::{Leaf, TestCa};
use rcgen::{KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use std::sync::Arc;

fn check(store: &TrustStore, cert: &[u8], agency: &str) -> Result<(), TrustError> {
    store
        .verify_certificate(&[cert.to_vec()], agency, Utc::now())
        .map(|_| ())
}

#[test]
fn a_good_certificate_passes_and_is_described() {
    let ca = TestCa::new("mev test CA");
    let store = ca.store();
    for alg in [&PKCS_ED25519, &PKCS_ECDSA_P256_SHA256] {
        let leaf = Leaf::new("UZ-GNK", alg);
        let spki = leaf.key.subject_public_key_info();
        let issued = ca.issue(leaf);
        let v = store
            .verify_certificate(std::slice::from_ref(&issued.cert_der), "UZ-GNK", Utc::now())
            .unwrap();
        assert_eq!(v.agency, "UZ-GNK");
        assert_eq!(v.spki_der, spki);
        assert_eq!(v.serial, hex(&issued.serial));
        assert!(v.subject.contains("UZ-GNK"), "{}", v.subject);
        assert_eq!(
            certificate_agency(&issued.cert_der).unwrap().as_deref(),
            Some("UZ-GNK")
        );
    }
}

#[test]
fn a_certificate_from_another_ca_is_untrusted() {
    let ca = TestCa::new("ours");
    let other = TestCa::new("theirs");
    let issued = other.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let err = check(&ca.store(), &issued.cert_der, "UZ-GNK").unwrap_err();
    assert!(matches!(err, TrustError::Untrusted(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::UntrustedCertificate);
}

#[test]
fn an_expired_certificate_is_rejected() {
    let ca = TestCa::new("ca");
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ED25519);
    (leaf.from_days, leaf.to_days) = (-30, -2);
    let issued = ca.issue(leaf);
    let err = check(&ca.store(), &issued.cert_der, "UZ-GNK").unwrap_err();
    assert_eq!(err, TrustError::Expired);
    assert_eq!(err.code(), ErrorCode::CertificateExpired);
}

#[test]
fn a_not_yet_valid_certificate_is_rejected() {
    let ca = TestCa::new("ca");
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ED25519);
    (leaf.from_days, leaf.to_days) = (2, 30);
    let issued = ca.issue(leaf);
    let err = check(&ca.store(), &issued.cert_der, "UZ-GNK").unwrap_err();
    assert_eq!(err, TrustError::NotYetValid);
    assert_eq!(err.code(), ErrorCode::CertificateNotYetValid);
}

#[test]
fn a_revoked_certificate_is_rejected() {
    let ca = TestCa::new("ca");
    let revoked = ca.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let good = ca.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let store = ca.store();
    store.set_crls(vec![ca.crl(&[&revoked.serial])]).unwrap();
    let err = check(&store, &revoked.cert_der, "UZ-GNK").unwrap_err();
    assert_eq!(err, TrustError::Revoked);
    assert_eq!(err.code(), ErrorCode::CertificateRevoked);
    check(&store, &good.cert_der, "UZ-GNK").unwrap();
}

#[test]
fn set_crls_at_run_time_revokes_a_previously_accepted_certificate() {
    let ca = TestCa::new("ca");
    let issued = ca.issue(Leaf::new("UZ-GNK", &PKCS_ECDSA_P256_SHA256));
    let store = Arc::new(ca.store());
    check(&store, &issued.cert_der, "UZ-GNK").unwrap();

    // Another thread refreshes the CRLs while this one keeps verifying.
    let crl_pem = pem::encode(&pem::Pem::new("X509 CRL", ca.crl(&[&issued.serial])));
    let refresher = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.set_crls(crls_from_pem(&crl_pem).unwrap()))
    };
    refresher.join().unwrap().unwrap();
    assert_eq!(store.crl_count(), 1);
    assert_eq!(
        check(&store, &issued.cert_der, "UZ-GNK"),
        Err(TrustError::Revoked)
    );

    // Unloading the CRLs lifts the revocation (the store does not remember).
    store.set_crls(Vec::new()).unwrap();
    check(&store, &issued.cert_der, "UZ-GNK").unwrap();
}

#[test]
fn a_bad_crl_is_refused_and_the_old_ones_stay() {
    let ca = TestCa::new("ca");
    let issued = ca.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let store = ca.store();
    store.set_crls(vec![ca.crl(&[&issued.serial])]).unwrap();
    let err = store.set_crls(vec![b"garbage".to_vec()]).unwrap_err();
    assert!(matches!(err, TrustError::Config(_)), "{err:?}");
    assert_eq!(
        check(&store, &issued.cert_der, "UZ-GNK"),
        Err(TrustError::Revoked)
    );
}

#[test]
fn a_crl_of_another_issuer_does_not_block_ours() {
    let ca = TestCa::new("ca");
    let other = TestCa::new("other");
    let issued = ca.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let store = ca.store();
    store.set_crls(vec![other.crl(&[&issued.serial])]).unwrap();
    check(&store, &issued.cert_der, "UZ-GNK").unwrap();
}

#[test]
fn a_certificate_of_another_agency_is_rejected() {
    let ca = TestCa::new("ca");
    let issued = ca.issue(Leaf::new("UZ-MVD", &PKCS_ED25519));
    let err = check(&ca.store(), &issued.cert_der, "UZ-GNK").unwrap_err();
    assert_eq!(
        err,
        TrustError::AgencyMismatch {
            expected: "UZ-GNK".into(),
            found: "UZ-MVD".into()
        }
    );
    assert_eq!(err.code(), ErrorCode::CertificateAgencyMismatch);
}

#[test]
fn a_certificate_naming_no_agency_is_rejected() {
    let ca = TestCa::new("ca");
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ED25519);
    leaf.agency = None;
    let issued = ca.issue(leaf);
    assert_eq!(certificate_agency(&issued.cert_der).unwrap(), None);
    for asked in ["UZ-GNK", ""] {
        let err = check(&ca.store(), &issued.cert_der, asked).unwrap_err();
        assert_eq!(
            err,
            TrustError::AgencyMismatch {
                expected: asked.into(),
                found: String::new()
            }
        );
    }
}

#[test]
fn a_certificate_without_digital_signature_usage_is_rejected() {
    let ca = TestCa::new("ca");
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ECDSA_P256_SHA256);
    leaf.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    let issued = ca.issue(leaf);
    let err = check(&ca.store(), &issued.cert_der, "UZ-GNK").unwrap_err();
    assert!(matches!(err, TrustError::Usage(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::CertificateUsage);

    // No keyUsage extension at all is accepted (RFC 5280 "any usage").
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ECDSA_P256_SHA256);
    leaf.key_usages = Vec::new();
    check(&ca.store(), &ca.issue(leaf).cert_der, "UZ-GNK").unwrap();
}

#[test]
fn a_ca_certificate_is_not_an_end_entity() {
    let ca = TestCa::new("ca");
    let err = check(&ca.store(), &ca.cert_der(), "UZ-GNK").unwrap_err();
    assert!(
        matches!(err, TrustError::Usage(_) | TrustError::Untrusted(_)),
        "{err:?}"
    );
}

#[test]
fn intermediates_come_from_the_rest_of_the_chain() {
    let root = TestCa::new("root");
    let sub = root.intermediate("sub");
    let issued = sub.issue(Leaf::new("UZ-GNK", &PKCS_ED25519));
    let store = root.store();
    let chain = vec![issued.cert_der.clone(), sub.cert_der()];
    store
        .verify_certificate(&chain, "UZ-GNK", Utc::now())
        .unwrap();
    let err = check(&store, &issued.cert_der, "UZ-GNK").unwrap_err();
    assert!(matches!(err, TrustError::Untrusted(_)), "{err:?}");

    // Revoking the intermediate in the root's CRL revokes what it issued.
    store
        .set_crls(vec![root.crl(&[&pki_support::serial_of(&sub.cert_der())])])
        .unwrap();
    assert_eq!(
        store
            .verify_certificate(&chain, "UZ-GNK", Utc::now())
            .unwrap_err(),
        TrustError::Revoked
    );
}

#[test]
fn empty_and_malformed_chains_are_rejected() {
    let ca = TestCa::new("ca");
    let store = ca.store();
    assert_eq!(
        store
            .verify_certificate(&[], "UZ-GNK", Utc::now())
            .unwrap_err(),
        TrustError::NoCertificate
    );
    let err = check(&store, b"\x30\x03\x02\x01\x01", "UZ-GNK").unwrap_err();
    assert!(matches!(err, TrustError::Malformed(_)), "{err:?}");
}

#[test]
fn each_rejection_has_its_own_code() {
    let errors = [
        TrustError::NoCertificate,
        TrustError::Untrusted(String::new()),
        TrustError::Expired,
        TrustError::NotYetValid,
        TrustError::Revoked,
        TrustError::AgencyMismatch {
            expected: String::new(),
            found: String::new(),
        },
        TrustError::Usage(String::new()),
    ];
    let mut codes: Vec<u32> = errors.iter().map(|e| e.code().as_code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn a_remembered_verdict_holds_only_inside_validity_for_the_same_agency() {
    let ca = TestCa::new("ca");
    let mut leaf = Leaf::new("UZ-GNK", &PKCS_ED25519);
    (leaf.from_days, leaf.to_days) = (-1, 10);
    let issued = ca.issue(leaf);
    let store = ca.store();
    let chain = [issued.cert_der.clone()];
    let now = Utc::now();
    // Verified once, then remembered ...
    for _ in 0..3 {
        store.verify_certificate(&chain, "UZ-GNK", now).unwrap();
    }
    // ... but not past its notAfter, nor before its notBefore ...
    let late = now + chrono::TimeDelta::days(11);
    assert_eq!(
        store
            .verify_certificate(&chain, "UZ-GNK", late)
            .unwrap_err(),
        TrustError::Expired
    );
    let early = now - chrono::TimeDelta::days(2);
    assert_eq!(
        store
            .verify_certificate(&chain, "UZ-GNK", early)
            .unwrap_err(),
        TrustError::NotYetValid
    );
    // ... nor for another agency, nor once a CRL names it.
    assert!(matches!(
        store.verify_certificate(&chain, "UZ-MVD", now),
        Err(TrustError::AgencyMismatch { .. })
    ));
    store.set_crls(vec![ca.crl(&[&issued.serial])]).unwrap();
    assert_eq!(
        store.verify_certificate(&chain, "UZ-GNK", now).unwrap_err(),
        TrustError::Revoked
    );
    store.set_crls(Vec::new()).unwrap();
    store.verify_certificate(&chain, "UZ-GNK", now).unwrap();
}
