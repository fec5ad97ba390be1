//! Deadline effects with an injected clock (issue 5): at-risk warnings,
//! breaches with signed notices to both agencies, late replies still
//! delivered and counted, the 2-second real-time deadline, late dispatch,
//! and a deadline that passed while the broker was down.
//!
//! These are tests of the deadline logic, so they run over the embedded
//! transport with a manual clock (a working day cannot be waited for); the
//! exchange over RabbitMQ is tested in `tests/`.

use chrono::{DateTime, TimeDelta, Utc};
use mev_adapter::transport::embedded::Embedded;
use mev_adapter::{
    Adapter, AdapterConfig, AdapterEvent, IncomingRequest, NoHandler, ReplyBody, RequestHandle,
};
use mev_broker::clock::{Clock, ManualClock};
use mev_broker::metrics::{Counters, SlaCounts};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::{DeadlinePolicy, Register, Service};
use mev_broker::server::{Broker, BrokerHandle};
use mev_broker::store::prelude::*;
use mev_broker::store::{EventKind, Store};
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{Identity, RingVerifier};
use mev_proto::pb::NoticeKind;
use mev_proto::trust::TrustStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const BROKER_ID: &str = "MEV-EXCHANGE";
const WAIT: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn register() -> Arc<Register> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    Arc::new(Register::load(&dir).expect("the shipped register"))
}

/// A service with `pred` on its policy, and one of its consumers.
fn pick(register: &Register, pred: impl Fn(&DeadlinePolicy) -> bool) -> (Service, String) {
    let s = register
        .services()
        .find(|s| {
            s.is_active()
                && !s.consumers.is_empty()
                && register.policy(&s.deadline).is_some_and(&pred)
        })
        .expect("a service with such a policy")
        .clone();
    let consumer = s.consumers[0].agency.clone();
    (s, consumer)
}

/// One exchange over the embedded transport, with a manual clock. The
/// provider answers a request only once `release` is set.
struct Rig {
    register: Arc<Register>,
    pki: DevPki,
    trust: Arc<TrustStore>,
    broker_identity: Identity,
    transport: Embedded,
    hand: ManualClock,
    clock: Clock,
    broker: Option<(BrokerHandle, Arc<Context>)>,
    store: Option<Arc<Store>>,
    counters: Arc<Counters>,
    consumer: Adapter<Embedded>,
    provider: Adapter<Embedded>,
    consumer_events: mpsc::Receiver<AdapterEvent>,
    provider_events: mpsc::Receiver<AdapterEvent>,
    release: watch::Sender<bool>,
    service: Service,
}

