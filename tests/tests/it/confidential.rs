//! Confidential payloads over the real RabbitMQ: a request's payload
//! encrypted to the provider's agreement key reaches the provider's handler
//! decrypted, while the broker — which checks the signature and the digest of
//! the ciphertext and routes it — never holds the plaintext. A changed
//! ciphertext is refused by the broker (digest or signature), and a payload
//! that the provider cannot decrypt (made for another key, or moved to
//! another message) never reaches its handler: the adapter answers it with
//! insufficient data. The documents in the reply go back encrypted to the
//! consumer's key, and a confidential request is never answered in clear.

use mev_adapter::{AgreementKey, IncomingReply, IncomingRequest, ReplyBody};
use mev_broker::register::Register;
use mev_broker::store::prelude::*;
use mev_proto::confidential::{encrypt_payload, RecipientKey};
use mev_proto::envelope::sha256;
use mev_proto::pb::{Envelope, Header};
use mev_proto::ErrorCode;
use mev_tests::{receipt, reply, reply_of_kind, within, Cast, Exchange, Replier};
use prost::Message;
use std::sync::{Arc, Mutex};

/// What the provider's handler saw: (message id, payload, was encrypted).
type Seen = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

struct Setup {
    ex: Exchange,
    cast: Cast,
    /// The provider's public agreement key.
    provider_key: RecipientKey,
    seen: Seen,
}

