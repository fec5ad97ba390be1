//! `mev pki` end to end: the real binary makes a CA and agency certificates in
//! a temp dir; the files load as identities that a trust store built from
//! `ca.crt` accepts, until `mev pki revoke` puts them on `crl.pem`.

use chrono::Utc;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::pb::SignatureAlgorithm;
use mev_proto::trust::{crls_from_pem, TrustError, TrustStore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn mev(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mev"))
        .arg("pki")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("running mev");
    eprintln!(
        "mev pki {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn load(dir: &Path, agency: &str) -> Identity {
    let agencies = dir.join("agencies");
    Identity::from_pem(
        &read(&agencies.join(format!("{agency}.key"))),
        &read(&agencies.join(format!("{agency}.crt"))),
    )
    .unwrap()
}

/// The identity's certificate passes the store, and its signature verifies
/// with the key the store vouches for.
fn verify(store: &TrustStore, id: &Identity) -> Result<(), TrustError> {
    let cert = store.verify_certificate(&id.certificate_chain, &id.agency, Utc::now())?;
    let sig = id.signer.sign(b"hello").unwrap();
    RingVerifier::new()
        .verify(id.signer.algorithm(), &cert.spki_der, b"hello", &sig)
        .unwrap();
    Ok(())
}

#[test]
fn init_issue_verify_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");

    assert!(mev(&dir, &["init"]).status.success());
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert!(dir.join("ca.crt").is_file() && dir.join("crl.pem").is_file());
    // An existing CA is not replaced without --force.
    let again = mev(&dir, &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    assert!(mev(&dir, &["issue", "--agency", "UZ-GNK"]).status.success());
    assert!(mev(&dir, &["issue", "--agency", "X", "--alg", "p256"])
        .status
        .success());
    for agency in ["UZ-GNK", "X"] {
        assert_eq!(
            mode(&dir.join("agencies").join(format!("{agency}.key"))),
            0o600
        );
    }
    // An agency id that would escape the directory is refused.
    assert!(!mev(&dir, &["issue", "--agency", "../evil"])
        .status
        .success());

    let store = TrustStore::from_pem(&read(&dir.join("ca.crt"))).unwrap();
    store
        .set_crls(crls_from_pem(&read(&dir.join("crl.pem"))).unwrap())
        .unwrap();
    let gnk = load(&dir, "UZ-GNK");
    let x = load(&dir, "X");
    assert_eq!(gnk.agency, "UZ-GNK");
    assert_eq!(gnk.signer.algorithm(), SignatureAlgorithm::Ed25519);
    assert_eq!(x.signer.algorithm(), SignatureAlgorithm::EcdsaP256Sha256);
    verify(&store, &gnk).unwrap();
    verify(&store, &x).unwrap();

    assert!(mev(&dir, &["revoke", "--agency", "UZ-GNK"])
        .status
        .success());
    store
        .set_crls(crls_from_pem(&read(&dir.join("crl.pem"))).unwrap())
        .unwrap();
    assert_eq!(verify(&store, &gnk), Err(TrustError::Revoked));
    verify(&store, &x).unwrap();

    // Revocations accumulate; revoking twice lists the serial once.
    assert!(mev(&dir, &["revoke", "--agency", "X"]).status.success());
    assert!(mev(&dir, &["revoke", "--agency", "X"]).status.success());
    assert_eq!(read(&dir.join("revoked.txt")).lines().count(), 2);
    store
        .set_crls(crls_from_pem(&read(&dir.join("crl.pem"))).unwrap())
        .unwrap();
    assert_eq!(verify(&store, &gnk), Err(TrustError::Revoked));
    assert_eq!(verify(&store, &x), Err(TrustError::Revoked));

    // --force makes a new CA: the old certificates are no longer trusted.
    assert!(mev(&dir, &["init", "--force"]).status.success());
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let store = TrustStore::from_pem(&read(&dir.join("ca.crt"))).unwrap();
    assert!(matches!(verify(&store, &x), Err(TrustError::Untrusted(_))));
}

#[test]
fn issue_without_a_ca_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mev(tmp.path(), &["issue", "--agency", "UZ-GNK"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.key"));
}

#[test]
fn dev_pki_makes_each_kind_of_bad_certificate() {
    let dev = DevPki::new().unwrap();
    let store = dev.trust_store().unwrap();
    let good = dev.issue("UZ-GNK", KeyAlg::P256).unwrap();
    verify(&store, &good).unwrap();

    let expired = dev.issue_expired("UZ-GNK", KeyAlg::Ed25519).unwrap();
    assert_eq!(verify(&store, &expired), Err(TrustError::Expired));
    let early = dev.issue_not_yet_valid("UZ-GNK", KeyAlg::Ed25519).unwrap();
    assert_eq!(verify(&store, &early), Err(TrustError::NotYetValid));
    let liar = dev
        .issue_for_other_agency("UZ-GNK", "UZ-MVD", KeyAlg::Ed25519)
        .unwrap();
    assert!(matches!(
        verify(&store, &liar),
        Err(TrustError::AgencyMismatch { found, .. }) if found == "UZ-MVD"
    ));
    let no_sign = dev
        .issue_without_signing_usage("UZ-GNK", KeyAlg::Ed25519)
        .unwrap();
    assert!(matches!(
        verify(&store, &no_sign),
        Err(TrustError::Usage(_))
    ));
    let foreign = DevPki::new()
        .unwrap()
        .issue("UZ-GNK", KeyAlg::Ed25519)
        .unwrap();
    assert!(matches!(
        verify(&store, &foreign),
        Err(TrustError::Untrusted(_))
    ));

    let other = dev.issue("UZ-MVD", KeyAlg::Ed25519).unwrap();
    store
        .set_crls(vec![dev.revoke_agency("UZ-GNK").unwrap()])
        .unwrap();
    assert_eq!(verify(&store, &good), Err(TrustError::Revoked));
    verify(&store, &other).unwrap();
    // Revocations accumulate.
    store
        .set_crls(vec![dev.revoke_agency("UZ-MVD").unwrap()])
        .unwrap();
    assert_eq!(verify(&store, &good), Err(TrustError::Revoked));
    assert_eq!(verify(&store, &other), Err(TrustError::Revoked));
    // An explicit CRL lists exactly what it is given.
    let serial = mev_devpki::serial_of(other.certificate().unwrap()).unwrap();
    store
        .set_crls(vec![dev.crl_der(&[serial]).unwrap()])
        .unwrap();
    verify(&store, &good).unwrap();
    assert_eq!(verify(&store, &other), Err(TrustError::Revoked));
}