impl Rig {
    async fn new(service: Service, consumer: &str, store: Store) -> Rig {
        let register = register();
        let pki = DevPki::new().unwrap();
        let trust = Arc::new(pki.trust_store().unwrap());
        let transport = Embedded::new(format!("deadlines-{}", uuid::Uuid::new_v4().simple()));
        let (clock, hand) = Clock::manual(Utc::now());
        let broker_identity = pki.issue(BROKER_ID, KeyAlg::Ed25519).unwrap();
        let counters = Arc::new(Counters::default());
        let mut rig_broker = None;
        let store = Arc::new(store);
        let handle = start_broker(
            &register,
            &trust,
            &broker_identity,
            &transport,
            &clock,
            store.clone(),
            counters.clone(),
        )
        .await;
        rig_broker.replace(handle);
        let verifier = Arc::new(RingVerifier::new());
        let (release, released) = watch::channel(false);
        let handler = {
            let register = register.clone();
            move |req: IncomingRequest| {
                let mut released = released.clone();
                let register = register.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    let schema = register
                        .service(&req.header.service)
                        .map(|s| s.reply_schema.clone())
                        .unwrap_or_default();
                    ReplyBody::Documents {
                        provided: req.header.documents.clone(),
                        payload: register.sample_payload(&schema).unwrap_or_default(),
                        payload_schema: schema,
                    }
                }
            }
        };
        let provider = Adapter::connect(
            transport.clone(),
            AdapterConfig::new(
                pki.issue(&service.provider, KeyAlg::Ed25519).unwrap(),
                trust.clone(),
                verifier.clone(),
                BROKER_ID,
            ),
            Some(handler),
        )
        .await
        .unwrap();
        let consumer = Adapter::connect(
            transport.clone(),
            AdapterConfig::new(
                pki.issue(consumer, KeyAlg::Ed25519).unwrap(),
                trust.clone(),
                verifier,
                BROKER_ID,
            ),
            None::<NoHandler>,
        )
        .await
        .unwrap();
        Rig {
            consumer_events: consumer.events().unwrap(),
            provider_events: provider.events().unwrap(),
            register,
            pki,
            trust,
            broker_identity,
            transport,
            hand,
            clock,
            broker: rig_broker,
            store: Some(store),
            counters,
            consumer,
            provider,
            release,
            service,
        }
    }

    fn store(&self) -> &Arc<Store> {
        self.store.as_ref().expect("store open")
    }

    async fn send(&self, received: Option<DateTime<Utc>>) -> RequestHandle {
        let mut req = mev_cli::demo::sample_request(
            &self.register,
            &self.service,
            1,
            "Test Applicant".into(),
        );
        req.application_received_at = received;
        let mut h = self.consumer.send_request(req).await.unwrap();
        let r = within("the receipt", h.receipt()).await.unwrap();
        assert!(r.accepted, "{r:?}");
        h
    }

    fn deadline_of(&self, id: &str) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let open = self
            .store()
            .open_request(id)
            .unwrap()
            .expect("open request");
        let ms = |v: i64| DateTime::from_timestamp_millis(v).unwrap();
        (
            ms(open.deadline_ms.expect("a deadline")),
            open.at_risk_ms.map(ms),
        )
    }

    /// Moves the clock to `at` and lets the timers look at it.
    fn move_clock_to(&self, at: DateTime<Utc>) {
        self.hand.set(at);
        self.store().poke_timers();
    }

    async fn stop_broker(&mut self) {
        if let Some((b, _)) = self.broker.take() {
            b.stop().await;
        }
    }

    async fn restart_broker(&mut self, store: Store) {
        let store = Arc::new(store);
        self.store = Some(store.clone());
        let b = start_broker(
            &self.register,
            &self.trust,
            &self.broker_identity,
            &self.transport,
            &self.clock,
            store,
            self.counters.clone(),
        )
        .await;
        self.broker = Some(b);
    }

    fn sla(&self) -> SlaCounts {
        self.counters.snapshot().sla_total()
    }

    /// Fires what is due now, on this test's task, as the broker's timer task
    /// does; returns how many timers fired. What it finds not due, the timer
    /// task cannot fire either: "nothing fired" is read from the store, not
    /// assumed after a sleep.
    async fn fire_due(&self) -> usize {
        let (_, ctx) = self.broker.as_ref().expect("the broker runs");
        mev_broker::deadline::timers::fire_due(ctx).await
    }
}

async fn start_broker(
    register: &Arc<Register>,
    trust: &Arc<TrustStore>,
    identity: &Identity,
    transport: &Embedded,
    clock: &Clock,
    store: Arc<Store>,
    counters: Arc<Counters>,
) -> (BrokerHandle, Arc<Context>) {
    let ctx = Arc::new(Context {
        counters,
        clock: clock.clone(),
        ..Context::new(register.clone(), trust.clone(), identity.clone(), store)
    });
    let batching = Batching {
        batch_size: 32,
        batch_window: Duration::from_millis(2),
    };
    let handle = Broker::new(ctx.clone(), transport.clone(), batching, 64)
        .start()
        .await
        .expect("broker starts");
    (handle, ctx)
}

/// The next notice in `events`, skipping other events.
async fn next_notice(events: &mut mpsc::Receiver<AdapterEvent>) -> mev_proto::pb::Notice {
    within("a notice", async {
        loop {
            match events.recv().await {
                Some(AdapterEvent::Notice { notice, header }) => {
                    assert_eq!(header.sender, BROKER_ID, "notices come from the exchange");
                    return notice;
                }
                Some(_) => continue,
                None => panic!("events closed"),
            }
        }
    })
    .await
}