/// An exchange where the provider holds an agreement key and the consumer
/// knows its public half (or `consumer_knows`, to encrypt to a wrong key).
async fn setup(consumer_knows: Option<RecipientKey>) -> Setup {
    let cast = Cast::choose(&mev_tests::load_register());
    let provider_pem = AgreementKey::generate().unwrap().to_pkcs8_pem();
    let provider_key = AgreementKey::from_pem(&provider_pem).unwrap().public_key();
    let known = consumer_knows.unwrap_or(provider_key);
    let seen: Seen = Arc::default();
    let replier: Replier = {
        let seen = seen.clone();
        Arc::new(move |register: &Register, req: &IncomingRequest| {
            seen.lock().unwrap().push((
                req.header.message_id.clone(),
                req.payload.clone(),
                req.was_encrypted(),
            ));
            reply_of_kind("documents", register, req)
        })
    };
    // The consumer's own key pair, for the documents sent back.
    let consumer_pem = AgreementKey::generate().unwrap().to_pkcs8_pem();
    let consumer_key = AgreementKey::from_pem(&consumer_pem).unwrap().public_key();
    let (consumer, provider) = (cast.consumer.clone(), cast.provider.clone());
    let ex = Exchange::start_configured(&cast.attached(), replier, move |id, config| {
        if id == consumer {
            config
                .with_recipient_key(provider.clone(), known)
                .with_agreement_key(AgreementKey::from_pem(&consumer_pem).unwrap())
        } else if id == provider {
            config
                .with_agreement_key(AgreementKey::from_pem(&provider_pem).unwrap())
                .with_recipient_key(consumer.clone(), consumer_key)
        } else {
            config
        }
    })
    .await;
    Setup {
        ex,
        cast,
        provider_key,
        seen,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The reply says insufficient data because the payload cannot be read.
fn assert_undecryptable(rep: &IncomingReply, why: &str) {
    match &rep.body {
        ReplyBody::InsufficientData { missing } => assert!(
            missing
                .iter()
                .any(|m| m.starts_with("payload:") && m.contains(why)),
            "the reply names the payload: {missing:?}"
        ),
        other => panic!("expected insufficient data, got {other:?}"),
    }
}

/// A request from the consumer, its payload encrypted to `key`, sealed by
/// the consumer's adapter: (header, envelope bytes).
fn encrypted_request(ex: &Exchange, cast: &Cast, key: &RecipientKey) -> (Header, Vec<u8>) {
    let req = ex.request(&cast.service, "documents");
    let (mut header, payload) = req.into_parts(&cast.consumer);
    let ciphertext = encrypt_payload(&mut header, &payload, key).unwrap();
    let bytes = ex
        .adapter(&cast.consumer)
        .seal(header.clone(), ciphertext)
        .unwrap();
    (header, bytes)
}

#[tokio::test]
async fn encrypted_payload_reaches_the_provider_but_not_the_broker() {
    let Setup {
        ex,
        cast,
        provider_key,
        seen,
    } = setup(None).await;
    let req = ex.request(&cast.service, "documents");
    let plaintext = req.payload.clone();
    assert!(plaintext.len() >= 16, "a payload worth hiding");
    let mut h = within(
        "sending a confidential request",
        ex.adapter(&cast.consumer).send_confidential_request(req),
    )
    .await
    .expect("sent");
    let r = receipt(&mut h).await;
    assert!(r.accepted, "the broker accepts what it cannot read: {r:?}");
    let id = h.message_id.clone();
    let rep = reply(h).await;
    assert_eq!(rep.body.kind_name(), "documents");
    let ReplyBody::Documents {
        payload: documents, ..
    } = &rep.body
    else {
        unreachable!()
    };
    assert!(documents.len() >= 16, "documents worth hiding");
    // The documents went back encrypted to the consumer's key, and the
    // consumer's adapter decrypted them.
    let sent = Envelope::decode(rep.envelope.as_slice()).unwrap();
    let sent_header = Header::decode(sent.header.as_slice()).unwrap();
    assert!(
        sent_header.payload_encryption.is_some(),
        "the reply is encrypted"
    );
    assert!(
        !contains(&sent.payload, documents),
        "no plaintext in the reply as sent"
    );
    let reply_stored = ex
        .broker_store()
        .envelope(&rep.header.message_id)
        .expect("store readable")
        .expect("the reply's envelope is kept");
    assert!(
        !contains(&reply_stored, documents),
        "the documents' plaintext in the broker's store"
    );

    // The provider's handler got the original bytes, and knew they were encrypted.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(id.clone(), plaintext.clone(), true)]);

    // The broker keeps the signed envelope as transmitted: the ciphertext,
    // whose digest the signed header carries, and never the plaintext.
    let stored = ex
        .broker_store()
        .envelope(&id)
        .expect("store readable")
        .expect("the envelope is kept");
    assert!(
        !contains(&stored, &plaintext),
        "plaintext in the broker's store"
    );
    let env = Envelope::decode(stored.as_slice()).unwrap();
    let header = Header::decode(env.header.as_slice()).unwrap();
    let enc = header
        .payload_encryption
        .as_ref()
        .expect("marked encrypted");
    assert_eq!(enc.recipient_key_id, provider_key.key_id().to_vec());
    assert_eq!(header.payload_sha256, sha256(&env.payload).to_vec());
    assert_eq!(
        env.payload.len(),
        plaintext.len() + 16,
        "ciphertext and tag"
    );
    for w in plaintext.windows(16) {
        assert!(
            !contains(&env.payload, w),
            "a plaintext fragment in the ciphertext"
        );
    }

    // A plain request still works beside confidential ones.
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    ex.cleanup().await;
}

#[tokio::test]
async fn changed_ciphertext_is_refused_or_does_not_open() {
    let Setup {
        ex,
        cast,
        provider_key,
        seen,
    } = setup(None).await;
    let (_, bytes) = encrypted_request(&ex, &cast, &provider_key);

    // One bit of the ciphertext changed: the payload digest fails.
    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
    env.payload[0] ^= 1;
    ex.expect_refused(
        &cast.consumer,
        env.encode_to_vec(),
        ErrorCode::PayloadDigestMismatch,
    )
    .await;

    // And with the digest in the header changed to match: the signature fails.
    let mut env = Envelope::decode(bytes.as_slice()).unwrap();
    env.payload[0] ^= 1;
    let mut header = Header::decode(env.header.as_slice()).unwrap();
    header.payload_sha256 = sha256(&env.payload).to_vec();
    env.header = header.encode_to_vec();
    ex.expect_refused(&cast.consumer, env.encode_to_vec(), ErrorCode::BadSignature)
        .await;

    // Changed and signed again by the sender itself: the broker cannot tell,
    // but AES-GCM can; the handler never sees it.
    let env = Envelope::decode(bytes.as_slice()).unwrap();
    let mut header = Header::decode(env.header.as_slice()).unwrap();
    let mut payload = env.payload;
    payload[0] ^= 1;
    header.message_id = uuid::Uuid::now_v7().to_string();
    let mut h = ex
        .adapter(&cast.consumer)
        .send_header(header, payload)
        .await
        .unwrap();
    assert!(receipt(&mut h).await.accepted);
    assert_undecryptable(&reply(h).await, "does not decrypt");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the handler"
    );
    ex.cleanup().await;
}

#[tokio::test]
async fn a_ciphertext_for_another_key_or_message_cannot_be_decrypted() {
    // The consumer holds a wrong key for the provider (another agency's).
    let other = AgreementKey::generate().unwrap();
    let Setup {
        ex,
        cast,
        provider_key,
        seen,
    } = setup(Some(other.public_key())).await;
    let mut h = ex
        .adapter(&cast.consumer)
        .send_confidential_request(ex.request(&cast.service, "documents"))
        .await
        .unwrap();
    assert!(receipt(&mut h).await.accepted);
    assert_undecryptable(&reply(h).await, "another agreement key");

    // A good ciphertext for the provider, moved into another message (a new
    // id, as a replayer or another sender would need): bound to its message
    // by the key derivation and the AAD, it does not open.
    let (header, bytes) = encrypted_request(&ex, &cast, &provider_key);
    let env = Envelope::decode(bytes.as_slice()).unwrap();
    let mut moved = header.clone();
    moved.message_id = uuid::Uuid::now_v7().to_string();
    let mut h = ex
        .adapter(&cast.consumer)
        .send_header(moved, env.payload)
        .await
        .unwrap();
    assert!(receipt(&mut h).await.accepted);
    assert_undecryptable(&reply(h).await, "does not decrypt");

    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the handler"
    );

    // Only requests and replies may be encrypted: a status update may not.
    let mut status_header = ex.reply_header(
        &cast.provider,
        &cast.consumer,
        &cast.service.number,
        &header.message_id,
    );
    status_header.kind = mev_proto::pb::Kind::Status as i32;
    status_header.reply = None;
    let status = mev_proto::pb::StatusUpdate {
        status: "in progress".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let ct = encrypt_payload(&mut status_header, &status, &provider_key).unwrap();
    let bytes = ex.adapter(&cast.provider).seal(status_header, ct).unwrap();
    let r = ex
        .expect_refused(&cast.provider, bytes, ErrorCode::InvalidField)
        .await;
    assert!(r.reason.contains("payload_encryption"), "{r:?}");
    ex.cleanup().await;
}

#[tokio::test]
async fn a_confidential_request_is_never_answered_in_clear() {
    // The provider can read the request but does not know the consumer's key.
    let cast = Cast::choose(&mev_tests::load_register());
    let provider_pem = AgreementKey::generate().unwrap().to_pkcs8_pem();
    let provider_key = AgreementKey::from_pem(&provider_pem).unwrap().public_key();
    let (consumer, provider) = (cast.consumer.clone(), cast.provider.clone());
    let ex = Exchange::start_configured(
        &cast.attached(),
        mev_tests::reply_by_applicant_name(),
        move |id, config| {
            if id == consumer {
                config.with_recipient_key(provider.clone(), provider_key)
            } else if id == provider {
                config.with_agreement_key(AgreementKey::from_pem(&provider_pem).unwrap())
            } else {
                config
            }
        },
    )
    .await;
    let mut h = within(
        "sending a confidential request",
        ex.adapter(&cast.consumer)
            .send_confidential_request(ex.request(&cast.service, "documents")),
    )
    .await
    .expect("sent");
    assert!(receipt(&mut h).await.accepted);
    let handled = |ex: &Exchange| ex.handled_count(&cast.provider);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while handled(&ex) == 0 {
        assert!(std::time::Instant::now() < deadline, "the handler ran");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The documents are not sent: the request goes back to the queue (and the
    // handler is asked again a second later) until the key is configured.
    // Not "no reply after a while": the handler is asked twice more, which
    // only happens to a request that was returned to the queue unanswered
    // (an answered one is acked, and gone).
    while handled(&ex) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the handler was asked again twice ({} calls)",
            handled(&ex)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let waited = futures_util::FutureExt::now_or_never(h.reply());
    assert!(waited.is_none(), "no reply in clear: {waited:?}");
    assert_eq!(
        ex.counters().accepted.get("reply"),
        None,
        "nothing reached the exchange"
    );
    ex.cleanup().await;
}
