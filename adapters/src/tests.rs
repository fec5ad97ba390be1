//! Adapter-level tests of the durable outbox and the persistent dedup
//! index, over the embedded transport (and a flaky wrapper of it) with a
//! development CA made here.

use crate::transport::embedded::Embedded;
use crate::transport::{
    Consumer, Outgoing, QueueDepth, Route, Topology, Transport, TransportError,
};
use crate::{Adapter, AdapterConfig, AdapterError, AdapterEvent, IncomingRequest, ReplyBody};
use mev_proto::crypto::{Identity, RingSigner, RingVerifier};
use mev_proto::pb::{self, Header, Kind};
use mev_proto::trust::{TrustStore, AGENCY_URI_PREFIX};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BROKER: &str = "MEV-EXCHANGE";
const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    trust: Arc<TrustStore>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "adapter test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ca = CertifiedIssuer::self_signed(params, key).unwrap();
        let trust = Arc::new(TrustStore::new(&[ca.der().to_vec()]).unwrap());
        Pki { ca, trust }
    }

    fn identity(&self, agency: &str) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, agency);
        let uri = format!("{AGENCY_URI_PREFIX}{agency}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let signer = RingSigner::from_pkcs8_der(key.serialized_der()).unwrap();
        Identity::new(agency, Arc::new(signer), vec![cert.der().to_vec()])
    }

    fn config(&self, agency: &str, dir: Option<&Path>) -> AdapterConfig {
        let mut c = AdapterConfig::new(
            self.identity(agency),
            self.trust.clone(),
            Arc::new(RingVerifier::new()),
            BROKER,
        );
        c.data_dir = dir.map(Path::to_path_buf);
        c.prefetch = 1;
        c.shutdown_flush = Duration::from_millis(100);
        c
    }
}

fn seal(identity: &Identity, header: Header, payload: Vec<u8>) -> Vec<u8> {
    mev_proto::envelope::seal(
        header,
        payload,
        identity.signer.as_ref(),
        &identity.certificate_chain,
    )
    .unwrap()
    .encode_to_vec()
}

fn request(from: &Identity, to: &str) -> (String, Vec<u8>) {
    let id = uuid::Uuid::now_v7().to_string();
    let header = Header {
        message_id: id.clone(),
        kind: Kind::Request as i32,
        sender: from.agency.clone(),
        recipient: to.into(),
        service: "UZ-TEST-1".into(),
        ..Default::default()
    };
    (id, seal(from, header, b"payload".to_vec()))
}

fn receipt(broker: &Identity, to: &str, entries: &[([u8; 32], u32)]) -> Vec<u8> {
    let header = Header {
        message_id: uuid::Uuid::now_v7().to_string(),
        kind: Kind::Receipt as i32,
        sender: BROKER.into(),
        recipient: to.into(),
        ..Default::default()
    };
    let payload = pb::Receipt {
        accepted_at: None,
        entries: entries
            .iter()
            .map(|(d, code)| pb::ReceiptEntry {
                message_id: String::new(),
                digest: d.to_vec(),
                accepted: true,
                code: *code,
                reason: String::new(),
            })
            .collect(),
    };
    seal(broker, header, payload.encode_to_vec())
}

fn status() -> pb::StatusUpdate {
    pb::StatusUpdate::default()
}

fn official() -> pb::Official {
    pb::Official {
        full_name: "Test Official".into(),
        position: "tester".into(),
        id: String::new(),
    }
}

async fn deliver(t: &impl Transport, to: &str, bytes: Vec<u8>) {
    t.publish(Outgoing {
        route: Route::Inbox(to.into()),
        body: bytes.into(),
        message_id: String::new(),
    })
    .await
    .unwrap();
}

/// The next `n` messages of a queue, acked.
async fn take(c: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("a message in time")
            .expect("the consumer is open");
        d.ack().await.unwrap();
        out.push(d.body);
    }
    out
}

async fn next_event(events: &mut tokio::sync::mpsc::Receiver<AdapterEvent>) -> AdapterEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

fn header_of(bytes: &[u8]) -> Header {
    mev_proto::envelope::open(bytes, &Default::default())
        .unwrap()
        .header
}

