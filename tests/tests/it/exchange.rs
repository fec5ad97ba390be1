//! The whole exchange over the real RabbitMQ: every reply kind makes the
//! round trip, and every kind of bad input gets its own outcome, is not
//! forwarded, and leaves the broker running.
//!
//! Each test runs in its own namespace (`mevtest-<uuid>`) and deletes it
//! afterwards, also when it fails. Set `AMQP_URL` to test another RabbitMQ.

use futures_util::FutureExt;
use mev_devpki::{serial_of, DevPki, KeyAlg};
use mev_proto::pb::Classification;
use mev_proto::ErrorCode;
use mev_tests::{receipt, reply, within, Cast, Exchange, REPLY_KINDS};
use std::time::Duration;

async fn setup() -> (Exchange, Cast) {
    let cast = Cast::choose(&mev_tests::load_register());
    let ex = Exchange::start(&cast.attached()).await;
    (ex, cast)
}

/// After a refused message with id `bad_id`: the provider never saw it, and
/// the broker still carries a good request end to end.
async fn still_serving(ex: &Exchange, cast: &Cast, bad_id: &str) {
    let before = ex.handled_count(&cast.provider);
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    let handled = ex.handled(&cast.provider);
    assert!(
        !handled.iter().any(|id| id == bad_id),
        "the refused message {bad_id} reached the provider's handler"
    );
    assert_eq!(
        handled.len(),
        before + 1,
        "only the good request was handled"
    );
}

