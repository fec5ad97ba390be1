//! The hostile-input corpus (issue 8, item 4), over the real RabbitMQ.
//!
//! Every message here is crafted by hand and published straight to the
//! ingress as nobody (`Exchange::publish_raw`, or the transport's
//! `publish_batch` for the memory run), never through an adapter. For each:
//! the stable code it is refused with; a signed negative receipt to the
//! sender where the header decodes and names a registered agency, counted as
//! garbage (and no receipt) otherwise; nothing forwarded — the hostile
//! requests are for a service whose provider has no adapter, so its inbox
//! would hold anything forwarded and must stay empty; and the broker keeps
//! serving (a valid round trip at the end of every test).
//!
//! What `tests/tests/exchange.rs` already covers through an adapter (a
//! flipped signature bit, untrusted, expired, not-yet-valid and mis-bound
//! certificates, register refusals, conflicts, duplicates sent at once) is not
//! repeated here.
//!
//! Decisions this corpus pins down:
//! - Unknown protobuf fields in the header are ACCEPTED and forwarded byte
//!   for byte: they are inside the signature (the header is signed as
//!   transmitted and never re-encoded), so the recipient verifies exactly
//!   what the sender signed, and a sender on a newer protocol version is not
//!   refused. In the envelope (outside the signature) they are accepted too:
//!   prost skips them and they bind nothing. In the payload they are REFUSED
//!   (`SchemaMismatch`): the payload is checked strictly against the
//!   register's schema.
//! - Invalid UTF-8 in a header string makes the header undecodable
//!   (`MalformedHeader`): nothing in it can be trusted to name a sender, so
//!   it is garbage; in a payload string it is a `SchemaMismatch`.
//! - An oversized message is refused (`TooLarge`) without being decoded, so
//!   its sender is not known: garbage, no receipt.
//! - Timestamps: only the future is refused (`StaleTimestamp`, beyond
//!   `max_clock_skew`); a past `sent_at` is accepted (outboxes deliver
//!   late); a copy of an accepted message is a `Duplicate` for as long as
//!   the dedup index remembers its id.
//!
//! The tests take one lock, so they run one at a time: the memory test
//! reads the process's RSS, which the others would disturb.

use chrono::TimeDelta;
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Outgoing, Route, Transport};
use mev_adapter::{Adapter, AdapterConfig, IncomingRequest, ReceiptInfo};
use mev_broker::clock::{Clock, ManualClock};
use mev_broker::metrics::{Counters, Snapshot};
use mev_broker::pipeline::record::{KEEP_GARBAGE, KEEP_REFUSED};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::pki::{DevPki, KeyAlg};
use mev_broker::register::{Register, Service};
use mev_broker::server::{Broker, BrokerHandle};
use mev_broker::store::Store;
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::envelope::{sha256, Limits};
use mev_proto::pb::{self, Envelope, Header, Kind, ReceiptEntry, Signature};
use mev_proto::trust::TrustStore;
use mev_proto::ErrorCode;
use mev_tests::{amqp_url, load_register, within, Cast, Exchange, BROKER_ID, WAIT};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

/// One test at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// Protobuf by hand
// ---------------------------------------------------------------------------

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A field key: number and wire type.
fn key(field: u64, wire_type: u64) -> Vec<u8> {
    varint(field << 3 | wire_type)
}