/// Reopens an adapter once the previous one (dropped) has let go of its store.
async fn reopen<T: Transport, H: crate::Handler + Clone>(
    transport: &T,
    config: &AdapterConfig,
    handler: H,
) -> Adapter<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        match Adapter::connect(transport.clone(), config.clone(), Some(handler.clone())).await {
            Ok(a) => return a,
            Err(AdapterError::Store(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopening: {e}"),
        }
    }
}

/// The embedded transport, failing publishes on demand.
#[derive(Clone)]
struct Flaky {
    inner: Embedded,
    /// Fail everything (the link is down).
    down: Arc<AtomicBool>,
    /// Fail the next this many batches.
    fail_next: Arc<AtomicU32>,
    /// Fail with a nack instead of a lost connection.
    nack: Arc<AtomicBool>,
    batches: Arc<AtomicU32>,
}

impl Flaky {
    fn new(ns: &str) -> Flaky {
        Flaky {
            inner: Embedded::new(ns),
            down: Arc::default(),
            fail_next: Arc::default(),
            nack: Arc::default(),
            batches: Arc::default(),
        }
    }
}

impl Transport for Flaky {
    fn names(&self) -> &crate::transport::Names {
        self.inner.names()
    }
    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Vec<Result<(), TransportError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let fail = self.down.load(Ordering::SeqCst)
            || self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            let e = if self.nack.load(Ordering::SeqCst) {
                TransportError::Nacked
            } else {
                TransportError::Connection("the link is down (test)".into())
            };
            return vec![Err(e); messages.len()];
        }
        self.inner.publish_batch(messages).await
    }
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, TransportError> {
        self.inner.consume(queue, prefetch).await
    }
}

impl Topology for Flaky {
    async fn declare_ingress(&self) -> Result<(), TransportError> {
        self.inner.declare_ingress().await
    }
    async fn declare_inbox(&self, agency: &str) -> Result<(), TransportError> {
        self.inner.declare_inbox(agency).await
    }
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, TransportError> {
        self.inner.queue_depth(queue).await
    }
    async fn delete_topology(&self, agencies: &[String]) -> Result<(), TransportError> {
        self.inner.delete_topology(agencies).await
    }
}

#[tokio::test]
async fn sends_while_offline_survive_a_restart_and_drain_in_order() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let t = Flaky::new("t");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("A").await.unwrap();
    t.down.store(true, Ordering::SeqCst);
    let config = pki.config("A", Some(dir.path()));
    let a = Adapter::connect(t.clone(), config.clone(), None::<crate::NoHandler>)
        .await
        .unwrap();
    let mut digests = Vec::new();
    for _ in 0..3 {
        digests.push(
            a.send_status("B", &uuid::Uuid::now_v7().to_string(), official(), status())
                .await
                .unwrap(),
        );
    }
    assert_eq!(a.outbox_depth(), 3, "on disk, unconfirmed");
    assert!(matches!(
        a.flush(Duration::from_millis(200)).await,
        Err(AdapterError::Timeout(_))
    ));
    assert!(t.batches.load(Ordering::SeqCst) >= 2, "it kept trying");
    a.shutdown().await;
    assert_eq!(t.queue_depth("t.ingress").await.unwrap().messages, 0);

    // Back up, and started again from the same directory.
    t.down.store(false, Ordering::SeqCst);
    let a = Adapter::connect(t.clone(), config, None::<crate::NoHandler>)
        .await
        .unwrap();
    a.flush(WAIT).await.unwrap();
    assert_eq!(a.outbox_depth(), 0);
    let mut ingress = t.consume("t.ingress", 16).await.unwrap();
    let sent: Vec<[u8; 32]> = take(&mut ingress, 3)
        .await
        .iter()
        .map(|b| {
            let env = mev_proto::Envelope::decode(b.as_slice()).unwrap();
            mev_proto::envelope::sha256(&env.header)
        })
        .collect();
    assert_eq!(sent, digests, "all of them, in the order sent");
    a.shutdown().await;
}