/// Polls until `agency`'s (unconsumed) inbox holds `n` messages.
async fn inbox_reaches(ex: &Exchange, agency: &str, n: u32) {
    within("the inbox depth", async {
        while ex.inbox_depth(agency).await != n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn every_reply_kind_round_trips_with_receipts_to_both() {
    let (ex, cast) = setup().await;
    for kind in REPLY_KINDS {
        let (req_receipt, rep) = ex.round_trip(&cast.consumer, &cast.service, kind).await;
        assert!(req_receipt.accepted);
        assert_eq!(rep.body.kind_name(), kind);
        assert_eq!(rep.header.sender, cast.provider);
        assert_eq!(rep.header.recipient, cast.consumer);
        assert_eq!(rep.header.service, cast.service.number);
        // The provider's receipt for its reply arrives as an event.
        let rep_receipt = ex.next_receipt_event(&cast.provider).await;
        assert!(
            rep_receipt.accepted,
            "the reply is accepted: {rep_receipt:?}"
        );
        assert_eq!(rep_receipt.code, ErrorCode::Ok.as_code());
        assert_eq!(rep_receipt.message_id, rep.header.message_id);
    }
    assert_eq!(ex.handled_count(&cast.provider), REPLY_KINDS.len());
    let snap = ex
        .counters_when("4 requests and 4 replies counted", |s| {
            s.accepted.get("reply") == Some(&4)
        })
        .await;
    eprintln!(
        "round trips: {} requests, accepted {:?}, {} receipts in {} batches",
        REPLY_KINDS.len(),
        snap.accepted,
        snap.receipts,
        snap.batches
    );
    assert_eq!(snap.accepted.get("request"), Some(&4));
    assert_eq!(snap.accepted.get("reply"), Some(&4));
    assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
    ex.cleanup().await;
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let (ex, cast) = setup().await;
    let header = ex.request_header(&cast.consumer, &cast.service);
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    let mut env: mev_proto::Envelope = prost::Message::decode(bytes.as_slice()).unwrap();
    let sig = env.signature.as_mut().expect("a signature");
    sig.value[0] ^= 0x01;
    let bytes = prost::Message::encode_to_vec(&env);
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::BadSignature)
        .await;
    still_serving(&ex, &cast, &id).await;
    ex.cleanup().await;
}

/// Sends a request from the consumer signed with `identity` and expects `code`.
async fn refused_certificate(
    ex: &Exchange,
    cast: &Cast,
    identity: &mev_proto::crypto::Identity,
    code: ErrorCode,
) {
    let header = ex.request_header(&cast.consumer, &cast.service);
    let id = header.message_id.clone();
    let bytes = Exchange::seal_as(identity, header, ex.request_payload(&cast.service));
    ex.expect_refused(&cast.consumer, bytes, code).await;
    still_serving(ex, cast, &id).await;
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let (ex, cast) = setup().await;
    let foreign = DevPki::new().unwrap();
    let stranger = foreign.issue(&cast.consumer, KeyAlg::Ed25519).unwrap();
    refused_certificate(&ex, &cast, &stranger, ErrorCode::UntrustedCertificate).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let (ex, cast) = setup().await;
    let old = ex
        .pki
        .issue_expired(&cast.consumer, KeyAlg::Ed25519)
        .unwrap();
    refused_certificate(&ex, &cast, &old, ErrorCode::CertificateExpired).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn not_yet_valid_certificate_is_refused() {
    let (ex, cast) = setup().await;
    let early = ex
        .pki
        .issue_not_yet_valid(&cast.consumer, KeyAlg::Ed25519)
        .unwrap();
    refused_certificate(&ex, &cast, &early, ErrorCode::CertificateNotYetValid).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn certificate_of_another_agency_is_refused() {
    let (ex, cast) = setup().await;
    let borrowed = ex
        .pki
        .issue_for_other_agency(&cast.consumer, &cast.outsider, KeyAlg::Ed25519)
        .unwrap();
    refused_certificate(&ex, &cast, &borrowed, ErrorCode::CertificateAgencyMismatch).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn certificate_revoked_at_run_time_is_refused() {
    let (ex, cast) = setup().await;
    // A second certificate of the consumer: good until its CRL is loaded.
    let second = ex.pki.issue(&cast.consumer, KeyAlg::Ed25519).unwrap();
    let header = ex.request_header(&cast.consumer, &cast.service);
    let bytes = Exchange::seal_as(&second, header, ex.request_payload(&cast.service));
    let mut h = within("send", ex.adapter(&cast.consumer).send_raw(bytes))
        .await
        .unwrap();
    let r = receipt(&mut h).await;
    assert!(r.accepted, "before revocation: {r:?}");
    reply(h).await;

    let serial = serial_of(&second.certificate_chain[0]).unwrap();
    let crl = ex.pki.crl_der(&[serial]).unwrap();
    ex.trust.set_crls(vec![crl]).unwrap();
    refused_certificate(&ex, &cast, &second, ErrorCode::CertificateRevoked).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn unknown_service_is_refused() {
    let (ex, cast) = setup().await;
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.service = "XX-99999".into();
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::UnknownService)
        .await;
    still_serving(&ex, &cast, &id).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn abolished_service_is_refused() {
    let (ex, cast) = setup().await;
    let abolished = &cast.abolished;
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.service = abolished.number.clone();
    header.recipient = abolished.provider.clone();
    header.payload_schema = abolished.request_schema.clone();
    let id = header.message_id.clone();
    // The abolished service's schema may be gone: send the other's payload.
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    let depth = ex.inbox_depth(&abolished.provider).await;
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::ServiceAbolished)
        .await;
    still_serving(&ex, &cast, &id).await;
    if !cast.attached().contains(&abolished.provider.as_str()) {
        assert_eq!(ex.inbox_depth(&abolished.provider).await, depth);
    }
    ex.cleanup().await;
}

#[tokio::test]
async fn sender_not_allowed_is_refused() {
    let (ex, cast) = setup().await;
    let header = ex.request_header(&cast.outsider, &cast.service);
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.outsider)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.outsider, bytes, ErrorCode::SenderNotAllowed)
        .await;
    still_serving(&ex, &cast, &id).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn wrong_recipient_is_refused_and_its_inbox_stays_empty() {
    let (ex, cast) = setup().await;
    // Addressed to an agency with no adapter: its inbox must stay empty.
    let bystander = cast.idle_service.provider.clone();
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.recipient = bystander.clone();
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::WrongRecipient)
        .await;
    still_serving(&ex, &cast, &id).await;
    assert_eq!(
        ex.inbox_depth(&bystander).await,
        0,
        "nothing reached {bystander}"
    );
    ex.cleanup().await;
}

#[tokio::test]
async fn schema_mismatch_is_refused() {
    let (ex, cast) = setup().await;
    // The wrong schema name.
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.payload_schema = cast.service.reply_schema.clone();
    let id1 = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::SchemaMismatch)
        .await;
    // The right name, undecodable bytes (wire type 7 does not exist).
    let header = ex.request_header(&cast.consumer, &cast.service);
    let id2 = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, vec![0xff; 8])
        .unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::SchemaMismatch)
        .await;
    still_serving(&ex, &cast, &id1).await;
    assert!(!ex.handled(&cast.provider).contains(&id2));
    ex.cleanup().await;
}