/// A length-delimited field.
fn len_field(field: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = key(field, 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An envelope around `header_bytes` (signed by `identity` exactly as given)
/// and `payload`.
fn sign_bytes(identity: &Identity, header_bytes: Vec<u8>, payload: Vec<u8>) -> Vec<u8> {
    let value = identity.signer.sign(&header_bytes).expect("signed");
    Envelope {
        header: header_bytes,
        payload,
        signature: Some(Signature {
            algorithm: identity.signer.algorithm() as i32,
            value,
            certificate_chain: identity.certificate_chain.clone(),
        }),
    }
    .encode_to_vec()
}

/// `header` (with the payload's digest set) encoded, then `extra` appended:
/// the bytes a sender would sign. Appending a field that is already there
/// replaces it (strings) or merges into it (messages) when decoded.
fn header_bytes_with(mut header: Header, payload: &[u8], extra: &[u8]) -> Vec<u8> {
    header.payload_sha256 = sha256(payload).to_vec();
    cat(&[&header.encode_to_vec(), extra])
}

/// The digest receipts name a message by (SHA-256 of its header bytes).
fn digest_of(bytes: &[u8]) -> [u8; 32] {
    let env = Envelope::decode(bytes).expect("an envelope");
    sha256(&env.header)
}

fn rejected(s: &Snapshot, code: ErrorCode) -> u64 {
    s.rejected.get(&code.as_code()).copied().unwrap_or(0)
}

fn refusals(s: &Snapshot) -> u64 {
    s.rejected.values().sum()
}

// ---------------------------------------------------------------------------
// Running cases against an `Exchange`
// ---------------------------------------------------------------------------

/// What a hostile message must come to.
enum Expect {
    /// Refused with this code, unattributable: counted as garbage, no receipt.
    Garbage(ErrorCode),
    /// Refused with this code; a negative receipt goes to this agency.
    Refused(ErrorCode, String),
    /// Accepted and forwarded to the main service's provider (which answers it).
    Accepted(String),
}

/// One exchange, the parts, and what the broker should have sent so far.
struct Corpus {
    ex: Exchange,
    cast: Cast,
    /// The service hostile requests are for: its provider has no adapter.
    target: Service,
    /// Receipts and forwards the broker should have published.
    receipts: u64,
    forwards: u64,
    /// A second, valid certificate of the consumer for signing by hand.
    consumer: Identity,
}

impl Corpus {
    async fn start() -> Corpus {
        let cast = Cast::choose(&load_register());
        let ex = Exchange::start(&cast.attached()).await;
        let consumer = ex.pki.issue(&cast.consumer, KeyAlg::Ed25519).unwrap();
        Corpus {
            target: cast.idle_service.clone(),
            ex,
            cast,
            receipts: 0,
            forwards: 0,
            consumer,
        }
    }

    /// The provider of the target service: nothing may reach its inbox.
    fn bystander(&self) -> String {
        self.target.provider.clone()
    }

    /// A valid request header from the consumer for the target service.
    fn header(&self) -> Header {
        self.ex.request_header(&self.cast.consumer, &self.target)
    }

    fn payload(&self) -> Vec<u8> {
        self.ex.request_payload(&self.target)
    }

    /// A valid request for the target service, sealed by the consumer.
    fn sealed(&self) -> Vec<u8> {
        Exchange::seal_as(&self.consumer, self.header(), self.payload())
    }

    /// Publishes `bytes` raw and checks what became of them.
    async fn case(&mut self, name: &str, bytes: Vec<u8>, expect: Expect) {
        let before = self.ex.counters();
        let digest = Envelope::decode(bytes.as_slice())
            .ok()
            .map(|e| sha256(&e.header));
        self.ex.publish_raw(bytes).await;
        match expect {
            Expect::Garbage(code) => {
                let after = self
                    .ex
                    .counters_when(&format!("{name}: refused"), |s| {
                        refusals(s) > refusals(&before)
                    })
                    .await;
                assert_eq!(
                    (after.garbage, rejected(&after, code)),
                    (before.garbage + 1, rejected(&before, code) + 1),
                    "{name}: expected garbage with {code}; refusals {:?} -> {:?}",
                    before.rejected,
                    after.rejected
                );
            }
            Expect::Refused(code, to) => {
                let digest = digest.unwrap_or_else(|| panic!("{name}: not an envelope"));
                let r = receipt_for(&self.ex, &to, digest).await;
                assert!(
                    !r.accepted && r.code == code.as_code(),
                    "{name}: expected a negative receipt {code}, got {r:?}"
                );
                self.receipts += 1;
                let after = self
                    .ex
                    .counters_when(&format!("{name}: counted"), |s| {
                        rejected(s, code) > rejected(&before, code)
                    })
                    .await;
                assert_eq!(after.garbage, before.garbage, "{name}: not garbage");
            }
            Expect::Accepted(to) => {
                let digest = digest.unwrap_or_else(|| panic!("{name}: not an envelope"));
                let r = receipt_for(&self.ex, &to, digest).await;
                assert!(
                    r.accepted && r.code == ErrorCode::Ok.as_code(),
                    "{name}: expected it accepted, got {r:?}"
                );
                let id = r.message_id.clone();
                let provider = self.cast.provider.clone();
                within(&format!("{name}: handled by {provider}"), async {
                    while !self.ex.handled(&provider).contains(&id) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                // The request and its reply: a receipt and a forward each.
                self.receipts += 2;
                self.forwards += 2;
            }
        }
        self.settle(name).await;
    }

    /// Waits until everything expected so far is published, so that every
    /// case gets a batch (and a receipt) of its own.
    async fn settle(&self, what: &str) {
        let (receipts, forwards) = (self.receipts, self.forwards);
        self.ex
            .counters_when(&format!("{what}: receipts and forwards published"), |s| {
                s.receipts >= receipts && s.forwarded >= forwards
            })
            .await;
    }

    /// A round trip still works; then no receipt or forward beyond those
    /// expected was published and the bystander's inbox is empty.
    async fn finish(mut self) {
        let before = self.ex.handled_count(&self.cast.provider);
        self.ex
            .round_trip(&self.cast.consumer, &self.cast.service, "documents")
            .await;
        assert_eq!(self.ex.handled_count(&self.cast.provider), before + 1);
        self.receipts += 2;
        self.forwards += 2;
        self.settle("the final round trip").await;
        // Anything else would have been published by now; give it a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = self.ex.counters();
        assert_eq!(
            (s.receipts, s.forwarded),
            (self.receipts, self.forwards),
            "receipts and forwards published: exactly the expected ones"
        );
        assert_eq!(
            self.ex.inbox_depth(&self.bystander()).await,
            0,
            "nothing reached {}",
            self.bystander()
        );
        eprintln!(
            "refusals by code {:?}; garbage {}; receipts {}; forwards {}",
            s.rejected, s.garbage, s.receipts, s.forwarded
        );
        self.ex.cleanup().await;
    }
}

/// The receipt for `digest` among `agency`'s receipt events, skipping
/// others (the positive receipts of replies its handler sent).
async fn receipt_for(ex: &Exchange, agency: &str, digest: [u8; 32]) -> ReceiptInfo {
    loop {
        let r = ex.next_receipt_event(agency).await;
        if r.digest == digest {
            return r;
        }
        assert!(
            r.accepted,
            "an unexpected negative receipt at {agency}: {r:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

#[tokio::test]
async fn wrong_lengths_are_refused_and_nothing_is_forwarded() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let good = c.sealed();
    let env = Envelope::decode(good.as_slice()).unwrap();
    let header_field = len_field(1, &env.header);
    let payload_field = len_field(2, &env.payload);
    assert!(good.starts_with(&cat(&[&header_field, &payload_field])));

    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "truncated inside the header field",
            good[..header_field.len() / 2].to_vec(),
            ErrorCode::Malformed,
        ),
        (
            "truncated inside the signature",
            good[..good.len() - 7].to_vec(),
            ErrorCode::Malformed,
        ),
        (
            "a header length 1 MiB past the end",
            cat(&[&[0x0a], &varint(1 << 20), &env.header[..64]]),
            ErrorCode::Malformed,
        ),
        (
            "a header length of 2^64-1",
            cat(&[&[0x0a], &[0xff; 9], &[0x01], b"abc"]),
            ErrorCode::Malformed,
        ),
        (
            "a varint of 11 bytes",
            cat(&[&[0x0a], &[0x80; 10], &[0x00], b"abc"]),
            ErrorCode::Malformed,
        ),
        (
            "a payload length past the end",
            cat(&[
                &header_field,
                &[0x12],
                &varint(env.payload.len() as u64 + 1000),
                &env.payload,
            ]),
            ErrorCode::Malformed,
        ),
        (
            "unknown groups nested 200 deep",
            cat(&[&key(15, 3).repeat(200), &key(15, 4).repeat(200)]),
            ErrorCode::Malformed,
        ),
        (
            "a wire type that does not exist",
            cat(&[&header_field, &key(9, 7), b"xyz"]),
            ErrorCode::Malformed,
        ),
        // The envelope decodes, the header does not: nothing names a sender.
        (
            "the signed header cut 3 bytes short",
            {
                let h = header_bytes_with(c.header(), &c.payload(), &[]);
                sign_bytes(&c.consumer, h[..h.len() - 3].to_vec(), c.payload())
            },
            ErrorCode::MalformedHeader,
        ),
        (
            "an applicant whose name runs past the applicant's end",
            {
                let inner = cat(&[&key(3, 2), &varint(200), b"Aliyev"]);
                let h = header_bytes_with(c.header(), &c.payload(), &len_field(9, &inner));
                sign_bytes(&c.consumer, h, c.payload())
            },
            ErrorCode::MalformedHeader,
        ),
        // Zero bytes decode as an empty envelope whose (empty) header claims
        // no payload digest: refused at the digest, attributable to no one.
        ("zero bytes", Vec::new(), ErrorCode::PayloadDigestMismatch),
    ];
    for (name, bytes, code) in cases {
        c.case(name, bytes, Expect::Garbage(code)).await;
    }
    // Cut exactly before the signature: a whole header naming its sender,
    // and no signature.
    let unsigned = cat(&[&header_field, &payload_field]);
    let consumer = c.cast.consumer.clone();
    c.case(
        "cut exactly before the signature",
        unsigned,
        Expect::Refused(ErrorCode::MissingField, consumer.clone()),
    )
    .await;
    // A payload one byte short of what the signed header's digest says (a
    // new message: the adapter surfaces one receipt per digest).
    let mut other = Envelope::decode(c.sealed().as_slice()).unwrap();
    other.payload.pop();
    let short = other.encode_to_vec();
    c.case(
        "the payload cut one byte short",
        short,
        Expect::Refused(ErrorCode::PayloadDigestMismatch, consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
async fn huge_repeated_fields_are_refused_with_too_many_items() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let max = Limits::default().max_repeated;
    let consumer = c.cast.consumer.clone();

    let mut h = c.header();
    h.documents = vec![h.documents[0].clone(); max + 1];
    let bytes = Exchange::seal_as(&c.consumer, h, c.payload());
    c.case(
        "one document more than the limit",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer.clone()),
    )
    .await;

    // A million empty documents: 2 MB on the wire, under the size limit.
    let h = header_bytes_with(c.header(), &c.payload(), &[0x52, 0x00].repeat(1_000_000));
    let bytes = sign_bytes(&c.consumer, h, c.payload());
    c.case(
        "a million documents",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer.clone()),
    )
    .await;

    let mut nine = c.consumer.clone();
    nine.certificate_chain = vec![c.consumer.certificate_chain[0].clone(); 9];
    let bytes = Exchange::seal_as(&nine, c.header(), c.payload());
    c.case(
        "a certificate chain of 9",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, consumer),
    )
    .await;

    // A reply listing more missing items than the limit, from the provider.
    let provider = c.ex.pki.issue(&c.cast.provider, KeyAlg::Ed25519).unwrap();
    let mut h = c.ex.reply_header(
        &c.cast.provider,
        &c.cast.consumer,
        &c.cast.service.number,
        &uuid::Uuid::new_v4().to_string(),
    );
    h.reply = Some(mev_proto::pb::ReplyOutcome {
        outcome: Some(mev_proto::pb::reply_outcome::Outcome::InsufficientData(
            mev_proto::pb::InsufficientData {
                missing: vec!["applicant.birth_date".into(); max + 1],
            },
        )),
    });
    let bytes = Exchange::seal_as(&provider, h, Vec::new());
    c.case(
        "insufficient data listing one item more than the limit",
        bytes,
        Expect::Refused(ErrorCode::TooManyItems, c.cast.provider.clone()),
    )
    .await;
    c.finish().await;
}

/// `Limits::max_repeated` is "the most items accepted in any repeated
/// field": the lists inside replies too (`reply.refusal.refused_codes`,
/// `reply.documents.provided`), so a reply refusing 100,000 codes is refused.
#[tokio::test]
async fn every_repeated_field_in_a_reply_is_limited() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    // An open request to the provider without an adapter, answered by it.
    let mut h = within(
        "send_request",
        c.ex.adapter(&c.cast.consumer)
            .send_request(c.ex.request(&c.target, "documents")),
    )
    .await
    .unwrap();
    assert!(mev_tests::receipt(&mut h).await.accepted);
    c.receipts += 1;
    c.forwards += 1;
    let provider = c.ex.pki.issue(&c.target.provider, KeyAlg::Ed25519).unwrap();
    let mut reply = c.ex.reply_header(
        &c.target.provider,
        &c.cast.consumer,
        &c.target.number,
        &h.message_id,
    );
    reply.reply = Some(mev_proto::pb::ReplyOutcome {
        outcome: Some(mev_proto::pb::reply_outcome::Outcome::Refusal(
            mev_proto::pb::Refusal {
                partial: false,
                legal_act: "Law 123".into(),
                reason: "no consent".into(),
                refused_codes: vec!["X".into(); 100_000],
            },
        )),
    });
    let bytes = Exchange::seal_as(&provider, reply, Vec::new());
    let before = c.ex.counters();
    c.ex.publish_raw(bytes).await;
    let after =
        c.ex.counters_when("the reply processed", |s| {
            refusals(s) > refusals(&before) || s.forwarded > before.forwarded
        })
        .await;
    assert_eq!(
        rejected(&after, ErrorCode::TooManyItems),
        1,
        "the reply is refused: {after:?}"
    );
    c.ex.cleanup().await;
}

#[tokio::test]
async fn invalid_utf8_in_strings_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let payload = c.payload();
    // Field numbers from proto/mev/v1/envelope.proto.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header.sender: 0xff 0xfe", len_field(4, b"\xff\xfeUZ-MFC")),
        (
            "header.message_id: an overlong '/'",
            len_field(1, b"\xc0\xaf"),
        ),
        (
            "header.official.full_name: a UTF-16 surrogate",
            len_field(8, &len_field(1, b"Karimova \xed\xa0\x80")),
        ),
        (
            "header.documents[1].code: a lone continuation byte",
            len_field(10, &len_field(1, b"TAX-\x80")),
        ),
        (
            "header.applicant.full_name: truncated multibyte",
            len_field(9, &len_field(3, b"\xd0\x90\xd0")),
        ),
    ];
    for (name, extra) in cases {
        let h = header_bytes_with(c.header(), &payload, &extra);
        let bytes = sign_bytes(&c.consumer, h, payload.clone());
        c.case(name, bytes, Expect::Garbage(ErrorCode::MalformedHeader))
            .await;
    }
    // In the payload: a string field of the service's schema (the sample's
    // first top-level field holding printable ASCII text — a name, a number —
    // is a string, not bytes or a message) spoiled in place.
    let spoiled = spoil_first_text_field(&payload).expect("a text field in the sample payload");
    let bytes = Exchange::seal_as(&c.consumer, c.header(), spoiled);
    let consumer = c.cast.consumer.clone();
    c.case(
        "a payload string with invalid UTF-8",
        bytes,
        Expect::Refused(ErrorCode::SchemaMismatch, consumer),
    )
    .await;
    c.finish().await;
}