#[tokio::test]
async fn failed_publishes_are_retried_with_growing_delays() {
    let pki = Pki::new();
    let t = Flaky::new("t");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("A").await.unwrap();
    let a = Adapter::connect(t.clone(), pki.config("A", None), None::<crate::NoHandler>)
        .await
        .unwrap();
    a.flush(WAIT).await.unwrap();
    let before = t.batches.load(Ordering::SeqCst);
    t.fail_next.store(3, Ordering::SeqCst);
    let started = Instant::now();
    a.send_status("B", "x", official(), status()).await.unwrap();
    a.flush(WAIT).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        t.batches.load(Ordering::SeqCst) - before,
        4,
        "3 failures, then it went"
    );
    // At least 0.75 × (50 + 100 + 200) ms of backoff.
    assert!(took >= Duration::from_millis(260), "{took:?}");
    // Nacks (a full queue) are retried the same way.
    t.nack.store(true, Ordering::SeqCst);
    t.fail_next.store(2, Ordering::SeqCst);
    a.send_status("B", "y", official(), status()).await.unwrap();
    a.flush(WAIT).await.unwrap();
    assert_eq!(t.batches.load(Ordering::SeqCst) - before, 7);
    assert_eq!(t.queue_depth("t.ingress").await.unwrap().messages, 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_sends_are_group_committed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let t = Embedded::new("t");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("A").await.unwrap();
    let a = Adapter::connect(
        t.clone(),
        pki.config("A", Some(dir.path())),
        None::<crate::NoHandler>,
    )
    .await
    .unwrap();
    let before = a.store().durable_commits();
    let sends = (0..100).map(|_| a.send_status("B", "x", official(), status()));
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(Result::is_ok));
    let commits = a.store().durable_commits() - before;
    assert!(
        commits <= 2,
        "100 concurrent sends took {commits} durable commits"
    );
    a.flush(WAIT).await.unwrap();
    assert_eq!(t.queue_depth("t.ingress").await.unwrap().messages, 100);
    a.shutdown().await;
}

/// A handler that records the message id of each request it is given and
/// answers it with insufficient data.
fn recording_handler() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(IncomingRequest) -> std::future::Ready<ReplyBody> + Clone + Send + Sync + 'static,
) {
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = handled.clone();
    let handler = move |req: IncomingRequest| {
        seen.lock().unwrap().push(req.header.message_id.clone());
        std::future::ready(ReplyBody::InsufficientData {
            missing: vec!["x".into()],
        })
    };
    (handled, handler)
}

#[tokio::test]
async fn a_redelivered_request_is_handled_once_across_restarts() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let t = Embedded::new("t");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("B").await.unwrap();
    let requester = pki.identity("A");
    let config = pki.config("B", Some(dir.path()));
    let (handled, handler) = recording_handler();
    let mut ingress = t.consume("t.ingress", 16).await.unwrap();
    let b = Adapter::connect(t.clone(), config.clone(), Some(handler.clone()))
        .await
        .unwrap();

    let (id1, r1) = request(&requester, "B");
    deliver(&t, "B", r1.clone()).await;
    let reply = take(&mut ingress, 1).await;
    assert_eq!(header_of(&reply[0]).in_reply_to, id1);
    // A redelivery (say the ack was lost), then another request: with
    // prefetch 1 they are dealt with in order.
    deliver(&t, "B", r1.clone()).await;
    let (id2, r2) = request(&requester, "B");
    deliver(&t, "B", r2).await;
    let reply = take(&mut ingress, 1).await;
    assert_eq!(
        header_of(&reply[0]).in_reply_to,
        id2,
        "no reply to the copy"
    );

    // A crash-like stop (no shutdown), and a start from the same directory.
    drop(b);
    let b = reopen(&t, &config, handler).await;
    deliver(&t, "B", r1).await;
    let (id3, r3) = request(&requester, "B");
    deliver(&t, "B", r3).await;
    let reply = take(&mut ingress, 1).await;
    assert_eq!(
        header_of(&reply[0]).in_reply_to,
        id3,
        "no reply to the copy"
    );
    assert_eq!(*handled.lock().unwrap(), [id1, id2, id3]);
    assert_eq!(t.queue_depth("t.inbox.B").await.unwrap().messages, 0);
    b.shutdown().await;
}

