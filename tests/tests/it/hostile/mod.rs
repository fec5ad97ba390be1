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
//! What `tests/tests/it/exchange.rs` already covers through an adapter (a
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
use mev_broker::pipeline::Context;
use mev_broker::register::{Register, Service};
use mev_broker::server::BrokerHandle;
use mev_broker::store::Store;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::envelope::{sha256, Limits};
use mev_proto::pb::{self, Envelope, Header, Kind, ReceiptEntry, Signature};
use mev_proto::trust::TrustStore;
use mev_proto::ErrorCode;
use mev_tests::{amqp_url, load_register, within, Cast, Exchange, BROKER_ID, WAIT};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

mod corpus;
mod memory;
mod replay;

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
        // Not "nothing more after a while": the final round trip came last
        // through the ingress, the broker handles its input in order and
        // publishes its outbox in order, counting each message as RabbitMQ
        // confirms it (before removing it). So once the ingress and the
        // outbox are empty, whatever any case made the broker publish has
        // been counted.
        let s = self.ex.settled("the final round trip").await;
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