/// Replaces the first byte of the first top-level length-delimited field of
/// `payload` that holds printable ASCII text by 0xff.
fn spoil_first_text_field(payload: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    while i < payload.len() {
        let (k, n) = read_varint(&payload[i..])?;
        i += n;
        match k & 7 {
            0 => i += read_varint(&payload[i..])?.1,
            1 => i += 8,
            5 => i += 4,
            2 => {
                let (len, n) = read_varint(&payload[i..])?;
                i += n;
                let body = payload.get(i..i + len as usize)?;
                if body.len() >= 3 && body.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                    let mut out = payload.to_vec();
                    out[i] = 0xff;
                    return Some(out);
                }
                i += len as usize;
            }
            _ => return None,
        }
    }
    None
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[tokio::test]
async fn oversized_messages_are_refused_unread() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let max = Limits::default().max_message_bytes;
    // A signed request exactly `size` bytes long: padded in the applicant's
    // attached application (a header field, so the payload stays valid).
    let sized = |c: &Corpus, service: &Service, size: usize| -> Vec<u8> {
        let header = c.ex.request_header(&c.cast.consumer, service);
        let payload = c.ex.request_payload(service);
        let mut pad = 0;
        for _ in 0..20 {
            let mut h = header.clone();
            if let Some(app) = h.applicant.as_mut().and_then(|a| a.application.as_mut()) {
                app.content = vec![b'%'; pad];
            }
            let bytes = Exchange::seal_as(&c.consumer, h, payload.clone());
            match bytes.len().cmp(&size) {
                std::cmp::Ordering::Equal => return bytes,
                std::cmp::Ordering::Less => pad += size - bytes.len(),
                // Length prefixes grew by a byte: take it back.
                std::cmp::Ordering::Greater => pad -= bytes.len() - size,
            }
        }
        panic!("no padding makes a message of exactly {size} bytes");
    };
    let target = c.target.clone();
    c.case(
        "one byte over the limit",
        sized(&c, &target, max + 1),
        Expect::Garbage(ErrorCode::TooLarge),
    )
    .await;
    c.case(
        "16 MiB",
        sized(&c, &target, 16 * 1024 * 1024),
        Expect::Garbage(ErrorCode::TooLarge),
    )
    .await;
    // Exactly at the limit is accepted: it round trips to the provider.
    let service = c.cast.service.clone();
    let consumer = c.cast.consumer.clone();
    c.case(
        "exactly at the limit",
        sized(&c, &service, max),
        Expect::Accepted(consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
async fn unknown_fields_are_accepted_in_the_header_and_refused_in_the_payload() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let consumer = c.cast.consumer.clone();
    let service = c.cast.service.clone();
    let payload = c.ex.request_payload(&service);
    // Unknown header fields (a number far past the schema's, each wire
    // type): signed, accepted, forwarded intact — the provider's adapter
    // verifies the signature over the very bytes the consumer signed.
    let unknown = cat(&[
        &len_field(99, b"a field from a newer protocol"),
        &key(100, 0),
        &varint(1 << 40),
        &key(101, 1),
        &[7; 8],
        &key(102, 5),
        &[9; 4],
        &key(103, 3),
        &len_field(1, b"in a group"),
        &key(103, 4),
    ]);
    let h = header_bytes_with(
        c.ex.request_header(&c.cast.consumer, &service),
        &payload,
        &unknown,
    );
    let bytes = sign_bytes(&c.consumer, h, payload.clone());
    c.case(
        "unknown header fields",
        bytes,
        Expect::Accepted(consumer.clone()),
    )
    .await;
    // Unknown envelope fields, outside the signature: skipped.
    let bytes = Exchange::seal_as(
        &c.consumer,
        c.ex.request_header(&c.cast.consumer, &service),
        payload.clone(),
    );
    let bytes = cat(&[&bytes, &len_field(42, b"unsigned extra")]);
    c.case(
        "an unknown envelope field",
        bytes,
        Expect::Accepted(consumer.clone()),
    )
    .await;
    // Unknown payload fields: refused by the strict schema check.
    let bytes = Exchange::seal_as(
        &c.consumer,
        c.header(),
        cat(&[&c.payload(), &len_field(999, b"smuggled")]),
    );
    c.case(
        "an unknown payload field",
        bytes,
        Expect::Refused(ErrorCode::SchemaMismatch, consumer.clone()),
    )
    .await;
    // Unknown enum numbers in the header are invalid fields.
    let mut h = c.header();
    h.classification = 99;
    let bytes = Exchange::seal_as(&c.consumer, h, c.payload());
    c.case(
        "an unknown classification number",
        bytes,
        Expect::Refused(ErrorCode::InvalidField, consumer),
    )
    .await;
    c.finish().await;
}

#[tokio::test]
async fn a_valid_certificate_of_another_agency_does_not_sign_for_the_sender() {
    let _serial = SERIAL.lock().await;
    let mut c = Corpus::start().await;
    let consumer = c.cast.consumer.clone();
    // The outsider's own, genuine certificate (trusted CA, valid, bound to
    // the outsider) signing a request in the consumer's name.
    let outsider = c.ex.pki.issue(&c.cast.outsider, KeyAlg::Ed25519).unwrap();
    let bytes = Exchange::seal_as(&outsider, c.header(), c.payload());
    c.case(
        "the outsider's certificate on the consumer's request",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, consumer.clone()),
    )
    .await;
    // The consumer's certificate shown, the outsider's key signing.
    let mut borrowed = outsider.clone();
    borrowed.certificate_chain = c.consumer.certificate_chain.clone();
    let bytes = Exchange::seal_as(&borrowed, c.header(), c.payload());
    c.case(
        "the consumer's certificate, the outsider's signature",
        bytes,
        Expect::Refused(ErrorCode::BadSignature, consumer.clone()),
    )
    .await;
    // The consumer's certificate appended after the outsider's own.
    let mut both = outsider.clone();
    both.certificate_chain
        .extend(c.consumer.certificate_chain.iter().cloned());
    let bytes = Exchange::seal_as(&both, c.header(), c.payload());
    c.case(
        "the consumer's certificate behind the outsider's",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, consumer),
    )
    .await;
    // A reply in the provider's name to a request it really has open.
    let (_, rep) =
        c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
            .await;
    c.receipts += 2;
    c.forwards += 2;
    c.settle("a round trip").await;
    let h = c.ex.reply_header(
        &c.cast.provider,
        &c.cast.consumer,
        &c.cast.service.number,
        &rep.header.in_reply_to,
    );
    let bytes = Exchange::seal_as(&outsider, h, Vec::new());
    let provider = c.cast.provider.clone();
    c.case(
        "the outsider's certificate on the provider's reply",
        bytes,
        Expect::Refused(ErrorCode::CertificateAgencyMismatch, provider),
    )
    .await;
    c.finish().await;
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// The process's resident and peak resident set, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Makes the `i`th message of one hostile kind.
type MakeMessage = Box<dyn Fn(u64) -> Vec<u8>>;