#[tokio::test]
async fn repeated_receipts_and_statuses_are_surfaced_once() {
    let pki = Pki::new();
    let broker = pki.identity(BROKER);
    let other = pki.identity("B");
    let t = Embedded::new("t");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("A").await.unwrap();
    let a = Adapter::connect(t.clone(), pki.config("A", None), None::<crate::NoHandler>)
        .await
        .unwrap();
    let mut events = a.events().unwrap();

    // The same receipt twice (a redelivery), then another receipt for the
    // same digest (the exchange answering a re-published copy): surfaced once.
    let d1 = [1u8; 32];
    let first = receipt(&broker, "A", &[(d1, 0)]);
    deliver(&t, "A", first.clone()).await;
    deliver(&t, "A", first).await;
    deliver(&t, "A", receipt(&broker, "A", &[(d1, 404)])).await;
    let d2 = [2u8; 32];
    deliver(&t, "A", receipt(&broker, "A", &[(d2, 0)])).await;
    match next_event(&mut events).await {
        AdapterEvent::Receipt(r) => assert_eq!((r.digest, r.code), (d1, 0)),
        e => panic!("{e:?}"),
    }
    match next_event(&mut events).await {
        AdapterEvent::Receipt(r) => assert_eq!(r.digest, d2, "the repeats were not surfaced"),
        e => panic!("{e:?}"),
    }

    // A caller that sends the same bytes again on purpose gets each receipt.
    let (_, bytes) = request(&pki.identity("A"), "B");
    let mut h1 = a.send_raw(bytes.clone()).await.unwrap();
    deliver(&t, "A", receipt(&broker, "A", &[(h1.digest, 0)])).await;
    assert_eq!(h1.receipt().await.unwrap().code, 0);
    let mut h2 = a.send_raw(bytes).await.unwrap();
    deliver(&t, "A", receipt(&broker, "A", &[(h2.digest, 404)])).await;
    assert_eq!(h2.receipt().await.unwrap().code, 404);

    // A status update delivered twice is surfaced once.
    let st = seal(
        &other,
        Header {
            message_id: uuid::Uuid::now_v7().to_string(),
            kind: Kind::Status as i32,
            sender: "B".into(),
            recipient: "A".into(),
            ..Default::default()
        },
        status().encode_to_vec(),
    );
    deliver(&t, "A", st.clone()).await;
    deliver(&t, "A", st).await;
    deliver(&t, "A", receipt(&broker, "A", &[([3u8; 32], 0)])).await;
    assert!(matches!(
        next_event(&mut events).await,
        AdapterEvent::Status { .. }
    ));
    match next_event(&mut events).await {
        AdapterEvent::Receipt(r) => assert_eq!(r.digest, [3u8; 32], "the status came once"),
        e => panic!("{e:?}"),
    }
    assert!(events.try_recv().is_err(), "nothing more");
    a.shutdown().await;
}

#[tokio::test]
async fn connects_and_queues_while_rabbitmq_is_unreachable() {
    use crate::transport::amqp::{Amqp, AmqpConfig};
    // "RabbitMQ" closes every connection at once, and counts them: the
    // adapter's tries to reach it are seen, not assumed.
    let unreachable = Unreachable::start();
    let t = Amqp::new(
        "offline",
        AmqpConfig::new(format!("amqp://guest:guest@{}/%2f", unreachable.addr)),
    );
    let pki = Pki::new();
    let a = tokio::time::timeout(
        WAIT,
        Adapter::connect(t, pki.config("A", None), None::<crate::NoHandler>),
    )
    .await
    .expect("connect does not hang")
    .expect("connect succeeds offline");
    a.send_status("B", "x", official(), status()).await.unwrap();
    assert_eq!(a.outbox_depth(), 1);
    // Not "still there after a while": still there after the adapter tried
    // RabbitMQ twice more with it in the outbox, and failed.
    let tries = unreachable.tries();
    tokio::time::timeout(WAIT, async {
        while unreachable.tries() < tries + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the adapter did not try RabbitMQ twice in {WAIT:?} ({} tries in all)",
            unreachable.tries()
        )
    });
    assert_eq!(a.outbox_depth(), 1, "kept until RabbitMQ confirms it");
    a.shutdown().await;
}

