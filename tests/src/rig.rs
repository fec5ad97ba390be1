//! The fault-injection rig: one exchange whose broker and adapters reach
//! RabbitMQ through two [`Proxy`]s (one for the broker, one for the
//! agencies), with on-disk stores and a development PKI on disk, so that
//! links can be cut, the broker killed and restarted (in process or as a
//! separate process), and agencies taken offline — and then every request
//! and every handler call is counted.

use crate::proxy::Proxy;
use crate::{amqp_url, load_register, lock, Cast, WAIT};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Topology, Transport};
use mev_adapter::{Adapter, AdapterConfig, AdapterEvent, IncomingRequest};
use mev_broker::config::BrokerConfig;
use mev_broker::pipeline::Batching;
use mev_broker::register::Register;
use mev_broker::server::{self, Broker, BrokerHandle};
use mev_devpki::KeyAlg;
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::trust::TrustStore;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The broker's id in the rig's certificates.
const BROKER_ID: &str = crate::BROKER_ID;

/// What happened to every request, counted where it happened.
#[derive(Default)]
pub struct Tally {
    /// Request id → handler calls, at any provider instance.
    handled: Mutex<HashMap<String, u32>>,
    /// Request id → replies delivered to the waiting requester.
    answered: Mutex<HashMap<String, u32>>,
    /// Request id (`in_reply_to`) → replies that arrived with nobody waiting:
    /// a duplicate, or a reply to a request of an earlier adapter instance.
    stray_replies: Mutex<HashMap<String, u32>>,
    /// Requests whose reply handle ended in an error.
    failed: Mutex<Vec<String>>,
    /// Request ids sent, in order.
    sent: Mutex<Vec<String>>,
    /// Ids of the requests [`Rig::last_word`] sent (not counted in the report).
    last_words: Mutex<Vec<String>>,
}

/// The counts a fault test ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub requests: usize,
    pub answered_once: usize,
    pub answered_more: usize,
    pub unanswered: usize,
    pub handled_once: usize,
    pub handled_more: usize,
    pub not_handled: usize,
    pub stray_replies: usize,
    pub failed: usize,
}

impl Report {
    /// Prints the counts under `title`.
    pub fn print(&self, title: &str) {
        println!(
            "[{title}] requests {}, answered exactly once {}, answered more than once {}, \
             unanswered {}, handled exactly once {}, handled more than once {}, never handled {}, \
             stray replies {}, failed {}; lost {}, duplicated {}",
            self.requests,
            self.answered_once,
            self.answered_more,
            self.unanswered,
            self.handled_once,
            self.handled_more,
            self.not_handled,
            self.stray_replies,
            self.failed,
            self.unanswered + self.failed,
            self.answered_more + self.handled_more + self.stray_replies,
        );
    }

    /// Panics unless every request was answered once and handled once.
    pub fn assert_exactly_once(&self) {
        let all = self.requests;
        assert!(all > 0, "no requests were sent");
        assert_eq!(
            self.answered_once, all,
            "every request answered exactly once: {self:?}"
        );
        assert_eq!(
            self.handled_once, all,
            "every handler called exactly once: {self:?}"
        );
        assert_eq!(self.stray_replies, 0, "no reply delivered twice: {self:?}");
        assert_eq!(self.failed, 0, "no request failed: {self:?}");
    }
}

struct RigAgency {
    adapter: Option<Adapter<Amqp>>,
    drain: Option<tokio::task::JoinHandle<()>>,
}

enum BrokerSide {
    InProcess(BrokerHandle),
    Process(std::process::Child),
}

/// One exchange with faults to inject.
pub struct Rig {
    pub namespace: String,
    pub register: Arc<Register>,
    pub cast: Cast,
    /// Between the broker and RabbitMQ.
    pub broker_link: Proxy,
    /// Between the agencies and RabbitMQ.
    pub agency_link: Proxy,
    pub tally: Arc<Tally>,
    dir: tempfile::TempDir,
    trust: Arc<TrustStore>,
    verifier: Arc<dyn SignatureVerifier>,
    broker: Mutex<Option<BrokerSide>>,
    agencies: BTreeMap<String, RigAgency>,
    all_agency_ids: Vec<String>,
    /// Declared at the broker: most messages an inbox holds (0 = unbounded).
    max_inbox_length: u32,
    seq: AtomicU64,
    cleaned: bool,
    /// Unanswered requests at most, so a run lasts while faults are injected.
    window: Arc<Semaphore>,
}

