//! Timestamps and replays: a broker with a manual clock and a clock-skew limit.

use super::*;
use mev_adapter::transport::Topology as _;
use mev_broker::store::prelude::*;

/// `Exchange` always runs the broker with `max_clock_skew: None` and the
/// system clock, so these tests start their own broker the same way, with
/// a manual clock and a 5-minute skew limit. The provider has an adapter
/// that answers; the consumer has none: its inbox is read raw, so every
/// receipt is seen (an adapter surfaces one receipt per digest).
pub(crate) struct Skewed {
    pub(crate) namespace: String,
    pub(crate) transport: Amqp,
    pub(crate) register: Arc<Register>,
    pub(crate) cast: Cast,
    pub(crate) clock: ManualClock,
    pub(crate) store: Arc<Store>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) broker: Option<BrokerHandle>,
    pub(crate) provider: Option<Adapter<Amqp>>,
    /// The consumer's inbox.
    pub(crate) inbox: mev_adapter::transport::Consumer,
    pub(crate) trust: Arc<TrustStore>,
    /// A valid certificate of the consumer, for signing by hand.
    pub(crate) consumer: Identity,
    pub(crate) handled: Arc<std::sync::Mutex<Vec<String>>>,
    pub(crate) cleaned: bool,
}

pub(crate) const SKEW: TimeDelta = TimeDelta::minutes(5);

impl Skewed {
    pub(crate) async fn start() -> Skewed {
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
        let broker = mev_tests::start_broker(ctx, &transport).await;
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
    pub(crate) fn request(&self, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
        let req = mev_cli::demo::sample_request(
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
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> ReceiptEntry {
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

    pub(crate) fn handled(&self) -> Vec<String> {
        self.handled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the provider's handler got `id` (it answers at once).
    pub(crate) async fn wait_handled(&self, id: &str) {
        within("the provider's handler", async {
            while !self.handled().iter().any(|h| h == id) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    pub(crate) async fn cleanup(mut self) {
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
pub(crate) async fn replays_and_timestamps() {
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
    // Not "nothing more after a while": a last valid request, sent after
    // all of them, is handled; the ingress, the broker's outbox and the
    // provider's inbox are queues in order, so anything forwarded before it
    // reached the handler first.
    let last = s.request(s.clock.now());
    let last_id = Header::decode(Envelope::decode(last.as_slice()).unwrap().header.as_slice())
        .unwrap()
        .message_id;
    let r = s.send(last).await;
    assert!(r.accepted && r.code == 0, "the last request: {r:?}");
    s.wait_handled(&last_id).await;
    let handled = s.handled();
    assert!(!handled.contains(&ahead_id));
    assert_eq!(handled.iter().filter(|h| **h == id).count(), 1);
    assert_eq!(handled.len(), 4, "three accepted and the last: {handled:?}");
    assert_eq!(handled.last(), Some(&last_id), "{handled:?}");
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
pub(crate) async fn a_replay_after_the_dedup_retention_is_refused() {
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
