//! The operators' HTTP endpoint (axum): `/metrics` in the OpenMetrics text
//! format ([`prometheus`]), `/api/status` as JSON, `/healthz`, `/readyz`,
//! and a dashboard at `/` (plain HTML and JavaScript embedded in the binary,
//! loading nothing from elsewhere).
//!
//! Queue depths come from RabbitMQ itself: a task polls the ingress and every
//! registered agency's inbox ([`Topology::queue_depth`], a passive declare)
//! every `[http] queue_poll_secs` and keeps the result in a [`QueueWatch`]
//! that the handlers read; a request never waits on RabbitMQ. Counters come from
//! [`crate::metrics::Counters`]; store sizes from a few O(1) reads.
//!
//! Start it with [`crate::server::BrokerHandle::serve_http`] (what
//! `mev broker` does when `[http] listen` is set), or with [`serve`] and
//! [`poll_queues`] directly.

pub mod prometheus;

use crate::context::Context;
use crate::metrics::{HistogramSnapshot, RecentRejection, SlaCounts, SlaRow};
use crate::store::prelude::*;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use mev_transport::{QueueDepth, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The dashboard page, served at `/`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The latest queue depths read from RabbitMQ.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    /// The broker's ingress.
    pub ingress: Option<QueueDepth>,
    /// Each agency's inbox, by agency id.
    pub inboxes: BTreeMap<String, QueueDepth>,
    /// When a poll last read every queue.
    pub last_ok: Option<(Instant, DateTime<Utc>)>,
    /// Why the last poll failed; `None` after a poll that read every queue.
    pub last_error: Option<String>,
    /// Polls done, and how many of them failed.
    pub polls: u64,
    pub failures: u64,
}

/// Queue depths shared between the poller and the handlers.
#[derive(Debug)]
pub struct QueueWatch {
    queues: RwLock<Queues>,
    every: Duration,
}

impl QueueWatch {
    /// A watch polled every `every`.
    pub fn new(every: Duration) -> Arc<Self> {
        Arc::new(QueueWatch {
            queues: RwLock::new(Queues::default()),
            every,
        })
    }

    /// The poll interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// How old the last good poll may be for the broker to count as connected:
    /// three intervals, and at least 10 s.
    pub fn stale_after(&self) -> Duration {
        (self.every * 3).max(Duration::from_secs(10))
    }