/// A TCP listener on a free local port that closes every connection it
/// accepts at once (a RabbitMQ that cannot be reached), counting them; it
/// stops when dropped.
struct Unreachable {
    addr: std::net::SocketAddr,
    tries: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Unreachable {
    fn start() -> Unreachable {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let tries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, st) = (tries.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        drop(conn);
                        t.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Unreachable { addr, tries, stop }
    }

    fn tries(&self) -> u64 {
        self.tries.load(Ordering::SeqCst)
    }
}

impl Drop for Unreachable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_message_larger_than_the_limit_never_reaches_the_outbox() {
    let pki = Pki::new();
    let t = Embedded::new("big");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("A").await.unwrap();
    let mut config = pki.config("A", None);
    config.limits.max_message_bytes = 2048;
    let a = Adapter::connect(t.clone(), config, None::<crate::NoHandler>)
        .await
        .unwrap();
    let big = pb::StatusUpdate {
        comment: "x".repeat(4096),
        ..status()
    };
    let id = uuid::Uuid::now_v7().to_string();
    match a.send_status("B", &id, official(), big).await {
        Err(AdapterError::Invalid(r)) => {
            assert_eq!(r.code, mev_proto::ErrorCode::TooLarge);
            assert!(r.reason.contains("at most 2048"), "{r:?}");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|_| ())),
    }
    match a.send_raw(vec![0u8; 4096]).await {
        Err(AdapterError::Invalid(r)) => assert_eq!(r.code, mev_proto::ErrorCode::TooLarge),
        other => panic!("expected TooLarge, got {:?}", other.map(|_| ())),
    }
    assert_eq!(a.outbox_depth(), 0, "nothing queued to stall the outbox");
    // A message within the limit still goes.
    a.send_status("B", &id, official(), status()).await.unwrap();
    a.flush(WAIT).await.unwrap();
    assert_eq!(t.queue_depth("big.ingress").await.unwrap().messages, 1);
    a.shutdown().await;
}

#[tokio::test]
async fn a_failed_store_stops_the_inbox_and_fails_sends_without_retrying() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let t = Embedded::new("f");
    t.declare_ingress().await.unwrap();
    t.declare_inbox("B").await.unwrap();
    let requester = pki.identity("A");
    let config = pki.config("B", Some(dir.path()));
    let (handled, handler) = recording_handler();
    let mut ingress = t.consume("f.ingress", 16).await.unwrap();
    let b = Adapter::connect(t.clone(), config.clone(), Some(handler.clone()))
        .await
        .unwrap();
    let (id1, r1) = request(&requester, "B");
    deliver(&t, "B", r1).await;
    assert_eq!(header_of(&take(&mut ingress, 1).await[0]).in_reply_to, id1);
    assert_eq!(b.store_failure(), None);

    // What a failed write or fsync of its redo log does (a full disk).
    b.store()
        .fail_for_test("No space left on device (os error 28)");
    assert!(b.store_failure().unwrap().contains("No space left"));
    // The inbox is no longer consumed: a request stays in the queue.
    tokio::time::timeout(WAIT, async {
        while t.queue_depth("f.inbox.B").await.unwrap().consumers > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the inbox's consumer goes away");
    let (_, r2) = request(&requester, "B");
    deliver(&t, "B", r2).await;
    assert_eq!(t.queue_depth("f.inbox.B").await.unwrap().messages, 1);
    // A send fails at once, as a hard error.
    let (_, raw) = request(&requester, "C");
    let e = b
        .send_raw(raw)
        .await
        .err()
        .expect("no send on a failed store");
    assert!(
        matches!(&e, AdapterError::Store(s) if s.is_fatal()),
        "{e:?}"
    );
    assert_eq!(*handled.lock().unwrap(), std::slice::from_ref(&id1));
    b.shutdown().await;

    // Reconnected: the waiting request is handled, the first one not again
    // (its reply may go out again: its removal from the outbox was lazy,
    // and the receiver drops the copy by its id).
    let b = reopen(&t, &config, handler).await;
    let mut replies = Vec::new();
    while !replies.iter().any(|r| *r != id1) {
        assert!(
            replies.len() < 2,
            "only the new reply and a copy: {replies:?}"
        );
        replies.push(header_of(&take(&mut ingress, 1).await[0]).in_reply_to);
    }
    assert_eq!(handled.lock().unwrap().len(), 2);
    assert_eq!(handled.lock().unwrap()[0], id1);
    b.shutdown().await;
}
