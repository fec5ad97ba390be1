//! Writes the fixture CA and agency certificate (only if `fixtures/` has none)
//! and the seed corpora under `seeds/<target>/`.
//!
//! ```sh
//! cd fuzz && cargo run --example gen_seeds
//! ```
//!
//! The CA's key is thrown away once the agency certificate is issued; the
//! agency's key is kept (`fixtures/agency.key`) so the seeds can be signed
//! again. Everything in the seeds is fixed (ids, times, Ed25519 signatures),
//! so running it twice writes the same bytes.

use mev_fuzz::{verify_at, AGENCY};
use mev_proto::crypto::Identity;
use mev_proto::envelope::seal;
use mev_proto::pb::{
    reply_outcome::Outcome, Applicant, Attachment, Classification, Documents, Envelope, Header,
    InsufficientData, Kind, NotHeld, Official, Refusal, ReplyOutcome, RequestedDocument,
};
use prost::Message;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes the fixture CA and agency certificate unless they exist.
fn fixtures(fx: &Path) {
    if fx.join("ca.crt").exists() && fx.join("agency.crt").exists() {
        return;
    }
    std::fs::create_dir_all(fx).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "mev fuzz fixture CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = date_time_ymd(2024, 1, 1);
    ca.not_after = date_time_ymd(2099, 12, 31);
    ca.serial_number = Some(SerialNumber::from_slice(&[0x4d, 0x45, 0x56, 0x01]));
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).unwrap();

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, AGENCY);
    let uri = format!("{}{AGENCY}", mev_proto::trust::AGENCY_URI_PREFIX);
    leaf.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = date_time_ymd(2024, 1, 1);
    leaf.not_after = date_time_ymd(2099, 12, 31);
    leaf.serial_number = Some(SerialNumber::from_slice(&[0x4d, 0x45, 0x56, 0x02]));
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    std::fs::write(fx.join("ca.crt"), issuer.pem()).unwrap();
    std::fs::write(fx.join("agency.crt"), cert.pem()).unwrap();
    std::fs::write(fx.join("agency.key"), key.serialize_pem()).unwrap();
}

fn official() -> Option<Official> {
    Some(Official {
        full_name: "Fuzz Official".into(),
        position: "Tester".into(),
        id: String::new(),
    })
}

fn base(id: u8, kind: Kind) -> Header {
    Header {
        message_id: format!("018f0000-0000-7000-8000-0000000000{id:02x}"),
        kind: kind as i32,
        sender: AGENCY.into(),
        recipient: "FUZZ-B".into(),
        service: "FZ-00001".into(),
        sent_at: Some(mev_proto::time::to_wire(verify_at())),
        official: official(),
        classification: Classification::PersonalData as i32,
        ..Default::default()
    }
}

fn request(id: u8, documents: usize) -> Header {
    Header {
        applicant: Some(Applicant {
            id_number: "31203851234567".into(),
            id_kind: "PINFL".into(),
            full_name: "Fuzz Applicant".into(),
            birth_date: "1985-03-12".into(),
            application: Some(Attachment {
                name: "application.pdf".into(),
                media_type: "application/pdf".into(),
                content: b"%PDF-1.7".to_vec(),
            }),
        }),
        documents: (0..documents)
            .map(|i| RequestedDocument {
                code: format!("DOC-{i}"),
                title: "A document".into(),
            })
            .collect(),
        payload_schema: "mev.payloads.v1.FuzzRequest".into(),
        application_received_at: Some(mev_proto::time::to_wire(verify_at())),
        ..base(id, Kind::Request)
    }
}

fn reply(id: u8, outcome: Outcome) -> Header {
    Header {
        in_reply_to: "018f0000-0000-7000-8000-000000000001".into(),
        payload_schema: "mev.payloads.v1.FuzzReply".into(),
        reply: Some(ReplyOutcome {
            outcome: Some(outcome),
        }),
        ..base(id, Kind::Reply)
    }
}