    /// A copy of the latest depths.
    pub fn snapshot(&self) -> Queues {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `Ok` when the last poll read every queue, recently; otherwise why not.
    pub fn connected(&self) -> Result<(), String> {
        let q = self.snapshot();
        if let Some(e) = q.last_error {
            return Err(format!("the last RabbitMQ queue poll failed: {e}"));
        }
        match q.last_ok {
            None => Err("RabbitMQ queues not polled yet".into()),
            Some((at, _)) if at.elapsed() > self.stale_after() => Err(format!(
                "the last good RabbitMQ queue poll was {:.0} s ago",
                at.elapsed().as_secs_f64()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Reads the ingress and every inbox of `agencies` once. Values read
    /// before a failure are kept, so the page shows the last known depths.
    pub async fn poll_once<T: Topology>(&self, transport: &T, agencies: &[String]) {
        let names = transport.names();
        let timeout = self.every.max(Duration::from_secs(2));
        let work = async {
            let ingress = transport
                .queue_depth(&names.ingress_queue())
                .await
                .map_err(|e| format!("{}: {e}", names.ingress_queue()))?;
            let mut inboxes = BTreeMap::new();
            let mut failed = None;
            for a in agencies {
                let q = names.inbox_queue(a);
                match transport.queue_depth(&q).await {
                    Ok(d) => {
                        inboxes.insert(a.clone(), d);
                    }
                    Err(e) => {
                        failed.get_or_insert_with(|| format!("{q}: {e}"));
                    }
                }
            }
            Ok::<_, String>((ingress, inboxes, failed))
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from RabbitMQ within {timeout:?}")),
        };
        let mut q = self.queues.write().unwrap_or_else(|p| p.into_inner());
        q.polls += 1;
        match result {
            Ok((ingress, inboxes, failed)) => {
                q.ingress = Some(ingress);
                q.inboxes.extend(inboxes);
                if failed.is_none() {
                    q.last_ok = Some((Instant::now(), Utc::now()));
                } else {
                    q.failures += 1;
                }
                q.last_error = failed;
            }
            Err(e) => {
                q.failures += 1;
                q.last_error = Some(e);
            }
        }
    }
}

/// Polls queue depths every `watch.every()` until `shutdown` flips to true.
pub async fn poll_queues<T: Topology>(
    watch: Arc<QueueWatch>,
    transport: T,
    agencies: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(watch.every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = watch.poll_once(&transport, &agencies) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(e) = watch.snapshot().last_error {
            tracing::warn!(error = %e, "queue depth poll failed");
        }
    }
}

/// What the handlers read.
pub struct HttpState {
    pub ctx: Arc<Context>,
    pub queues: Arc<QueueWatch>,
    /// The RabbitMQ namespace.
    pub namespace: String,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
}

/// `/api/status`: the broker at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub broker_id: String,
    pub namespace: String,
    pub version: String,
    /// When the report was made, and when the broker started (UTC, RFC 3339).
    pub now: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub rabbitmq: RabbitStatus,
    pub store: StoreStatus,
    /// The store's redo log since the broker started.
    #[serde(default)]
    pub store_log: StoreLog,
    /// The ingress queue (`None` until polled).
    pub ingress: Option<QueueRow>,
    /// Messages in the broker's outbox, not yet confirmed by RabbitMQ.
    pub outbox_depth: u64,
    /// Requests waiting for their reply (exact, from the store).
    pub open_requests: u64,
    /// Deadline timers armed (at-risk warnings and breaches to come).
    pub timers_armed: u64,
    /// Message ids in the dedup index.
    pub dedup_ids: u64,
    /// Every registered agency, by id.
    pub agencies: Vec<AgencyRow>,
    pub totals: Totals,
    /// Deadline outcomes by agency and service.
    pub sla: Vec<SlaRow>,
    /// Ingress delivery to durable commit, per message.
    pub routing_time: TimeSummary,
    /// A request's acceptance to its reply's.
    pub reply_time: TimeSummary,
    /// The latest rejections, newest first.
    pub recent_rejections: Vec<RecentRejection>,
}

/// The store's redo log ([`mev_store::wal`]) since the broker started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreLog {
    /// Records replayed at start (after a crash; 0 after a clean stop).
    pub replayed_at_start: u64,
    /// Records since the last checkpoint.
    pub pending: u32,
    /// Checkpoints made (redb's own durable commits, which empty the log).
    pub checkpoints: u64,
    /// Their time in all and the longest (ms): each pauses the store's writes.
    pub checkpoint_ms_total: f64,
    pub checkpoint_ms_max: f64,
}

impl StoreLog {
    fn of(s: mev_store::wal::Stats) -> Self {
        StoreLog {
            replayed_at_start: s.replayed,
            pending: s.pending,
            checkpoints: s.checkpoints,
            checkpoint_ms_total: (s.checkpoint_secs * 1e4).round() / 10.0,
            checkpoint_ms_max: (s.checkpoint_max_secs * 1e4).round() / 10.0,
        }
    }
}

/// RabbitMQ as the queue poll sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RabbitStatus {
    /// The last poll read every queue, recently.
    pub connected: bool,
    /// When a poll last read every queue.
    pub last_poll_at: Option<String>,
    pub last_poll_age_secs: Option<f64>,
    pub poll_every_secs: f64,
    /// Why the broker does not count as connected.
    pub error: Option<String>,
}

/// The store's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub open: bool,
    pub error: Option<String>,
}

/// A queue's depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    pub messages: u32,
    pub consumers: u32,
}

/// One agency's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgencyRow {
    pub id: String,
    pub name: String,
    /// Messages ready in its inbox (`None` until polled).
    pub inbox_depth: Option<u32>,
    /// Consumers of its inbox (its adapters).
    pub consumers: Option<u32>,
    /// Requests for it accepted since the broker started, less its replies
    /// (requests left open by an earlier run are only in the total).
    pub open_requests: u64,
    /// Its deadline outcomes, summed over services.
    #[serde(flatten)]
    pub sla: SlaCounts,
}

