//! Test harness for mev's integration tests against the real RabbitMQ.
//!
//! [`Exchange::start`] brings up one isolated exchange: a fresh namespace
//! (`mevtest-<uuid>`) on the RabbitMQ at `AMQP_URL`, an in-memory development
//! CA, a broker with an in-memory store, and one adapter per chosen agency
//! whose handler answers with the reply kind a [`Replier`] picks. Every wait
//! is bounded by [`WAIT`]. [`Exchange::cleanup`] stops everything and deletes
//! the namespace's queues and exchanges; if a test panics first, `Drop` still
//! deletes them.
//!
//! [`rig::Rig`] is the fault-injection rig: broker and agencies behind
//! [`proxy::Proxy`]s that cut connections, on-disk stores, a broker that can
//! be killed, and counts of every reply and handler call.

use mev_adapter::message::{Classification, Official};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Outgoing, Route, Topology, Transport};
use mev_adapter::{
    Adapter, AdapterConfig, AdapterEvent, IncomingReply, IncomingRequest, OutgoingRequest,
    ReceiptInfo, RequestHandle,
};
use mev_broker::metrics::{Counters, Snapshot};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::{Register, Service};
use mev_broker::server::{Broker, BrokerHandle};
use mev_broker::store::OutboxState;
use mev_broker::store::Store;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::pb::{self, Header, Kind};
use mev_proto::trust::TrustStore;
use mev_proto::ErrorCode;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

mod bench;
mod cast;
pub mod process;
pub mod proxy;
pub mod rig;

pub use bench::{bench_main, env_count, median, redact};
pub use cast::{reply_by_applicant_name, reply_of_kind, Cast, Replier, REPLY_KINDS};

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The exchange's id in its certificate.
pub const BROKER_ID: &str = "MEV-EXCHANGE";

/// A broker on `transport` with the tests' batching (64 messages or 5 ms)
/// and prefetch (128), started.
pub async fn start_broker(ctx: Arc<Context>, transport: &Amqp) -> BrokerHandle {
    let batching = Batching {
        batch_size: 64,
        batch_window: Duration::from_millis(5),
    };
    within(
        "the broker to start",
        Broker::new(ctx, transport.clone(), batching, 128).start(),
    )
    .await
    .expect("broker starts")
}

/// The RabbitMQ to test against: `AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The shipped register (`<workspace>/schemas`).
pub fn register_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"))
}

/// Loads the shipped register.
pub fn load_register() -> Register {
    Register::load(&register_dir()).expect("the shipped register loads")
}

/// Awaits `f`, panicking with `what` if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits for a handle's receipt.
pub async fn receipt(handle: &mut RequestHandle) -> ReceiptInfo {
    within("the receipt", handle.receipt())
        .await
        .expect("the receipt channel is open")
}

/// Waits for a handle's reply.
pub async fn reply(handle: RequestHandle) -> IncomingReply {
    within("the reply", handle.reply())
        .await
        .expect("a reply, not an error")
}

struct Agency {
    adapter: Adapter<Amqp>,
    handled: Arc<Mutex<Vec<String>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<AdapterEvent>>,
}

/// One isolated exchange over the real RabbitMQ.
pub struct Exchange {
    /// This exchange's RabbitMQ namespace.
    pub namespace: String,
    /// The transport (shared by the broker and every adapter).
    pub transport: Amqp,
    /// The shipped register.
    pub register: Arc<Register>,
    /// The development CA every honest certificate comes from.
    pub pki: DevPki,
    /// The trust store of the broker (and the adapters): CRLs set here take effect at once.
    pub trust: Arc<TrustStore>,
    /// The signature verifier.
    pub verifier: Arc<dyn SignatureVerifier>,
    broker: Option<BrokerHandle>,
    counters: Arc<Counters>,
    agencies: BTreeMap<String, Agency>,
    all_agency_ids: Vec<String>,
    cleaned: bool,
    seq: AtomicU64,
    crl_refresh: Option<tokio::task::AbortHandle>,
}