fn main() {
    let root = dir();
    let fx = root.join("fixtures");
    fixtures(&fx);
    let key = std::fs::read_to_string(fx.join("agency.key")).unwrap();
    let cert = std::fs::read_to_string(fx.join("agency.crt")).unwrap();
    let ca = std::fs::read_to_string(fx.join("ca.crt")).unwrap();
    let me = Identity::from_pem(&key, &cert).unwrap();
    let with_ca = Identity::from_pem(&key, &format!("{cert}{ca}")).unwrap();

    let doc = || RequestedDocument {
        code: "DOC-0".into(),
        title: "A document".into(),
    };
    let mut other_sender = request(12, 1);
    other_sender.sender = "FUZZ-B".into();
    other_sender.recipient = "FUZZ-C".into();
    let headers: Vec<(&str, Header, &Identity)> = vec![
        ("request", request(1, 1), &me),
        ("request-chain-with-ca", request(2, 1), &with_ca),
        ("request-three-documents", request(3, 3), &me),
        (
            "reply-documents",
            reply(
                4,
                Outcome::Documents(Documents {
                    provided: vec![doc()],
                }),
            ),
            &me,
        ),
        (
            "reply-refusal",
            reply(
                5,
                Outcome::Refusal(Refusal {
                    partial: true,
                    legal_act: "Law 123".into(),
                    reason: "no consent".into(),
                    refused_codes: vec!["DOC-0".into()],
                }),
            ),
            &me,
        ),
        (
            "reply-not-held",
            reply(
                6,
                Outcome::NotHeld(NotHeld {
                    reason: "no record".into(),
                    possible_holder: "FUZZ-C".into(),
                }),
            ),
            &me,
        ),
        (
            "reply-insufficient-data",
            reply(
                7,
                Outcome::InsufficientData(InsufficientData {
                    missing: vec!["applicant.birth_date".into(), "applicant.address".into()],
                }),
            ),
            &me,
        ),
        (
            "status",
            Header {
                in_reply_to: "018f0000-0000-7000-8000-000000000001".into(),
                ..base(8, Kind::Status)
            },
            &me,
        ),
        ("receipt", base(9, Kind::Receipt), &me),
        ("notice", base(10, Kind::Notice), &me),
        ("other-sender", other_sender, &me),
    ];

    let seeds = root.join("seeds");
    for target in ["envelope_open", "validate_header", "verify_envelope"] {
        std::fs::create_dir_all(seeds.join(target)).unwrap();
    }
    let write = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::write(seeds.join(target).join(name), bytes).unwrap();
    };
    for (name, header, identity) in headers {
        let payload = format!("payload of {name}").into_bytes();
        let env = seal(
            header,
            payload,
            identity.signer.as_ref(),
            &identity.certificate_chain,
        )
        .unwrap();
        let bytes = env.encode_to_vec();
        write("envelope_open", name, &bytes);
        write("verify_envelope", name, &bytes);
        write("validate_header", name, &env.header);
    }
    // A few spoiled ones for verification.
    let good = std::fs::read(seeds.join("verify_envelope").join("request")).unwrap();
    let env = Envelope::decode(good.as_slice()).unwrap();
    let mut bad_sig = env.clone();
    if let Some(s) = bad_sig.signature.as_mut() {
        s.value[0] ^= 1;
    }
    write("verify_envelope", "bad-signature", &bad_sig.encode_to_vec());
    let mut unsigned = env.clone();
    unsigned.signature = None;
    write("verify_envelope", "no-signature", &unsigned.encode_to_vec());
    let mut no_chain = env;
    if let Some(s) = no_chain.signature.as_mut() {
        s.certificate_chain.clear();
    }
    write(
        "verify_envelope",
        "no-certificate",
        &no_chain.encode_to_vec(),
    );
    write("envelope_open", "empty", b"");
    write("validate_header", "empty", b"");
    println!("seeds written under {}", seeds.display());
}