/// The hostile kinds of the memory run, cycled through; every 50th message
/// is one of the two big ones.
struct Mix {
    small: Vec<(ErrorCode, MakeMessage)>,
    big: Vec<(ErrorCode, Arc<[u8]>)>,
}

impl Mix {
    fn new(c: &Corpus) -> Mix {
        let consumer = c.consumer.clone();
        let outsider = c.ex.pki.issue(&c.cast.outsider, KeyAlg::Ed25519).unwrap();
        let good = c.sealed();
        let payload = c.payload();
        // A fresh valid header each time (new id), so nothing is a duplicate.
        let fresh = {
            let h = c.header();
            move |i: u64| {
                let mut h = h.clone();
                h.message_id = uuid::Uuid::new_v4().to_string();
                h.applicant.as_mut().unwrap().full_name = format!("Applicant {i}");
                h
            }
        };
        let mut small: Vec<(ErrorCode, MakeMessage)> = Vec::new();
        small.push((
            ErrorCode::Malformed,
            Box::new(move |i| {
                // Pseudo-random bytes behind an impossible wire type.
                let mut b = vec![0x0f];
                let mut x = i.wrapping_mul(6364136223846793005).wrapping_add(1);
                for _ in 0..300 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b.push((x >> 33) as u8);
                }
                b
            }),
        ));
        {
            // Cut anywhere inside the header field (whose length then runs
            // past the end).
            let good = good.clone();
            let field = len_field(1, &Envelope::decode(good.as_slice()).unwrap().header).len();
            small.push((
                ErrorCode::Malformed,
                Box::new(move |i| good[..1 + (i as usize % (field - 1))].to_vec()),
            ));
        }
        small.push((
            ErrorCode::Malformed,
            Box::new(|_| cat(&[&key(15, 3).repeat(150), &key(15, 4).repeat(150)])),
        ));
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::MalformedHeader,
                Box::new(move |i| {
                    let h = header_bytes_with(fresh(i), &payload, &len_field(4, b"\xff\xfe"));
                    sign_bytes(&consumer, h, payload.clone())
                }),
            ));
        }
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::TooManyItems,
                Box::new(move |i| {
                    let mut h = fresh(i);
                    h.documents = vec![h.documents[0].clone(); 300];
                    Exchange::seal_as(&consumer, h, payload.clone())
                }),
            ));
        }
        {
            let (fresh, payload) = (fresh.clone(), payload.clone());
            small.push((
                ErrorCode::CertificateAgencyMismatch,
                Box::new(move |i| Exchange::seal_as(&outsider, fresh(i), payload.clone())),
            ));
        }
        {
            let (fresh, consumer, payload) = (fresh.clone(), consumer.clone(), payload.clone());
            small.push((
                ErrorCode::PayloadDigestMismatch,
                Box::new(move |i| {
                    let bytes = Exchange::seal_as(&consumer, fresh(i), payload.clone());
                    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
                    env.payload.push(0);
                    env.encode_to_vec()
                }),
            ));
        }
        {
            let (fresh, consumer) = (fresh.clone(), consumer.clone());
            small.push((
                ErrorCode::BadSignature,
                Box::new(move |i| {
                    let bytes = Exchange::seal_as(&consumer, fresh(i), payload.clone());
                    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
                    env.signature.as_mut().unwrap().value[3] ^= 0x40;
                    env.encode_to_vec()
                }),
            ));
        }
        // The big ones are the same bytes each time: refused before the
        // dedup index, so a repeat is as hostile as the first.
        let many_docs = {
            let h = header_bytes_with(fresh(0), &c.payload(), &[0x52, 0x00].repeat(1_500_000));
            sign_bytes(&consumer, h, c.payload())
        };
        let oversized = {
            let mut env = Envelope::decode(good.as_slice()).unwrap();
            env.payload = vec![0x55; Limits::default().max_message_bytes];
            env.encode_to_vec()
        };
        Mix {
            small,
            big: vec![
                (ErrorCode::TooManyItems, many_docs.into()),
                (ErrorCode::TooLarge, oversized.into()),
            ],
        }
    }

    /// The `i`th message and the code it must be refused with.
    fn message(&self, i: u64) -> (ErrorCode, Arc<[u8]>) {
        if i % 50 == 49 {
            let (code, bytes) = &self.big[(i / 50) as usize % self.big.len()];
            (*code, bytes.clone())
        } else {
            let (code, make) = &self.small[i as usize % self.small.len()];
            (*code, make(i).into())
        }
    }
}