/// How an [`Exchange`] is set up beyond its agencies; the default is a plain
/// link to `AMQP_URL`, a fresh development CA, no rate limit, no CRL files.
pub struct Setup {
    /// The link of the broker and every adapter (one shared connection).
    pub amqp: AmqpConfig,
    /// The CA to issue certificates from (so a test can write its CRLs).
    pub pki: Option<DevPki>,
    /// The broker's per-agency rate limit.
    pub rate_limit: Option<Arc<mev_broker::pipeline::ratelimit::RateLimiter>>,
    /// CRL files loaded at start and reloaded at this interval, as
    /// `mev broker` does with `[pki] crls`.
    pub crl_files: Option<(Vec<PathBuf>, Duration)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            amqp: AmqpConfig::new(amqp_url()),
            pki: None,
            rate_limit: None,
            crl_files: None,
        }
    }
}

impl Exchange {
    /// An exchange with adapters for `agencies`, answering by [`reply_by_applicant_name`].
    pub async fn start(agencies: &[&str]) -> Exchange {
        Exchange::start_with(agencies, reply_by_applicant_name()).await
    }

    /// An exchange with adapters for `agencies`, answering with `replier`.
    pub async fn start_with(agencies: &[&str], replier: Replier) -> Exchange {
        Exchange::start_configured(agencies, replier, |_, config| config).await
    }

    /// [`Exchange::start_with`], each agency's adapter config passed through
    /// `configure` (with the agency's id) before it connects.
    pub async fn start_configured(
        agencies: &[&str],
        replier: Replier,
        configure: impl Fn(&str, AdapterConfig) -> AdapterConfig,
    ) -> Exchange {
        Exchange::start_setup(agencies, replier, Setup::default(), configure).await
    }

    /// [`Exchange::start_configured`] with the broker and link set up as
    /// `setup` says.
    pub async fn start_setup(
        agencies: &[&str],
        replier: Replier,
        setup: Setup,
        configure: impl Fn(&str, AdapterConfig) -> AdapterConfig,
    ) -> Exchange {
        let register = Arc::new(load_register());
        let namespace = format!("mevtest-{}", uuid::Uuid::new_v4().simple());
        let url = setup.amqp.url.clone();
        let transport = Amqp::new(namespace.clone(), setup.amqp);
        within("connecting to RabbitMQ", transport.connect())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at {url}: {e}"));
        let pki = setup
            .pki
            .unwrap_or_else(|| DevPki::new().expect("development CA"));
        let trust = Arc::new(pki.trust_store().expect("trust store"));
        let crl_refresh = setup.crl_files.map(|(files, every)| {
            mev_broker::server::load_crls(&trust, &files).expect("the CRL files load");
            mev_broker::server::spawn_crl_refresh(trust.clone(), files, every).abort_handle()
        });
        let verifier: Arc<dyn SignatureVerifier> = Arc::new(RingVerifier::new());
        let counters = Arc::new(Counters::default());
        let all_agency_ids: Vec<String> = register.agencies().map(|a| a.id.clone()).collect();
        // From here on, Drop cleans up whatever was declared.
        let mut ex = Exchange {
            namespace,
            transport: transport.clone(),
            register: register.clone(),
            trust: trust.clone(),
            verifier: verifier.clone(),
            broker: None,
            counters: counters.clone(),
            agencies: BTreeMap::new(),
            all_agency_ids,
            cleaned: false,
            seq: AtomicU64::new(0),
            pki,
            crl_refresh,
        };
        let ctx = Arc::new(Context {
            verifier: verifier.clone(),
            rate_limit: setup.rate_limit,
            counters,
            ..Context::new(
                register.clone(),
                trust.clone(),
                ex.pki
                    .issue(BROKER_ID, KeyAlg::Ed25519)
                    .expect("broker certificate"),
                Arc::new(Store::in_memory().expect("in-memory store")),
            )
        });
        ex.broker = Some(start_broker(ctx, &transport).await);
        for id in agencies {
            let identity = ex
                .pki
                .issue(id, KeyAlg::Ed25519)
                .expect("agency certificate");
            let config = configure(
                id,
                AdapterConfig::new(identity, trust.clone(), verifier.clone(), BROKER_ID),
            );
            let handled = Arc::new(Mutex::new(Vec::new()));
            let handler = {
                let handled = handled.clone();
                let register = register.clone();
                let replier = replier.clone();
                move |req: IncomingRequest| {
                    lock(&handled).push(req.header.message_id.clone());
                    std::future::ready(replier(&register, &req))
                }
            };
            let adapter = within(
                "an adapter to connect",
                Adapter::connect(transport.clone(), config, Some(handler)),
            )
            .await
            .unwrap_or_else(|e| panic!("connecting {id}: {e}"));
            let events = adapter.events().expect("events not taken yet");
            ex.agencies.insert(
                id.to_string(),
                Agency {
                    adapter,
                    handled,
                    events: tokio::sync::Mutex::new(events),
                },
            );
        }
        ex
    }