#[tokio::test]
async fn classified_material_is_refused() {
    let (ex, cast) = setup().await;
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.classification = Classification::Secret as i32;
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::ClassifiedMaterial)
        .await;
    still_serving(&ex, &cast, &id).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn missing_official_is_refused() {
    let (ex, cast) = setup().await;
    let mut header = ex.request_header(&cast.consumer, &cast.service);
    header.official = None;
    let id = header.message_id.clone();
    let h = within(
        "send_header",
        ex.adapter(&cast.consumer)
            .send_header(header, ex.request_payload(&cast.service)),
    )
    .await
    .unwrap();
    let mut h = h;
    let r = receipt(&mut h).await;
    assert!(
        !r.accepted && r.code == ErrorCode::MissingField.as_code(),
        "{r:?}"
    );
    still_serving(&ex, &cast, &id).await;
    ex.cleanup().await;
}

#[tokio::test]
async fn garbage_is_counted_and_gets_no_receipt() {
    let (ex, cast) = setup().await;
    let before = ex.counters();
    // Straight to the ingress, as nobody.
    ex.publish_raw(b"\xff\xfe not an envelope \x00\x01".to_vec())
        .await;
    // Through an adapter: the handle's receipt never comes.
    let mut h = within(
        "send_raw",
        ex.adapter(&cast.consumer)
            .send_raw(b"\x08\x96\x01 neither".to_vec()),
    )
    .await
    .unwrap();
    within("the garbage counter", async {
        while ex.counters().garbage < before.garbage + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Not "no receipt after a while": a good request sent after the garbage
    // gets its receipt and reply, and once the broker has nothing left to
    // publish, the receipts it published are exactly the round trip's two
    // (its outbox publishes in order: a receipt for the garbage would have
    // gone first, and reached the consumer's inbox before the round trip's).
    still_serving(&ex, &cast, "").await;
    let after = ex.settled("after the garbage and a round trip").await;
    eprintln!(
        "garbage counted: {} (receipts sent: {})",
        after.garbage, after.receipts
    );
    assert_eq!(after.garbage, before.garbage + 2);
    assert_eq!(
        after.receipts,
        before.receipts + 2,
        "no receipt for garbage (the round trip's request and reply have one each)"
    );
    let no_receipt = h.receipt().now_or_never();
    assert!(
        no_receipt.is_none(),
        "garbage got a receipt: {no_receipt:?}"
    );
    ex.cleanup().await;
}

#[tokio::test]
async fn reply_to_unknown_or_answered_request_is_refused() {
    let (ex, cast) = setup().await;
    let provider = ex.adapter(&cast.provider);
    // A request nobody sent.
    let nobody = uuid::Uuid::new_v4().to_string();
    let header = ex.reply_header(
        &cast.provider,
        &cast.consumer,
        &cast.service.number,
        &nobody,
    );
    let bytes = provider.seal(header, Vec::new()).unwrap();
    ex.expect_refused(&cast.provider, bytes, ErrorCode::UnknownRequest)
        .await;
    // A request already answered.
    let (_, first) = ex
        .round_trip(&cast.consumer, &cast.service, "refusal")
        .await;
    let answered = first.header.in_reply_to.clone();
    let header = ex.reply_header(
        &cast.provider,
        &cast.consumer,
        &cast.service.number,
        &answered,
    );
    let bytes = provider.seal(header, Vec::new()).unwrap();
    ex.expect_refused(&cast.provider, bytes, ErrorCode::UnknownRequest)
        .await;
    still_serving(&ex, &cast, "").await;
    ex.cleanup().await;
}

#[tokio::test]
async fn reply_from_an_agency_not_asked_is_refused() {
    let (ex, cast) = setup().await;
    // An open request: its provider has no adapter, so it stays unanswered.
    let idle = &cast.idle_service;
    let mut h = within(
        "send_request",
        ex.adapter(&cast.consumer)
            .send_request(ex.request(idle, "documents")),
    )
    .await
    .unwrap();
    let r = receipt(&mut h).await;
    assert!(r.accepted, "{r:?}");
    inbox_reaches(&ex, &idle.provider, 1).await;
    // The outsider answers it.
    let header = ex.reply_header(&cast.outsider, &cast.consumer, &idle.number, &h.message_id);
    let bytes = ex.adapter(&cast.outsider).seal(header, Vec::new()).unwrap();
    ex.expect_refused(&cast.outsider, bytes, ErrorCode::ReplyFromWrongAgency)
        .await;
    // The requester gets no reply. Not "none after a while": the reply to a
    // request the consumer sent later comes, and the broker publishes in
    // order, so a forwarded refused reply would have come first.
    still_serving(&ex, &cast, "").await;
    let s = ex.settled("after the refused reply and a round trip").await;
    let none = h.reply().now_or_never();
    assert!(none.is_none(), "a reply reached the requester: {none:?}");
    assert_eq!(
        s.accepted.get("reply"),
        Some(&1),
        "only the round trip's reply was accepted: {:?}",
        s.accepted
    );
    ex.cleanup().await;
}

#[tokio::test]
async fn same_id_with_other_content_is_a_conflict() {
    let (ex, cast) = setup().await;
    let consumer = ex.adapter(&cast.consumer);
    let header = ex.request_header(&cast.consumer, &cast.service);
    let id = header.message_id.clone();
    let payload = ex.request_payload(&cast.service);
    let mut h = within(
        "send",
        consumer.send_raw(consumer.seal(header.clone(), payload.clone()).unwrap()),
    )
    .await
    .unwrap();
    assert!(receipt(&mut h).await.accepted);
    reply(h).await;
    let mut other = header;
    if let Some(a) = other.applicant.as_mut() {
        a.full_name = "Somebody Else".into();
    }
    let bytes = consumer.seal(other, payload).unwrap();
    ex.expect_refused(&cast.consumer, bytes, ErrorCode::DuplicateConflict)
        .await;
    let before = ex.handled_count(&cast.provider);
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    let handled = ex.handled(&cast.provider);
    assert_eq!(handled.len(), before + 1);
    assert_eq!(
        handled.iter().filter(|h| **h == id).count(),
        1,
        "handled once"
    );
    ex.cleanup().await;
}

#[tokio::test]
async fn same_bytes_twice_is_a_duplicate_handled_once() {
    let (ex, cast) = setup().await;
    let consumer = ex.adapter(&cast.consumer);
    let header = ex.request_header(&cast.consumer, &cast.service);
    let id = header.message_id.clone();
    let bytes = consumer
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    let mut h = within("send", consumer.send_raw(bytes.clone()))
        .await
        .unwrap();
    let first = receipt(&mut h).await;
    assert!(
        first.accepted && first.code == ErrorCode::Ok.as_code(),
        "{first:?}"
    );
    reply(h).await;
    let mut h = within("send again", consumer.send_raw(bytes))
        .await
        .unwrap();
    let second = receipt(&mut h).await;
    assert!(
        second.accepted && second.code == ErrorCode::Duplicate.as_code(),
        "the copy is acknowledged as a duplicate: {second:?}"
    );
    let before = ex.handled_count(&cast.provider);
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    let handled = ex.handled(&cast.provider);
    assert_eq!(handled.len(), before + 1);
    assert_eq!(
        handled.iter().filter(|h| **h == id).count(),
        1,
        "handled once"
    );
    let snap = ex
        .counters_when("the duplicate counted", |s| s.duplicates >= 1)
        .await;
    eprintln!("duplicates counted: {}", snap.duplicates);
    assert_eq!(snap.duplicates, 1);
    ex.cleanup().await;
}

#[tokio::test]
async fn many_requests_in_flight_all_round_trip() {
    const N: usize = 40;
    let (ex, cast) = setup().await;
    let consumer = ex.adapter(&cast.consumer);
    let mut handles = Vec::new();
    for i in 0..N {
        let kind = REPLY_KINDS[i % REPLY_KINDS.len()];
        let h = within(
            "send_request",
            consumer.send_request(ex.request(&cast.service, kind)),
        )
        .await
        .unwrap();
        handles.push((kind, h));
    }
    let mut ids = std::collections::BTreeSet::new();
    for (kind, mut h) in handles {
        let r = receipt(&mut h).await;
        assert!(r.accepted, "{r:?}");
        let id = h.message_id.clone();
        let rep = reply(h).await;
        assert_eq!(rep.header.in_reply_to, id);
        assert_eq!(rep.body.kind_name(), kind);
        ids.insert(id);
    }
    assert_eq!(ids.len(), N);
    // Every reply got its own accepted receipt on the provider's side.
    for _ in 0..N {
        let r = ex.next_receipt_event(&cast.provider).await;
        assert!(r.accepted, "{r:?}");
    }
    assert_eq!(ex.handled_count(&cast.provider), N);
    let snap = ex
        .counters_when("every request and reply counted", |s| {
            s.accepted.get("reply") == Some(&(N as u64))
        })
        .await;
    eprintln!(
        "{N} requests in flight: accepted {:?}, {} receipts in {} batches",
        snap.accepted, snap.receipts, snap.batches
    );
    assert_eq!(snap.accepted.get("request"), Some(&(N as u64)));
    assert_eq!(snap.accepted.get("reply"), Some(&(N as u64)));
    ex.cleanup().await;
}