/// Publishes messages `from..to` of `mix` in batches and waits until the
/// broker has refused them all; returns the bytes published and the bytes
/// the journal keeps of them (at most 64 KiB of each refused message, 4 KiB
/// of garbage).
async fn flood(ex: &Exchange, mix: &Mix, from: u64, to: u64) -> (u64, u64) {
    let before = ex.counters();
    let mut expected = std::collections::BTreeMap::<u32, u64>::new();
    let (mut sent, mut kept) = (0u64, 0u64);
    let mut i = from;
    while i < to {
        let end = (i + 50).min(to);
        let batch: Vec<Outgoing> = (i..end)
            .map(|j| {
                let (code, body) = mix.message(j);
                *expected.entry(code.as_code()).or_default() += 1;
                sent += body.len() as u64;
                // Nobody can be held to what does not decode far enough to
                // name its sender: the journal keeps less of it.
                let keep = match code {
                    ErrorCode::Malformed | ErrorCode::MalformedHeader | ErrorCode::TooLarge => {
                        KEEP_GARBAGE
                    }
                    _ => KEEP_REFUSED,
                };
                kept += body.len().min(keep) as u64;
                Outgoing {
                    route: Route::Ingress,
                    body,
                    message_id: String::new(),
                }
            })
            .collect();
        for r in within(
            "a hostile batch published",
            ex.transport.publish_batch(batch),
        )
        .await
        {
            r.expect("published");
        }
        i = end;
    }
    let n = to - from;
    let deadline = tokio::time::Instant::now() + 4 * WAIT;
    let after = loop {
        let s = ex.counters();
        if refusals(&s) >= refusals(&before) + n {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker refused {} of {n} in time",
            refusals(&s) - refusals(&before)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (code, count) in expected {
        let got = after.rejected.get(&code).copied().unwrap_or(0)
            - before.rejected.get(&code).copied().unwrap_or(0);
        assert_eq!(got, count, "refusals with code {code}");
    }
    assert_eq!(after.forwarded, before.forwarded, "nothing forwarded");
    (sent, kept)
}

/// 2,000 hostile messages (300 B to 4 MiB; every 50th is one of the two
/// big kinds, a 3 MB header of 1.5 million documents or an oversized 4 MiB
/// envelope: about 150 MB in all) leave the broker's memory bounded by what
/// its journal keeps.
///
/// The broker runs in this process with an in-memory store, and the journal
/// deliberately keeps every refused message (its first 64 KiB at most, 4 KiB
/// of garbage) with
/// its event and, where the sender is known, its signed receipt; memory must
/// grow with that and with nothing else. That costs more than the kept bytes:
/// redb rounds a large value's allocation up to a power of two (up to 2x),
/// the in-memory backend and redb's page cache each hold every page (2x),
/// copy-on-write keeps superseded pages until later commits free them and
/// B-tree pages are half empty after splits (up to 2x each); measured, the
/// growth is 5 to 10 times the kept bytes for every kind in the mix. Allowed:
/// 12 x the kept bytes plus 48 MiB (allocator slack after the big decodes,
/// lapin's buffers, the consumer's adapter recording ~1,000 receipts). Keeping
/// the hostile bytes themselves (~150 MB) or one decoded million-document
/// header (~100 MB) would cross it.
#[tokio::test]
async fn memory_stays_bounded_under_2000_hostile_messages() {
    const N: u64 = 2000;
    let _serial = SERIAL.lock().await;
    let c = Corpus::start().await;
    let mix = Mix::new(&c);
    // Warm up: every kind twice, big ones included, and a round trip.
    flood(&c.ex, &mix, 0, 200).await;
    c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss0, hwm0) = rss_kib();
    let (sent, kept) = flood(&c.ex, &mix, 200, 200 + N).await;
    c.ex.round_trip(&c.cast.consumer, &c.cast.service, "documents")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, hwm1) = rss_kib();
    let growth = rss1.saturating_sub(rss0);
    let bound = 12 * kept / 1024 + 48 * 1024;
    eprintln!(
        "{N} hostile messages, {:.1} MiB published, {:.1} MiB kept by the journal: \
         VmRSS {rss0} -> {rss1} KiB (growth {growth} KiB, bound {bound} KiB), \
         VmHWM {hwm0} -> {hwm1} KiB",
        sent as f64 / 1048576.0,
        kept as f64 / 1048576.0
    );
    assert!(
        growth < bound,
        "RSS grew by {growth} KiB for {N} hostile messages (bound {bound} KiB)"
    );
    assert_eq!(c.ex.inbox_depth(&c.bystander()).await, 0);
    c.ex.cleanup().await;
}