impl Rig {
    /// A rig with a fresh namespace, PKI and data directory; nothing runs yet.
    /// Logs go to stderr at `RUST_LOG` (default: warnings).
    pub async fn new(max_inbox_length: u32, window: usize) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    // lapin logs every cut connection as an error; they are the point here.
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off")),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let register = Arc::new(load_register());
        let cast = Cast::choose(&register);
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = dir.path().join("pki");
        mev_devpki::init(&pki, false).expect("dev CA");
        mev_devpki::issue(&pki, BROKER_ID, KeyAlg::Ed25519, 30).expect("broker cert");
        for a in [&cast.consumer, &cast.provider] {
            mev_devpki::issue(&pki, a, KeyAlg::Ed25519, 30).expect("agency cert");
        }
        let ca = std::fs::read_to_string(pki.join("ca.crt")).expect("CA cert");
        let trust = Arc::new(TrustStore::from_pem(&ca).expect("trust store"));
        Rig {
            namespace: format!("mevfault-{}", uuid::Uuid::new_v4().simple()),
            all_agency_ids: register.agencies().map(|a| a.id.clone()).collect(),
            register,
            cast,
            broker_link: Proxy::to_rabbitmq().await,
            agency_link: Proxy::to_rabbitmq().await,
            tally: Arc::new(Tally::default()),
            dir,
            trust,
            verifier: Arc::new(RingVerifier::new()),
            broker: Mutex::new(None),
            agencies: BTreeMap::new(),
            max_inbox_length,
            seq: AtomicU64::new(0),
            cleaned: false,
            window: Arc::new(Semaphore::new(window)),
        }
    }

    fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    fn identity(&self, agency: &str) -> Identity {
        let paths = mev_devpki::PkiPaths::new(self.pki_dir());
        let key = std::fs::read_to_string(paths.agency_key(agency)).expect("key");
        let cert = std::fs::read_to_string(paths.agency_cert(agency)).expect("cert");
        Identity::from_pem(&key, &cert).expect("identity")
    }

    /// The broker's config: on-disk store, RabbitMQ through `broker_link`.
    pub fn broker_config(&self) -> BrokerConfig {
        let paths = mev_devpki::PkiPaths::new(self.pki_dir());
        let mut c = BrokerConfig::default();
        c.broker.id = BROKER_ID.into();
        c.broker.namespace = self.namespace.clone();
        c.broker.register = crate::register_dir();
        c.broker.data_dir = self.dir.path().join("broker");
        c.amqp.url = self.broker_link.url();
        c.amqp.max_inbox_length = self.max_inbox_length;
        c.amqp.prefetch = 256;
        c.pki.ca = paths.ca_cert();
        c.pki.cert = paths.agency_cert(BROKER_ID);
        c.pki.key = paths.agency_key(BROKER_ID);
        c.pipeline.batch_size = 128;
        c.pipeline.batch_window_ms = 5;
        c.http.listen = String::new(); // no HTTP endpoint: parallel rigs would share its port
        c
    }

    /// Starts the broker in this process.
    pub async fn start_broker(&self) {
        assert!(
            lock(&self.broker).is_none(),
            "the broker is already running"
        );
        let config = self.broker_config();
        let ctx = server::context_from_config(&config).expect("broker context");
        let transport = Amqp::new(
            self.namespace.clone(),
            AmqpConfig {
                max_inbox_length: self.max_inbox_length,
                ..AmqpConfig::new(config.amqp.url.clone())
            },
        );
        let batching = Batching {
            batch_size: config.pipeline.batch_size,
            batch_window: Duration::from_millis(config.pipeline.batch_window_ms),
        };
        let handle = crate::within(
            "the broker to start",
            Broker::new(ctx, transport, batching, config.amqp.prefetch).start(),
        )
        .await
        .expect("broker starts");
        *lock(&self.broker) = Some(BrokerSide::InProcess(handle));
    }

    /// Starts the broker as a separate process: `exe` runs `mev_broker::server::run`
    /// with the config file it is given; it is serving once it consumes the ingress.
    pub async fn spawn_broker(&self, exe: &str) {
        assert!(
            lock(&self.broker).is_none(),
            "the broker is already running"
        );
        let path = self.dir.path().join("broker.toml");
        let text = toml::to_string(&self.broker_config()).expect("config to TOML");
        std::fs::write(&path, text).expect("write config");
        let child = std::process::Command::new(exe)
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        *lock(&self.broker) = Some(BrokerSide::Process(child));
        let admin = self.admin();
        let ingress = admin.names().ingress_queue();
        crate::within("the broker process to consume its ingress", async {
            loop {
                if let Ok(d) = admin.queue_depth(&ingress).await {
                    if d.consumers > 0 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// Kills the broker process with SIGKILL (no shutdown of any kind).
    pub fn kill_broker(&self) {
        let side = lock(&self.broker).take();
        match side {
            Some(BrokerSide::Process(mut child)) => {
                child.kill().expect("SIGKILL the broker");
                let _ = child.wait();
            }
            _ => panic!("kill_broker: no broker process runs"),
        }
    }

    /// Stops the in-process broker (or kills the process).
    pub async fn stop_broker(&self) {
        let side = lock(&self.broker).take();
        match side {
            Some(BrokerSide::InProcess(h)) => {
                let _ = tokio::time::timeout(WAIT, h.stop()).await;
            }
            Some(BrokerSide::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }

    /// The in-process broker's outbox depth, if it runs in process.
    pub fn broker_outbox_depth(&self) -> Option<u64> {
        match &*lock(&self.broker) {
            Some(BrokerSide::InProcess(h)) => h.status().ok().map(|s| s.outbox_depth),
            _ => None,
        }
    }

    /// The in-process broker's counters, if it runs in process.
    pub fn broker_counters(&self) -> Option<mev_broker::metrics::Snapshot> {
        match &*lock(&self.broker) {
            Some(BrokerSide::InProcess(h)) => Some(h.counters().snapshot()),
            _ => None,
        }
    }

    /// A direct transport to RabbitMQ (no proxy), for queue depths and cleanup.
    pub fn admin(&self) -> Amqp {
        Amqp::new(self.namespace.clone(), AmqpConfig::new(amqp_url()))
    }

    /// Connects `agency` through `agency_link` with its on-disk store; a
    /// provider counts its handler calls in the tally and answers with documents.
    pub async fn connect(&mut self, agency: &str) {
        let url = self.agency_link.url();
        self.connect_via(agency, url).await
    }

    /// [`Rig::connect`] through another link (a [`Proxy`] of the test's own,
    /// which must outlive the connection): `url` is its [`Proxy::url`].
    pub async fn connect_via(&mut self, agency: &str, url: String) {
        assert!(
            self.agencies
                .get(agency)
                .is_none_or(|a| a.adapter.is_none()),
            "{agency} is already connected"
        );
        let mut config = AdapterConfig::new(
            self.identity(agency),
            self.trust.clone(),
            self.verifier.clone(),
            BROKER_ID,
        );
        config.data_dir = Some(self.dir.path().join("agencies").join(agency));
        let transport = Amqp::new(
            self.namespace.clone(),
            AmqpConfig {
                connection_name: format!("mev-fault {agency}"),
                ..AmqpConfig::new(url)
            },
        );
        let tally = self.tally.clone();
        let register = self.register.clone();
        let handler = move |req: IncomingRequest| {
            *lock(&tally.handled)
                .entry(req.header.message_id.clone())
                .or_default() += 1;
            std::future::ready(crate::reply_of_kind("documents", &register, &req))
        };
        let adapter = crate::within(
            "an adapter to connect",
            Adapter::connect(transport, config, Some(handler)),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting {agency}: {e}"));
        let mut events = adapter.events().expect("events");
        let tally = self.tally.clone();
        let drain = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let AdapterEvent::Reply(r) = e {
                    *lock(&tally.stray_replies)
                        .entry(r.header.in_reply_to.clone())
                        .or_default() += 1;
                }
            }
        });
        self.agencies.insert(
            agency.to_string(),
            RigAgency {
                adapter: Some(adapter),
                drain: Some(drain),
            },
        );
    }

    /// Shuts `agency`'s adapter down (what its outbox holds stays on disk).
    pub async fn disconnect(&mut self, agency: &str) {
        if let Some(a) = self.agencies.get_mut(agency) {
            if let Some(adapter) = a.adapter.take() {
                let _ = tokio::time::timeout(WAIT, adapter.shutdown()).await;
            }
            if let Some(d) = a.drain.take() {
                d.abort();
            }
        }
    }

    /// The adapter of a connected agency.
    pub fn adapter(&self, agency: &str) -> &Adapter<Amqp> {
        self.agencies
            .get(agency)
            .and_then(|a| a.adapter.as_ref())
            .unwrap_or_else(|| panic!("{agency} is not connected"))
    }

    /// Sends `n` requests from the cast's consumer to its provider, keeping
    /// at most the rig's window unanswered; each reply is counted when it
    /// arrives. Returns once all are in the consumer's outbox.
    pub async fn send(&self, n: usize) {
        let adapter = self.adapter(&self.cast.consumer);
        for _ in 0..n {
            let permit = self
                .window
                .clone()
                .acquire_owned()
                .await
                .expect("window open");
            let i = self.seq.fetch_add(1, Ordering::Relaxed);
            let req = mev_cli::demo::sample_request(
                &self.register,
                &self.cast.service,
                i,
                format!("Applicant {i} documents"),
            );
            let handle = crate::within("a request to enter the outbox", adapter.send_request(req))
                .await
                .expect("send_request");
            let id = handle.message_id.clone();
            lock(&self.tally.sent).push(id.clone());
            let tally = self.tally.clone();
            tokio::spawn(async move {
                match handle.reply().await {
                    Ok(_) => *lock(&tally.answered).entry(id).or_default() += 1,
                    Err(e) => {
                        eprintln!("request {id}: {e}");
                        lock(&tally.failed).push(id);
                    }
                }
                drop(permit);
            });
        }
    }

    /// Prints progress every 5 s until `n` requests are answered (or 15
    /// minutes pass). If nothing is answered for 90 s, prints the queues'
    /// depths and consumers and panics, so a stall fails the test instead of
    /// hanging it.
    pub async fn progress(&self, title: &str, n: usize) {
        let start = Instant::now();
        let mut last = (0, Instant::now());
        while self.answered() < n && start.elapsed() < Duration::from_secs(900) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let answered = self.answered();
            let consumer_outbox = self
                .agencies
                .get(&self.cast.consumer)
                .and_then(|a| a.adapter.as_ref())
                .map(|a| a.outbox_depth());
            println!(
                "[{title}] {:>4.0} s: sent {}, answered {answered}, handled {}, consumer outbox {:?}, broker outbox {:?}",
                start.elapsed().as_secs_f64(),
                self.sent(),
                lock(&self.tally.handled).len(),
                consumer_outbox,
                self.broker_outbox_depth(),
            );
            if answered != last.0 {
                last = (answered, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(90) && answered < n {
                println!("[{title}] stalled: {}", self.queues().await);
                panic!("[{title}] no reply for 90 s at {answered}/{n} answered");
            }
        }
    }

    /// Messages and consumers of the ingress and of the cast's inboxes.
    pub async fn queues(&self) -> String {
        let admin = self.admin();
        let names = admin.names().clone();
        let mut out = Vec::new();
        for q in [
            names.ingress_queue(),
            names.inbox_queue(&self.cast.consumer),
            names.inbox_queue(&self.cast.provider),
        ] {
            let d = tokio::time::timeout(WAIT, admin.queue_depth(&q)).await;
            out.push(format!("{q}: {d:?}"));
        }
        out.join("; ")
    }

    /// How many requests sent so far have their reply.
    pub fn answered(&self) -> usize {
        lock(&self.tally.answered).len()
    }

    /// How many requests were sent.
    pub fn sent(&self) -> usize {
        lock(&self.tally.sent).len()
    }

    /// Waits until at least `at` requests are answered, for at most `limit`;
    /// past it, panics naming `what` the wait was for and the progress so far.
    pub async fn until_answered(&self, at: usize, what: &str, limit: Duration) {
        let start = Instant::now();
        while self.answered() < at {
            if start.elapsed() > limit {
                let queues = self.queues().await;
                let handled = lock(&self.tally.handled).len();
                let failed = lock(&self.tally.failed).len();
                panic!(
                    "gave up after {limit:?} waiting for {at} answered requests ({what}): \
                     sent {}, answered {}, handled {handled}, failed {failed}, broker outbox \
                     {:?}; {queues}",
                    self.sent(),
                    self.answered(),
                    self.broker_outbox_depth(),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every request sent has its reply (or fails), printing
    /// progress, for at most `limit`; then sends the last word (see
    /// [`Rig::last_word`]) and counts.
    pub async fn finish(&self, title: &str, limit: Duration) -> Report {
        let start = Instant::now();
        let mut last_print = Instant::now();
        let complete = loop {
            let (sent, answered) = (self.sent(), self.answered());
            let failed = lock(&self.tally.failed).len();
            if answered + failed >= sent {
                break true;
            }
            if start.elapsed() > limit {
                println!("[{title}] gave up after {limit:?}: {answered}/{sent} answered");
                break false;
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                // On standard error, which the test harness does not capture:
                // a run that stalls shows where it stands in CI's log.
                eprintln!(
                    "[{title}] waiting: {answered}/{sent} answered, broker outbox {:?}",
                    self.broker_outbox_depth()
                );
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if complete {
            self.last_word(title).await;
        }
        let report = self.report();
        report.print(title);
        report
    }

    /// Sends one more request, after every other was answered, and waits
    /// for its reply — with nobody waiting on its handle, so that it comes
    /// the way a copy of a reply would, as an event. A copy of an earlier
    /// message (a redelivery, a publish again after a lost confirm) is in
    /// the same queues and outboxes ahead of it, which deliver in order, so
    /// once the last word is in, any copy is in the tally: copies are
    /// counted by what arrives, not by how long one waited for them. The
    /// last word itself is not counted.
    pub async fn last_word(&self, title: &str) {
        let adapter = self.adapter(&self.cast.consumer);
        let i = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = mev_cli::demo::sample_request(
            &self.register,
            &self.cast.service,
            i,
            format!("Applicant {i} documents"),
        );
        let handle = crate::within(
            "the last word to enter the outbox",
            adapter.send_request(req),
        )
        .await
        .expect("send_request");
        let id = handle.message_id.clone();
        lock(&self.tally.last_words).push(id.clone());
        drop(handle); // its reply comes as an event, counted among stray replies
        crate::within(
            &format!("[{title}] the reply to the last word, sent once every request was answered"),
            async {
                while !lock(&self.tally.stray_replies).contains_key(&id) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        )
        .await;
    }

    /// The counts now.
    pub fn report(&self) -> Report {
        let sent = lock(&self.tally.sent).clone();
        let answered = lock(&self.tally.answered);
        let handled = lock(&self.tally.handled);
        let stray = lock(&self.tally.stray_replies);
        let failed = lock(&self.tally.failed).len();
        let last_words = lock(&self.tally.last_words).clone();
        let count = |m: &HashMap<String, u32>, pred: fn(u32) -> bool| {
            sent.iter()
                .filter(|id| pred(m.get(*id).copied().unwrap_or(0)))
                .count()
        };
        Report {
            requests: sent.len(),
            answered_once: count(&answered, |c| c == 1),
            answered_more: count(&answered, |c| c > 1),
            unanswered: count(&answered, |c| c == 0),
            handled_once: count(&handled, |c| c == 1),
            handled_more: count(&handled, |c| c > 1),
            not_handled: count(&handled, |c| c == 0),
            stray_replies: stray
                .iter()
                .filter(|(id, _)| !last_words.contains(id))
                .map(|(_, c)| *c as usize)
                .sum(),
            failed,
        }
    }

    /// The rig's data directory (stores, PKI, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops everything and deletes the namespace's queues and exchanges.
    pub async fn cleanup(mut self) {
        let ids: Vec<String> = self.agencies.keys().cloned().collect();
        for id in ids {
            self.disconnect(&id).await;
        }
        self.stop_broker().await;
        let admin = self.admin();
        match tokio::time::timeout(WAIT, admin.delete_topology(&self.all_agency_ids)).await {
            Ok(Ok(())) => self.cleaned = true,
            other => eprintln!(
                "cleanup of {} failed ({other:?}); Drop will retry",
                self.namespace
            ),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(BrokerSide::Process(child)) = lock(&self.broker).as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.cleaned {
            crate::delete_namespace_blocking(&self.namespace, &self.all_agency_ids);
        }
    }
}