/// Totals since start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Accepted messages by kind (request, reply, status).
    pub accepted: BTreeMap<String, u64>,
    pub accepted_total: u64,
    pub rejected_total: u64,
    /// Rejections by code.
    pub rejected: Vec<CodeCount>,
    pub duplicates: u64,
    pub garbage: u64,
    pub receipts_delivered: u64,
    pub forwards_delivered: u64,
    pub notices_delivered: u64,
    pub publish_retries: u64,
    pub batches: u64,
    /// Messages in all inboxes.
    pub inbox_depth: u64,
    /// Deadline outcomes summed over every agency and service.
    pub sla: SlaCounts,
}

/// Rejections with one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCount {
    pub code: u32,
    pub name: String,
    pub count: u64,
}

/// A histogram summed up (times in milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSummary {
    pub count: u64,
    pub mean_ms: Option<f64>,
    /// Estimated from the histogram's buckets.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl TimeSummary {
    fn of(h: &HistogramSnapshot) -> Self {
        let ms = |v: Option<f64>| v.map(|s| (s * 1e6).round() / 1e3);
        TimeSummary {
            count: h.count,
            mean_ms: ms(h.mean()),
            p50_ms: ms(h.quantile(0.5)),
            p95_ms: ms(h.quantile(0.95)),
            p99_ms: ms(h.quantile(0.99)),
        }
    }
}

/// Everything a scrape or a status request reports, read once.
#[derive(Debug, Clone)]
pub struct Observed {
    pub report: StatusReport,
    pub routing: HistogramSnapshot,
    pub reply: HistogramSnapshot,
    /// Requests open per agency since start (may be negative, see [`AgencyRow::open_requests`]).
    pub open_by_agency: BTreeMap<String, i64>,
    pub events: u64,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads the counters, the store and the latest queue depths.
pub async fn observe(state: &HttpState) -> Observed {
    let ctx = &state.ctx;
    let store = ctx.store.clone();
    let sizes = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let (dedup, open, events) = store.counts().map_err(|e| e.to_string())?;
        let outbox = store.outbox_depth().map_err(|e| e.to_string())?;
        let timers = store.timers_len().map_err(|e| e.to_string())?;
        Ok((dedup, open, events, outbox, timers))
    })
    .await
    .unwrap_or_else(|e| Err(format!("store task failed: {e}")));
    let (store_status, (dedup_ids, open_requests, events, outbox_depth, timers_armed)) = match sizes
    {
        Ok(s) => (
            StoreStatus {
                open: true,
                error: None,
            },
            s,
        ),
        Err(e) => (
            StoreStatus {
                open: false,
                error: Some(e),
            },
            (0, 0, 0, 0, 0),
        ),
    };

    let snap = ctx.counters.snapshot();
    let open_by_agency = ctx.counters.open_by_agency();
    let routing = ctx.counters.routing.snapshot();
    let reply = ctx.counters.reply.snapshot();
    let queues = state.queues.snapshot();
    let connected = state.queues.connected();
    let sla_by_agency = snap.sla_by_agency();

    let agencies: Vec<AgencyRow> = ctx
        .register
        .agencies()
        .map(|a| {
            let q = queues.inboxes.get(&a.id);
            AgencyRow {
                id: a.id.clone(),
                name: a.name.clone(),
                inbox_depth: q.map(|d| d.messages),
                consumers: q.map(|d| d.consumers),
                open_requests: open_by_agency.get(&a.id).copied().unwrap_or(0).max(0) as u64,
                sla: sla_by_agency.get(&a.id).copied().unwrap_or_default(),
            }
        })
        .collect();

    let rejected: Vec<CodeCount> = snap
        .rejected
        .iter()
        .map(|(code, count)| CodeCount {
            code: *code,
            name: mev_proto::ErrorCode::from_code(*code)
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| "unknown".into()),
            count: *count,
        })
        .collect();
    let totals = Totals {
        accepted_total: snap.accepted.values().sum(),
        accepted: snap.accepted.clone(),
        rejected_total: snap.rejected.values().sum(),
        rejected,
        duplicates: snap.duplicates,
        garbage: snap.garbage,
        receipts_delivered: snap.receipts,
        forwards_delivered: snap.forwarded,
        notices_delivered: snap.notices,
        publish_retries: snap.publish_failures,
        batches: snap.batches,
        inbox_depth: agencies
            .iter()
            .map(|a| u64::from(a.inbox_depth.unwrap_or(0)))
            .sum(),
        sla: snap.sla_total(),
    };
    let now = Utc::now();
    let report = StatusReport {
        broker_id: ctx.identity.agency.clone(),
        namespace: state.namespace.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        now: rfc3339(now),
        started_at: rfc3339(state.started_at),
        uptime_secs: state.started.elapsed().as_secs(),
        rabbitmq: RabbitStatus {
            connected: connected.is_ok(),
            last_poll_at: queues.last_ok.map(|(_, at)| rfc3339(at)),
            last_poll_age_secs: queues
                .last_ok
                .map(|(at, _)| (at.elapsed().as_secs_f64() * 10.0).round() / 10.0),
            poll_every_secs: state.queues.every().as_secs_f64(),
            error: connected.err(),
        },
        store: store_status,
        store_log: StoreLog::of(ctx.store.log_stats()),
        ingress: queues.ingress.map(|d| QueueRow {
            messages: d.messages,
            consumers: d.consumers,
        }),
        outbox_depth,
        open_requests,
        timers_armed,
        dedup_ids,
        agencies,
        totals,
        sla: snap.sla.clone(),
        routing_time: TimeSummary::of(&routing),
        reply_time: TimeSummary::of(&reply),
        recent_rejections: ctx.counters.recent_rejections(),
    };
    Observed {
        report,
        routing,
        reply,
        open_by_agency,
        events,
    }
}