// ---------------------------------------------------------------------------
// Timestamps and replays: a broker with a manual clock and a clock-skew limit
// ---------------------------------------------------------------------------

/// `Exchange` always runs the broker with `max_clock_skew: None` and the
/// system clock, so these tests start their own broker the same way, with
/// a manual clock and a 5-minute skew limit. The provider has an adapter
/// that answers; the consumer has none: its inbox is read raw, so every
/// receipt is seen (an adapter surfaces one receipt per digest).
struct Skewed {
    namespace: String,
    transport: Amqp,
    register: Arc<Register>,
    cast: Cast,
    clock: ManualClock,
    store: Arc<Store>,
    counters: Arc<Counters>,
    broker: Option<BrokerHandle>,
    provider: Option<Adapter<Amqp>>,
    /// The consumer's inbox.
    inbox: mev_adapter::transport::Consumer,
    trust: Arc<TrustStore>,
    /// A valid certificate of the consumer, for signing by hand.
    consumer: Identity,
    handled: Arc<std::sync::Mutex<Vec<String>>>,
    cleaned: bool,
}

const SKEW: TimeDelta = TimeDelta::minutes(5);

impl Skewed {
    async fn start() -> Skewed {
        let register = Arc::new(load_register());
        let cast = Cast::choose(&register);
        let namespace = format!("mevtest-{}", uuid::Uuid::new_v4().simple());
        let transport = Amqp::new(namespace.clone(), AmqpConfig::new(amqp_url()));
        within("connecting to RabbitMQ", transport.connect())
            .await
            .expect("RabbitMQ");
        let pki = DevPki::new().unwrap();
        let trust = Arc::new(pki.trust_store().unwrap());
        let verifier: Arc<dyn SignatureVerifier> = Arc::new(RingVerifier::new());
        let (clock, manual) = Clock::manual(chrono::Utc::now());
        let store = Arc::new(Store::in_memory().unwrap());
        let counters = Arc::new(Counters::default());
        let ctx = Arc::new(Context {
            verifier: verifier.clone(),
            max_clock_skew: Some(SKEW),
            max_message_age: Some(TimeDelta::days(30)),
            counters: counters.clone(),
            clock,
            at_risk_fraction: None,
            ..Context::new(
                register.clone(),
                trust.clone(),
                pki.issue(BROKER_ID, KeyAlg::Ed25519).unwrap(),
                store.clone(),
            )
        });
        let batching = Batching {
            batch_size: 64,
            batch_window: Duration::from_millis(5),
        };
        let broker = within(
            "the broker to start",
            Broker::new(ctx, transport.clone(), batching, 128).start(),
        )
        .await
        .expect("broker starts");
        let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler = {
            let (handled, register) = (handled.clone(), register.clone());
            move |req: IncomingRequest| {
                handled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(req.header.message_id.clone());
                std::future::ready(mev_tests::reply_of_kind("documents", &register, &req))
            }
        };
        let config = AdapterConfig::new(
            pki.issue(&cast.provider, KeyAlg::Ed25519).unwrap(),
            trust.clone(),
            verifier,
            BROKER_ID,
        );
        let provider = within(
            "the provider's adapter to connect",
            Adapter::connect(transport.clone(), config, Some(handler)),
        )
        .await
        .expect("adapter");
        let inbox = within(
            "consuming the consumer's inbox",
            transport.consume(&transport.names().inbox_queue(&cast.consumer), 16),
        )
        .await
        .expect("a consumer of the inbox");
        let consumer = pki.issue(&cast.consumer, KeyAlg::Ed25519).unwrap();
        Skewed {
            namespace,
            transport,
            register,
            cast,
            clock: manual,
            store,
            counters,
            broker: Some(broker),
            provider: Some(provider),
            inbox,
            trust,
            consumer,
            handled,
            cleaned: false,
        }
    }

