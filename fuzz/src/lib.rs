//! What the fuzz targets run, one function per target.
//!
//! This file is also compiled into `proto/tests/it/fuzz_regressions.rs` (by
//! `#[path]`), which replays every input kept under `fuzz/regressions/` and
//! the committed seeds through exactly these functions on stable Rust. So it
//! uses only what `mev-proto` itself depends on (mev-proto, prost, chrono).
//!
//! Each function must not panic on any input; where the result is checkable
//! it also asserts what the code promises (the stable codes a stage may
//! give, the digests of an opened envelope, that a header's errors name a
//! `header.` field), so a wrong answer is a crash too.

use chrono::{DateTime, TimeZone, Utc};
use mev_proto::crypto::RingVerifier;
use mev_proto::envelope::{self, Limits};
use mev_proto::pb::Header;
use mev_proto::trust::TrustStore;
use mev_proto::ErrorCode;
use prost::Message;
use std::sync::OnceLock;

/// The fixed development CA the `verify_envelope` seeds chain to (made by
/// `cargo run --example gen_seeds`; its key is not kept).
pub const CA_PEM: &str = include_str!("../fixtures/ca.crt");

/// The agency the fixture certificate (`fixtures/agency.crt`) is bound to.
pub const AGENCY: &str = "FUZZ-A";

/// The limits the envelope is opened with: the broker's defaults, and tight
/// ones that libFuzzer's small inputs can cross.
pub const LIMITS: [Limits; 2] = [
    Limits {
        max_message_bytes: 4 * 1024 * 1024,
        max_repeated: 256,
    },
    Limits {
        max_message_bytes: 2048,
        max_repeated: 2,
    },
];

/// The instant signatures are verified at: fixed, inside the fixture
/// certificates' validity (2024–2099), so a run is reproducible.
pub fn verify_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
        .single()
        .expect("a valid instant")
}

/// The trust store of the fixture CA, built once.
pub fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| TrustStore::from_pem(CA_PEM).expect("the fixture CA loads"))
}

/// `envelope_open`: `mev_proto::envelope::open` on arbitrary bytes.
pub fn envelope_open(data: &[u8]) {
    for limits in &LIMITS {
        match envelope::open(data, limits) {
            Ok(opened) => {
                assert!(data.len() <= limits.max_message_bytes);
                assert_eq!(opened.digest, envelope::sha256(&opened.envelope.header));
                assert_eq!(
                    opened.header.payload_sha256,
                    envelope::sha256(&opened.envelope.payload)
                );
                assert!(opened.header.documents.len() <= limits.max_repeated);
                let _ = opened.kind();
            }
            Err(r) => {
                if data.len() > limits.max_message_bytes {
                    assert_eq!(r.code, ErrorCode::TooLarge, "{r}");
                }
                assert!(
                    matches!(
                        r.code,
                        ErrorCode::Malformed
                            | ErrorCode::MalformedHeader
                            | ErrorCode::PayloadDigestMismatch
                            | ErrorCode::TooLarge
                            | ErrorCode::TooManyItems
                    ),
                    "open gave a code outside the decode stage: {r}"
                );
            }
        }
    }
}

/// `validate_header`: decode a `Header` from the bytes, then validate it.
pub fn validate_header(data: &[u8]) {
    let Ok(header) = Header::decode(data) else {
        return;
    };
    let verdict = mev_proto::validate::validate(&header).map_err(|r| r.code);
    if let Err(r) = mev_proto::validate::validate(&header) {
        assert!(
            matches!(r.code, ErrorCode::MissingField | ErrorCode::InvalidField),
            "validate gave {r}"
        );
        assert!(
            r.reason.starts_with("header."),
            "the error names no header field: {r}"
        );
    }
    // The decoded header re-encodes to bytes that decode to the same header
    // and the same verdict (the broker never re-encodes, but the adapter's
    // outbox and tools do).
    let again = Header::decode(header.encode_to_vec().as_slice()).expect("a re-encoded header");
    assert_eq!(again, header);
    assert_eq!(
        mev_proto::validate::validate(&again).map_err(|r| r.code),
        verdict
    );
}

/// `verify_envelope`: open, then verify the signature and the certificate
/// against the fixed trust store at [`verify_at`].
pub fn verify_envelope(data: &[u8]) {
    let Ok(opened) = envelope::open(data, &LIMITS[0]) else {
        return;
    };
    static VERIFIER: OnceLock<RingVerifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(RingVerifier::new);
    match opened.verify(trust(), verifier, verify_at()) {
        Ok(cert) => {
            assert_eq!(cert.agency, opened.header.sender);
            assert_eq!(cert.agency, AGENCY, "only the fixture agency is trusted");
        }
        Err(r) => assert!(
            r.code == ErrorCode::MissingField || (200..300).contains(&r.code.as_code()),
            "verification gave a code outside the signature range: {r}"
        ),
    }
}