    /// The adapter of `agency`.
    pub fn adapter(&self, agency: &str) -> &Adapter<Amqp> {
        &self
            .agencies
            .get(agency)
            .unwrap_or_else(|| panic!("{agency} has no adapter in this exchange"))
            .adapter
    }

    /// The broker's store (what it keeps: envelopes, journal, ...).
    pub fn broker_store(&self) -> &Arc<Store> {
        self.broker.as_ref().expect("the broker runs").store()
    }

    /// The message ids of the requests `agency`'s handler was called with.
    pub fn handled(&self, agency: &str) -> Vec<String> {
        self.agencies
            .get(agency)
            .map(|a| lock(&a.handled).clone())
            .unwrap_or_default()
    }

    /// How many requests `agency`'s handler was called with.
    pub fn handled_count(&self, agency: &str) -> usize {
        self.handled(agency).len()
    }

    /// The broker's counters now.
    pub fn counters(&self) -> Snapshot {
        self.counters.snapshot()
    }

    /// The broker's counters once `ready` holds. The broker counts a message
    /// when it acks it, which is after its receipt was sent, so a test that
    /// has its receipts may still have to wait for the counters.
    pub async fn counters_when(&self, what: &str, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
        within(what, async {
            loop {
                let s = self.counters();
                if ready(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// The broker's counters once it has nothing left to publish: the
    /// ingress holds nothing and its outbox is empty (every entry confirmed
    /// by RabbitMQ, counted, and removed). The broker handles its input in
    /// order and publishes its outbox in order, so after the effect of a
    /// later message was seen (a round trip's reply, say), these counters
    /// include everything the earlier input made it publish — what must not
    /// have been published is counted by then, not waited for.
    pub async fn settled(&self, what: &str) -> Snapshot {
        let ingress = self.transport.names().ingress_queue();
        within(
            &format!("{what}: the ingress and the broker's outbox to be empty"),
            async {
                loop {
                    let outbox = self.broker_store().outbox_depth().expect("outbox depth");
                    let waiting = self
                        .transport
                        .queue_depth(&ingress)
                        .await
                        .map(|d| d.messages)
                        .unwrap_or(u32::MAX);
                    if outbox == 0 && waiting == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
        self.counters()
    }

    /// Messages waiting in `agency`'s inbox (meaningful for agencies
    /// without an adapter, whose inbox nobody consumes).
    pub async fn inbox_depth(&self, agency: &str) -> u32 {
        let queue = self.transport.names().inbox_queue(agency);
        within("the queue depth", self.transport.queue_depth(&queue))
            .await
            .expect("queue depth")
            .messages
    }

    /// Publishes raw bytes straight to the ingress, as nobody.
    pub async fn publish_raw(&self, bytes: Vec<u8>) {
        within(
            "a raw publish",
            self.transport.publish(Outgoing {
                route: Route::Ingress,
                body: bytes.into(),
                message_id: String::new(),
            }),
        )
        .await
        .expect("raw publish confirmed");
    }

    /// The next receipt that arrives on `agency`'s events (receipts nobody
    /// waits on: e.g. for the replies its handler sends).
    pub async fn next_receipt_event(&self, agency: &str) -> ReceiptInfo {
        let a = self.agencies.get(agency).expect("an attached agency");
        let mut events = a.events.lock().await;
        within("a receipt event", async {
            loop {
                match events.recv().await {
                    Some(AdapterEvent::Receipt(r)) => return r,
                    Some(_) => continue,
                    None => panic!("{agency}'s events closed"),
                }
            }
        })
        .await
    }

    /// A valid request from `consumer` for `service`; the applicant's name
    /// ends with `kind`, which the default replier answers with.
    pub fn request(&self, service: &Service, kind: &str) -> OutgoingRequest {
        let i = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = mev_cli::demo::sample_request(
            &self.register,
            service,
            i,
            format!("Applicant {i} {kind}"),
        );
        assert!(!req.payload.is_empty(), "a sample of the request schema");
        req
    }

    /// A valid sample payload of `service`'s request schema.
    pub fn request_payload(&self, service: &Service) -> Vec<u8> {
        self.register
            .sample_payload(&service.request_schema)
            .expect("a sample of the request schema")
    }

    /// The header `sender` would sign for a valid request for `service`
    /// (to be spoiled by a test, then sealed or sent with `send_header`).
    pub fn request_header(&self, sender: &str, service: &Service) -> Header {
        self.request(service, "documents").into_parts(sender).0
    }

    /// A valid not-held reply header from `sender` to `recipient` answering
    /// `in_reply_to` about `service` (sent with an empty payload).
    pub fn reply_header(
        &self,
        sender: &str,
        recipient: &str,
        service: &str,
        in_reply_to: &str,
    ) -> Header {
        Header {
            message_id: uuid::Uuid::now_v7().to_string(),
            kind: Kind::Reply as i32,
            in_reply_to: in_reply_to.to_string(),
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            service: service.to_string(),
            sent_at: Some(mev_proto::time::to_wire(chrono::Utc::now())),
            official: Some(official()),
            classification: Classification::PersonalData as i32,
            reply: Some(pb::ReplyOutcome {
                outcome: Some(pb::reply_outcome::Outcome::NotHeld(pb::NotHeld {
                    reason: "no record for this applicant".into(),
                    possible_holder: String::new(),
                })),
            }),
            ..Default::default()
        }
    }

    /// Sends a valid request from `consumer` for `service` answered with
    /// `kind`, and waits for an accepted receipt and the reply.
    pub async fn round_trip(
        &self,
        consumer: &str,
        service: &Service,
        kind: &str,
    ) -> (ReceiptInfo, IncomingReply) {
        let mut h = within(
            "sending a request",
            self.adapter(consumer)
                .send_request(self.request(service, kind)),
        )
        .await
        .expect("request sent");
        let r = receipt(&mut h).await;
        assert!(r.accepted, "a good request is accepted: {r:?}");
        assert_eq!(r.code, ErrorCode::Ok.as_code(), "{r:?}");
        let id = h.message_id.clone();
        let rep = reply(h).await;
        assert_eq!(rep.header.in_reply_to, id);
        assert_eq!(rep.body.kind_name(), kind);
        (r, rep)
    }

    /// Publishes `bytes` through `sender`'s adapter and expects a negative
    /// receipt with `code` back in `sender`'s inbox.
    pub async fn expect_refused(
        &self,
        sender: &str,
        bytes: Vec<u8>,
        code: ErrorCode,
    ) -> ReceiptInfo {
        let counted = |s: &Snapshot| s.rejected.get(&code.as_code()).copied().unwrap_or(0);
        let before = counted(&self.counters());
        let mut h = within("sending raw bytes", self.adapter(sender).send_raw(bytes))
            .await
            .expect("raw send confirmed");
        let r = receipt(&mut h).await;
        assert!(
            !r.accepted && r.code == code.as_code(),
            "expected a negative receipt {code:?} ({}), got {r:?}",
            code.as_code()
        );
        assert_eq!(r.message_id, h.message_id, "the receipt names the message");
        self.counters_when("the rejection counted", |s| counted(s) > before)
            .await;
        r
    }

    /// Seals `header` + `payload` with an arbitrary identity (a bad
    /// certificate, say) into envelope bytes.
    pub fn seal_as(identity: &Identity, header: Header, payload: Vec<u8>) -> Vec<u8> {
        let env = mev_proto::envelope::seal(
            header,
            payload,
            identity.signer.as_ref(),
            &identity.certificate_chain,
        )
        .expect("sealed");
        prost::Message::encode_to_vec(&env)
    }

    /// Starts the broker's operators' endpoint (`/metrics`, `/api/status`,
    /// `/healthz`, `/readyz`, the dashboard) on a free loopback port, polling
    /// queue depths every `queue_poll`; returns its address.
    pub async fn serve_http(&mut self, queue_poll: Duration) -> std::net::SocketAddr {
        let transport = self.transport.clone();
        let broker = self.broker.as_mut().expect("the broker runs");
        within(
            "the HTTP endpoint to start",
            broker.serve_http(transport, ([127, 0, 0, 1], 0).into(), queue_poll),
        )
        .await
        .expect("the HTTP endpoint starts")
    }

    /// Shuts `agency`'s adapter down (it stops consuming its inbox).
    pub async fn stop_agency(&mut self, agency: &str) {
        let a = self
            .agencies
            .remove(agency)
            .unwrap_or_else(|| panic!("{agency} has no adapter in this exchange"));
        within("the adapter to shut down", a.adapter.shutdown()).await;
    }

    /// Stops the adapters and the broker and deletes the namespace.
    pub async fn cleanup(mut self) {
        if let Some(task) = self.crl_refresh.take() {
            task.abort();
        }
        for (_, a) in std::mem::take(&mut self.agencies) {
            let _ = tokio::time::timeout(WAIT, a.adapter.shutdown()).await;
        }
        if let Some(b) = self.broker.take() {
            let _ = tokio::time::timeout(WAIT, b.stop()).await;
        }
        let deleted =
            tokio::time::timeout(WAIT, self.transport.delete_topology(&self.all_agency_ids)).await;
        self.cleaned = matches!(deleted, Ok(Ok(())));
        if !self.cleaned {
            eprintln!(
                "cleanup of {} failed ({deleted:?}); Drop will retry",
                self.namespace
            );
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        delete_namespace_blocking(&self.namespace, &self.all_agency_ids);
    }
}

/// Deletes a namespace's queues and exchanges from a `Drop` (a panicking
/// test): over a fresh connection, on a thread of its own, since `Drop`
/// cannot await on the test's runtime.
pub(crate) fn delete_namespace_blocking(namespace: &str, agencies: &[String]) {
    let namespace = namespace.to_string();
    let agencies = agencies.to_vec();
    let ns = namespace.clone();
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        rt.block_on(async move {
            let t = Amqp::new(ns.clone(), AmqpConfig::new(amqp_url()));
            match tokio::time::timeout(WAIT, t.delete_topology(&agencies)).await {
                Ok(Ok(())) => {}
                other => eprintln!("cleanup of {ns} failed: {other:?}"),
            }
        });
    })
    .join();
    if done.is_err() {
        eprintln!("cleanup of {namespace} panicked");
    }
}

/// The official named in test requests.
pub fn official() -> Official {
    Official {
        full_name: "Rahimova Nodira".into(),
        position: "Chief specialist, public service centre".into(),
        id: String::new(),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