    /// A valid request from the consumer for the main service, sent at `at`.
    fn request(&self, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
        let req = mev_broker::demo::sample_request(
            &self.register,
            &self.cast.service,
            0,
            "Applicant documents".into(),
        );
        let (mut h, payload) = req.into_parts(&self.cast.consumer);
        h.message_id = uuid::Uuid::new_v4().to_string();
        h.sent_at = Some(mev_proto::time::to_wire(at));
        Exchange::seal_as(&self.consumer, h, payload)
    }

    /// Publishes `bytes` raw and returns the entry for them in the next
    /// receipt in the consumer's inbox (checked to be signed by the broker).
    async fn send(&mut self, bytes: Vec<u8>) -> ReceiptEntry {
        let digest = digest_of(&bytes);
        within(
            "a raw publish",
            self.transport.publish(Outgoing {
                route: Route::Ingress,
                body: bytes.into(),
                message_id: String::new(),
            }),
        )
        .await
        .expect("published");
        let (inbox, trust) = (&mut self.inbox, &self.trust);
        within("the receipt", async {
            loop {
                let d = inbox.next().await.expect("the inbox is consumed");
                d.ack().await.expect("acked");
                let opened = mev_proto::envelope::open(&d.body, &Limits::default())
                    .expect("the broker sends whole envelopes");
                if opened.kind() != Kind::Receipt {
                    continue; // the provider's replies
                }
                opened
                    .verify_as(BROKER_ID, trust, &RingVerifier::new(), chrono::Utc::now())
                    .expect("a receipt signed by the broker");
                let receipt = pb::Receipt::decode(opened.envelope.payload.as_slice()).unwrap();
                if let Some(e) = receipt.entries.into_iter().find(|e| e.digest == digest) {
                    return e;
                }
            }
        })
        .await
    }

