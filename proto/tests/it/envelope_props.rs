//! Properties of sealing and opening: what is sealed opens unchanged, and no
//! single flipped bit in the header, the payload or the signature survives
//! opening and verification. Plus every ring algorithm end to end.

use super::pki_support;

use chrono::Utc;
use mev_proto::crypto::{
    CryptoError, Identity, RingSigner, RingVerifier, SignatureVerifier, Signer, VerifierSet,
};
use mev_proto::envelope::{self, sha256, Limits};
use mev_proto::pb::{Official, RequestedDocument, SignatureAlgorithm, Timestamp};
use mev_proto::trust::TrustStore;
use mev_proto::{Envelope, ErrorCode, Header};
use pki_support::{Leaf, TestCa, RSA_KEY_PEM};
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
use std::sync::OnceLock;

const AGENCY: &str = "UZ-GNK";

/// One CA, and an Ed25519 and a P-256 identity it certified, made once.
struct Fixture {
    store: TrustStore,
    ed25519: Identity,
    p256: Identity,
}

fn identity(ca: &TestCa, key: KeyPair) -> Identity {
    let issued = ca.issue(Leaf::with_key(AGENCY, key));
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", issued.cert_der));
    Identity::from_pem(&issued.key_pem, &cert_pem).unwrap()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = TestCa::new("envelope test CA");
        Fixture {
            store: ca.store(),
            ed25519: identity(&ca, KeyPair::generate_for(&PKCS_ED25519).unwrap()),
            p256: identity(&ca, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()),
        }
    })
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn header() -> impl Strategy<Value = Header> {
    let ids = (text(), 0i32..6, text(), text(), text(), text());
    let when = (any::<i64>(), 0i32..1_000_000_000);
    let people = (
        proptest::option::of((text(), text())),
        proptest::collection::vec((text(), text()), 0..6),
    );
    let flags = (text(), 0i32..6, any::<bool>(), any::<bool>(), text());
    (ids, when, people, flags).prop_map(
        |(
            (message_id, kind, in_reply_to, sender, recipient, service),
            (seconds, nanos),
            (official, documents),
            (payload_schema, classification, test, archive, deadline_policy),
        )| Header {
            message_id,
            kind,
            in_reply_to,
            sender,
            recipient,
            service,
            sent_at: Some(Timestamp { seconds, nanos }),
            official: official.map(|(full_name, position)| Official {
                full_name,
                position,
                id: String::new(),
            }),
            documents: documents
                .into_iter()
                .map(|(code, title)| RequestedDocument { code, title })
                .collect(),
            payload_schema,
            classification,
            test,
            archive,
            deadline_policy,
            ..Header::default()
        },
    )
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

fn identities() -> [&'static Identity; 2] {
    let f = fixture();
    [&f.ed25519, &f.p256]
}

fn seal(id: &Identity, header: Header, payload: Vec<u8>) -> Envelope {
    envelope::seal(header, payload, id.signer.as_ref(), &id.certificate_chain).unwrap()
}

/// Opens and verifies `bytes` as the fixture's verifier would.
fn accept(bytes: &[u8]) -> Result<(), mev_proto::Rejection> {
    let opened = envelope::open(bytes, &Limits::default())?;
    opened
        .verify(&fixture().store, &RingVerifier::new(), Utc::now())
        .map(|_| ())
}

#[derive(Debug, Clone, Copy)]
enum Region {
    Header,
    Payload,
    Signature,
}

fn flip(bytes: &mut [u8], at: Index, bit: u8) {
    if !bytes.is_empty() {
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sealed_envelopes_open_unchanged(header in header(), payload in payload()) {
        for id in identities() {
            let env = seal(id, header.clone(), payload.clone());
            let bytes = env.encode_to_vec();
            let opened = envelope::open(&bytes, &Limits::default()).unwrap();
            let mut expected = header.clone();
            expected.payload_sha256 = sha256(&payload).to_vec();
            prop_assert_eq!(&opened.header, &expected);
            prop_assert_eq!(&opened.envelope, &env);
            prop_assert_eq!(opened.digest, sha256(&env.header));
            let cert = opened
                .verify_as(AGENCY, &fixture().store, &RingVerifier::new(), Utc::now())
                .unwrap();
            prop_assert_eq!(cert.agency, AGENCY);
        }
    }

    #[test]
    fn no_single_bit_flip_is_accepted(
        header in header(),
        payload in payload(),
        region in prop_oneof![Just(Region::Header), Just(Region::Payload), Just(Region::Signature)],
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let header = Header { sender: AGENCY.into(), ..header };
        for id in identities() {
            let mut env = seal(id, header.clone(), payload.clone());
            prop_assert!(accept(&env.encode_to_vec()).is_ok());
            let Some(sig) = env.signature.as_mut() else {
                return Err(TestCaseError::fail("seal made no signature"));
            };
            match region {
                Region::Header => flip(&mut env.header, at, bit),
                Region::Payload if payload.is_empty() => continue,
                Region::Payload => flip(&mut env.payload, at, bit),
                Region::Signature => flip(&mut sig.value, at, bit),
            }
            let outcome = accept(&env.encode_to_vec());
            prop_assert!(outcome.is_err(), "{:?} flip at {:?} bit {} accepted", region, at, bit);
        }
    }

    #[test]
    fn no_single_bit_flip_anywhere_in_the_encoding_is_accepted(
        payload in payload(),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let header = Header { sender: AGENCY.into(), ..Header::default() };
        for id in identities() {
            let mut bytes = seal(id, header.clone(), payload.clone()).encode_to_vec();
            flip(&mut bytes, at, bit);
            prop_assert!(accept(&bytes).is_err());
        }
    }
}

/// Seals with `signer` under a certificate for `key` and verifies end to end.
fn round_trip(signer: RingSigner, key: KeyPair) -> Result<(), mev_proto::Rejection> {
    let ca = TestCa::new("algorithms CA");
    let issued = ca.issue(Leaf::with_key(AGENCY, key));
    let header = Header {
        sender: AGENCY.into(),
        ..Header::default()
    };
    let env = envelope::seal(header, b"payload".to_vec(), &signer, &[issued.cert_der]).unwrap();
    let opened = envelope::open(&env.encode_to_vec(), &Limits::default())?;
    opened
        .verify(&ca.store(), &VerifierSet::with_ring(), Utc::now())
        .map(|_| ())
}

#[test]
fn rsa_pkcs1_and_pss_verify() {
    let rsa = || KeyPair::from_pem(RSA_KEY_PEM).unwrap();
    let pkcs1 = RingSigner::from_pkcs8_pem(RSA_KEY_PEM).unwrap();
    assert_eq!(pkcs1.algorithm(), SignatureAlgorithm::RsaPkcs1Sha256);
    round_trip(pkcs1, rsa()).unwrap();

    let der = pem::parse(RSA_KEY_PEM).unwrap().into_contents();
    let pss = RingSigner::from_pkcs8_der_for(&der, SignatureAlgorithm::RsaPssSha256).unwrap();
    assert_eq!(pss.algorithm(), SignatureAlgorithm::RsaPssSha256);
    round_trip(pss, rsa()).unwrap();
}

#[test]
fn p384_verifies() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let signer = RingSigner::from_pkcs8_pem(&key.serialize_pem()).unwrap();
    assert_eq!(signer.algorithm(), SignatureAlgorithm::EcdsaP384Sha384);
    round_trip(signer, key).unwrap();
}

#[test]
fn a_signature_under_another_algorithm_name_is_rejected() {
    let spki = |k: &KeyPair| rcgen::PublicKeyData::subject_public_key_info(k);
    let v = RingVerifier::new();

    // RSA PKCS#1 signature presented as PSS: the key fits, the signature does not.
    let rsa = KeyPair::from_pem(RSA_KEY_PEM).unwrap();
    let sig = RingSigner::from_pkcs8_pem(RSA_KEY_PEM)
        .unwrap()
        .sign(b"m")
        .unwrap();
    assert!(v
        .verify(SignatureAlgorithm::RsaPkcs1Sha256, &spki(&rsa), b"m", &sig)
        .is_ok());
    assert!(matches!(
        v.verify(SignatureAlgorithm::RsaPssSha256, &spki(&rsa), b"m", &sig),
        Err(CryptoError::BadSignature)
    ));

    // A P-256 key never verifies as P-384 or Ed25519, whatever the signature.
    let p256 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let sig = RingSigner::from_pkcs8_pem(&p256.serialize_pem())
        .unwrap()
        .sign(b"m")
        .unwrap();
    for alg in [
        SignatureAlgorithm::EcdsaP384Sha384,
        SignatureAlgorithm::Ed25519,
    ] {
        assert!(matches!(
            v.verify(alg, &spki(&p256), b"m", &sig),
            Err(CryptoError::BadKey(_))
        ));
    }
    assert!(matches!(
        v.verify(SignatureAlgorithm::National1, &spki(&p256), b"m", &sig),
        Err(CryptoError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn an_unsupported_algorithm_is_its_own_rejection() {
    let f = fixture();
    let header = Header {
        sender: AGENCY.into(),
        ..Header::default()
    };
    let mut env = seal(&f.ed25519, header, Vec::new());
    if let Some(sig) = env.signature.as_mut() {
        sig.algorithm = SignatureAlgorithm::National1 as i32;
    }
    let err = accept(&env.encode_to_vec()).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedAlgorithm);
}