fn no_notice_pending(events: &mut mpsc::Receiver<AdapterEvent>) -> bool {
    loop {
        match events.try_recv() {
            Ok(AdapterEvent::Notice { .. }) => return false,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
}

async fn sla_when(rig: &Rig, what: &str, ready: impl Fn(&SlaCounts) -> bool) -> SlaCounts {
    within(what, async {
        loop {
            let s = rig.sla();
            if ready(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn next_working_day(p: &DeadlinePolicy) -> bool {
    matches!(p, DeadlinePolicy::NextWorkingDay)
}

#[tokio::test]
async fn at_risk_warning_then_breach_to_both_then_late_reply_delivered_and_counted() {
    let reg = register();
    let (service, consumer) = pick(&reg, next_working_day);
    let mut rig = Rig::new(service, &consumer, Store::in_memory().unwrap()).await;
    let h = rig.send(Some(Utc::now())).await;
    let (deadline, at_risk) = rig.deadline_of(&h.message_id);
    let at_risk = at_risk.expect("an at-risk time");
    assert!(at_risk < deadline && deadline > rig.clock.now());

    // Just before the at-risk point: nothing is due, and the at-risk timer
    // is still armed, first in line (so nothing fired it, and no notice can
    // be on its way).
    rig.move_clock_to(at_risk - TimeDelta::seconds(1));
    assert_eq!(rig.fire_due().await, 0, "nothing due a second before");
    assert_eq!(
        rig.store().next_timer().unwrap(),
        Some(at_risk.timestamp_millis()),
        "the at-risk timer is still armed"
    );
    assert!(no_notice_pending(&mut rig.provider_events));
    assert_eq!(rig.sla().at_risk, 0);

    // At risk: the provider is warned, the consumer is not.
    rig.move_clock_to(at_risk + TimeDelta::seconds(1));
    let n = next_notice(&mut rig.provider_events).await;
    assert_eq!(n.kind, NoticeKind::DeadlineAtRisk as i32);
    assert_eq!(n.request_id, h.message_id);
    assert!(n.text.contains(&h.message_id), "{}", n.text);
    sla_when(&rig, "the at-risk count", |s| s.at_risk == 1).await;
    assert!(no_notice_pending(&mut rig.consumer_events));

    // Breach: signed notices to both agencies, in the provider's local time.
    rig.move_clock_to(deadline + TimeDelta::seconds(1));
    for events in [&mut rig.provider_events, &mut rig.consumer_events] {
        let n = next_notice(events).await;
        assert_eq!(n.kind, NoticeKind::DeadlineBreached as i32);
        assert_eq!(n.request_id, h.message_id);
        assert!(n.text.contains("Asia/Tashkent"), "local time: {}", n.text);
    }
    let s = sla_when(&rig, "the breach count", |s| s.breached == 1).await;
    assert_eq!((s.on_time, s.late), (0, 0));
    assert!(
        rig.store()
            .open_request(&h.message_id)
            .unwrap()
            .unwrap()
            .breached
    );

    // The provider answers late: the reply is still delivered, and counted late.
    rig.move_clock_to(deadline + TimeDelta::hours(2));
    rig.release.send(true).unwrap();
    let reply = within("the late reply", h.reply()).await.unwrap();
    assert_eq!(reply.body.kind_name(), "documents");
    let s = sla_when(&rig, "the late count", |s| s.late == 1).await;
    assert_eq!(
        (s.on_time, s.late, s.breached, s.at_risk),
        (0, 1, 1, 1),
        "{s:?}"
    );
    let events = rig.store().events().unwrap();
    let late = events
        .iter()
        .find(|e| e.kind == EventKind::ReplyLate)
        .expect("a late-reply event");
    let late_by = late.late_by_ms.unwrap();
    assert!(
        (2 * 3600 * 1000 - 5_000..=2 * 3600 * 1000 + 5_000).contains(&late_by),
        "late by about two hours: {late_by} ms"
    );
    assert_eq!(rig.store().timers_len().unwrap(), 0, "nothing left armed");
    let by_service = rig.counters.snapshot().sla_by_service();
    assert_eq!(by_service[&rig.service.number].late, 1);
    let by_agency = rig.counters.snapshot().sla_by_agency();
    assert_eq!(by_agency[&rig.service.provider].breached, 1);
    rig.stop_broker().await;
}

#[tokio::test]
async fn reply_in_time_is_on_time_and_disarms_its_timers() {
    let reg = register();
    let (service, consumer) = pick(&reg, next_working_day);
    let mut rig = Rig::new(service, &consumer, Store::in_memory().unwrap()).await;
    rig.release.send(true).unwrap();
    let h = rig.send(Some(Utc::now())).await;
    within("the reply", h.reply()).await.unwrap();
    let s = sla_when(&rig, "the on-time count", |s| s.on_time == 1).await;
    assert_eq!((s.late, s.breached, s.at_risk), (0, 0, 0));
    assert_eq!(rig.store().timers_len().unwrap(), 0);
    // Long after: nothing fires for an answered request (none is armed,
    // and a pass over the timers at that time finds nothing due).
    rig.move_clock_to(rig.clock.now() + TimeDelta::days(10));
    assert_eq!(rig.fire_due().await, 0, "nothing due ten days on");
    assert_eq!(rig.store().timers_len().unwrap(), 0);
    assert!(no_notice_pending(&mut rig.consumer_events));
    assert!(no_notice_pending(&mut rig.provider_events));
    assert_eq!(rig.sla().breached, 0);
    rig.stop_broker().await;
}

#[tokio::test]
async fn realtime_request_that_misses_two_seconds_is_breached_and_counted() {
    let reg = register();
    let (service, consumer) = pick(&reg, |p| matches!(p, DeadlinePolicy::Realtime { .. }));
    let mut rig = Rig::new(service, &consumer, Store::in_memory().unwrap()).await;
    let before = Utc::now();
    let h = rig.send(None).await;
    let after = Utc::now();
    let (deadline, _) = rig.deadline_of(&h.message_id);
    let two = TimeDelta::seconds(2);
    assert!(
        before + two - TimeDelta::milliseconds(1) <= deadline && deadline <= after + two,
        "two seconds from sending: {deadline}, sent between {before} and {after}"
    );
    rig.move_clock_to(after + TimeDelta::seconds(3));
    let n = next_notice(&mut rig.consumer_events).await;
    assert_eq!(n.kind, NoticeKind::DeadlineBreached as i32);
    let s = sla_when(&rig, "the breach count", |s| s.breached == 1).await;
    assert_eq!(s.on_time, 0);
    rig.release.send(true).unwrap();
    within("the late reply", h.reply()).await.unwrap();
    sla_when(&rig, "the late count", |s| s.late == 1).await;
    rig.stop_broker().await;
}

#[tokio::test]
async fn late_dispatch_is_recorded_and_the_consumer_notified() {
    let reg = register();
    let (service, consumer) = pick(&reg, next_working_day);
    let mut rig = Rig::new(service, &consumer, Store::in_memory().unwrap()).await;
    // The application came in ten days ago: far more than one working day.
    let h = rig.send(Some(Utc::now() - TimeDelta::days(10))).await;
    let n = next_notice(&mut rig.consumer_events).await;
    assert_eq!(n.kind, NoticeKind::LateDispatch as i32);
    assert_eq!(n.request_id, h.message_id);
    within("the late-dispatch count", async {
        while rig
            .counters
            .snapshot()
            .sla_by_agency()
            .get(&consumer)
            .map(|c| c.late_dispatch)
            != Some(1)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(rig
        .store()
        .events()
        .unwrap()
        .iter()
        .any(|e| e.kind == EventKind::LateDispatch && e.message_id == h.message_id));
    rig.stop_broker().await;
}

#[tokio::test]
async fn deadline_that_passed_while_the_broker_was_down_fires_on_restart() {
    let reg = register();
    let (service, consumer) = pick(&reg, next_working_day);
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(service, &consumer, Store::open(dir.path()).unwrap()).await;
    let h = rig.send(Some(Utc::now())).await;
    let (deadline, _) = rig.deadline_of(&h.message_id);

    // Down for the whole deadline, and three hours past it.
    rig.stop_broker().await;
    rig.store = None; // the store file is closed with the broker
    rig.hand.set(deadline + TimeDelta::hours(3));
    rig.restart_broker(Store::open(dir.path()).unwrap()).await;

    for events in [&mut rig.provider_events, &mut rig.consumer_events] {
        // The at-risk warning (also overdue) goes to the provider first.
        let mut n = next_notice(events).await;
        if n.kind == NoticeKind::DeadlineAtRisk as i32 {
            n = next_notice(events).await;
        }
        assert_eq!(n.kind, NoticeKind::DeadlineBreached as i32);
        assert_eq!(n.request_id, h.message_id);
    }
    sla_when(&rig, "the breach count", |s| s.breached == 1).await;
    let breach = rig
        .store()
        .events()
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::DeadlineBreached)
        .expect("a breach event");
    let late_by = breach.late_by_ms.unwrap();
    assert!(
        late_by >= 3 * 3600 * 1000,
        "recorded with how late it fired: {late_by} ms"
    );
    assert!(breach.reason.contains("not running"), "{}", breach.reason);
    let _ = (&rig.pki, &rig.provider);
    rig.stop_broker().await;
}