/// The routes, over `state`.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

const NO_STORE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-store");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            NO_STORE,
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:",
            ),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let observed = observe(&state).await;
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE), NO_STORE],
        prometheus::render(&observed),
    )
        .into_response()
}

async fn status(State(state): State<Arc<HttpState>>) -> Response {
    let observed = observe(&state).await;
    ([NO_STORE], axum::Json(observed.report)).into_response()
}

async fn healthz() -> Response {
    ([NO_STORE], "ok\n").into_response()
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let mut problems = Vec::new();
    if let Some(reason) = state.ctx.store.failure() {
        // Fail-stop (UZ annex 2 §27: the operator answers for uninterrupted
        // operation, so the reason must reach them): the broker is stopping.
        problems.push(format!(
            "the store failed ({reason}); the broker stops: free the disk or replace it, then restart (the redo log replays)"
        ));
    }
    if let Err(e) = state.queues.connected() {
        problems.push(e);
    }
    let store = state.ctx.store.clone();
    match tokio::task::spawn_blocking(move || store.outbox_depth()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("the store cannot be read: {e}")),
        Err(e) => problems.push(format!("the store check failed: {e}")),
    }
    if problems.is_empty() {
        ([NO_STORE], "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [NO_STORE],
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try /, /metrics, /api/status, /healthz or /readyz\n",
    )
        .into_response()
}

/// Serves `state` on `listen` until `shutdown` flips to true. Returns the
/// bound address (useful with port 0) and the server task. Connections still
/// open at shutdown are given up to 2 s.
pub async fn serve(
    state: Arc<HttpState>,
    listen: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let stop = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(stop);
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mev_transport::embedded::Embedded;

    #[tokio::test]
    async fn readiness_follows_the_queue_poll() {
        let t = Embedded::new("readiness");
        let watch = QueueWatch::new(Duration::from_millis(100));
        let why = watch.connected().unwrap_err();
        assert!(why.contains("not polled yet"), "{why}");

        // The ingress exists, an inbox does not: not ready, and why.
        t.declare_ingress().await.unwrap();
        let agencies = vec!["UZ-A".to_string(), "UZ-B".to_string()];
        t.declare_inbox("UZ-A").await.unwrap();
        watch.poll_once(&t, &agencies).await;
        let why = watch.connected().unwrap_err();
        assert!(why.contains("readiness.inbox.UZ-B"), "{why}");
        let q = watch.snapshot();
        assert_eq!(q.inboxes.len(), 1, "what was read is kept");
        assert_eq!((q.polls, q.failures), (1, 1));

        t.declare_inbox("UZ-B").await.unwrap();
        watch.poll_once(&t, &agencies).await;
        watch.connected().unwrap();
        let q = watch.snapshot();
        assert_eq!(q.inboxes.len(), 2);
        assert_eq!(q.ingress, Some(QueueDepth::default()));
        assert!(watch.stale_after() >= Duration::from_secs(10));
    }
}