    fn handled(&self) -> Vec<String> {
        self.handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the provider's handler got `id` (it answers at once).
    async fn wait_handled(&self, id: &str) {
        within("the provider's handler", async {
            while !self.handled().iter().any(|h| h == id) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn cleanup(mut self) {
        if let Some(a) = self.provider.take() {
            let _ = tokio::time::timeout(WAIT, a.shutdown()).await;
        }
        if let Some(b) = self.broker.take() {
            let _ = tokio::time::timeout(WAIT, b.stop()).await;
        }
        let agencies: Vec<String> = self.register.agencies().map(|a| a.id.clone()).collect();
        let deleted = tokio::time::timeout(WAIT, self.transport.delete_topology(&agencies)).await;
        self.cleaned = matches!(deleted, Ok(Ok(())));
    }
}

impl Drop for Skewed {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test: delete the namespace over a connection of its own.
        let ns = self.namespace.clone();
        let agencies: Vec<String> = self.register.agencies().map(|a| a.id.clone()).collect();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let t = Amqp::new(ns, AmqpConfig::new(amqp_url()));
                let _ = tokio::time::timeout(WAIT, t.delete_topology(&agencies)).await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn replays_and_timestamps() {
    let _serial = SERIAL.lock().await;
    let mut s = Skewed::start().await;

    // A valid request, accepted and answered.
    let original = s.request(s.clock.now());
    let id = Envelope::decode(original.as_slice())
        .map(|e| Header::decode(e.header.as_slice()).unwrap().message_id)
        .unwrap();
    let r = s.send(original.clone()).await;
    assert!(r.accepted && r.code == 0, "{r:?}");
    s.wait_handled(&id).await;

    // Re-sent three days later, byte for byte: a duplicate, not forwarded again.
    s.clock.advance(TimeDelta::days(3));
    let r = s.send(original).await;
    assert!(
        r.accepted && r.code == ErrorCode::Duplicate.as_code(),
        "a replay 3 days later is a duplicate: {r:?}"
    );
    assert_eq!(s.counters.snapshot().duplicates, 1);

    // A new message signed three days before the broker's now: an outbox
    // delivering late. Accepted (only the future is refused).
    let now3 = s.clock.now();
    let late = s.request(now3 - TimeDelta::days(3));
    let late_id = Header::decode(Envelope::decode(late.as_slice()).unwrap().header.as_slice())
        .unwrap()
        .message_id;
    let r = s.send(late).await;
    assert!(r.accepted && r.code == 0, "sent 3 days ago: {r:?}");
    s.wait_handled(&late_id).await;

    // Within the skew ahead: accepted.
    let r = s.send(s.request(now3 + SKEW - TimeDelta::minutes(1))).await;
    assert!(r.accepted && r.code == 0, "4 minutes ahead: {r:?}");
    s.wait_handled(&r.message_id).await;

    // Beyond the skew ahead: refused, with a signed receipt.
    let before = s.counters.snapshot();
    let ahead = s.request(now3 + TimeDelta::hours(1));
    let ahead_id = Header::decode(
        Envelope::decode(ahead.as_slice())
            .unwrap()
            .header
            .as_slice(),
    )
    .unwrap()
    .message_id;
    let r = s.send(ahead).await;
    assert!(
        !r.accepted && r.code == ErrorCode::StaleTimestamp.as_code(),
        "an hour ahead: {r:?}"
    );
    assert!(r.reason.contains("header.sent_at"), "{r:?}");
    // Far in the future (year 9999): the same, no overflow.
    let r = s
        .send(s.request(chrono::DateTime::from_timestamp(253_402_300_799, 0).expect("year 9999")))
        .await;
    assert_eq!(r.code, ErrorCode::StaleTimestamp.as_code(), "{r:?}");
    let after = s.counters.snapshot();
    assert_eq!(rejected(&after, ErrorCode::StaleTimestamp), 2);
    assert_eq!(after.garbage, before.garbage);

    // Nothing refused reached the provider; the accepted ones did, once each.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handled = s.handled();
    assert!(!handled.contains(&ahead_id));
    assert_eq!(handled.iter().filter(|h| **h == id).count(), 1);
    assert_eq!(handled.len(), 3, "{handled:?}");
    eprintln!(
        "timestamps: accepted {:?}, refused {:?}, duplicates {}",
        after.accepted, after.rejected, after.duplicates
    );
    s.cleanup().await;
}

/// A captured message replayed after the dedup index forgot its id
/// (`dedup_retention_days`, 30 by default) is refused by its age: a
/// `sent_at` older than the dedup window cannot be told from a replay.
#[tokio::test]
async fn a_replay_after_the_dedup_retention_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut s = Skewed::start().await;
    let original = s.request(s.clock.now());
    let r = s.send(original.clone()).await;
    assert!(r.accepted && r.code == 0, "{r:?}");
    // 31 days on, the housekeeping task has forgotten the id.
    s.clock.advance(TimeDelta::days(31));
    let forgotten = s
        .store
        .prune_dedup(s.clock.now().timestamp_millis(), 10_000)
        .unwrap();
    assert_eq!(forgotten, 1);
    let r = s.send(original).await;
    assert!(
        !(r.accepted && r.code == 0),
        "a 31-day-old replay was accepted as new: {r:?}"
    );
    s.cleanup().await;
}
