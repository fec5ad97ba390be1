//! The operators' endpoint over the real RabbitMQ: `/metrics` and
//! `/api/status` follow the traffic; a provider that stops consuming shows its
//! inbox growing; `/healthz` and `/readyz`; `mev status`'s table; and the
//! dashboard in headless Chromium (Debian's `chromium`) shows the numbers of
//! `/api/status`, with a screenshot left under the target directory.
//!
//! Each test runs its own exchange (namespace `mevtest-<uuid>`) and endpoint
//! on a free loopback port.

use mev_broker::http::prometheus::{self, Exposition};
use mev_broker::http::StatusReport;
use mev_cli::status::client;
use mev_proto::ErrorCode;
use mev_tests::{receipt, within, Cast, Exchange, WAIT};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Queue depths are polled this often in these tests.
const POLL: Duration = Duration::from_millis(250);

async fn get(addr: SocketAddr, path: &str) -> client::Response {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || client::get(&url, Duration::from_secs(10)))
        .await
        .expect("the GET task")
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

async fn status(addr: SocketAddr) -> StatusReport {
    let r = get(addr, "/api/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

async fn metrics(addr: SocketAddr) -> Exposition {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some(prometheus::CONTENT_TYPE));
    prometheus::parse(&r.body).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{}", r.body))
}

/// Polls `/api/status` until `ready` holds.
async fn status_when(
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    within(what, async {
        loop {
            let s = status(addr).await;
            if ready(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn agency<'a>(s: &'a StatusReport, id: &str) -> &'a mev_broker::http::AgencyRow {
    s.agencies
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("{id} is not in /api/status"))
}

async fn setup() -> (Exchange, Cast, SocketAddr) {
    let cast = Cast::choose(&mev_tests::load_register());
    let mut ex = Exchange::start(&cast.attached()).await;
    let addr = ex.serve_http(POLL).await;
    (ex, cast, addr)
}

/// A request from `consumer` the broker refuses (the outsider may not ask
/// for the service), counted once the negative receipt is back.
async fn send_refused(ex: &Exchange, cast: &Cast) -> String {
    let header = ex.request_header(&cast.outsider, &cast.service);
    let id = header.message_id.clone();
    let bytes = ex
        .adapter(&cast.outsider)
        .seal(header, ex.request_payload(&cast.service))
        .unwrap();
    ex.expect_refused(&cast.outsider, bytes, ErrorCode::SenderNotAllowed)
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_follow_the_traffic() {
    let (ex, cast, addr) = setup().await;

    let health = get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let before = status_when(addr, "the first queue poll", |s| s.rabbitmq.connected).await;
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(before.broker_id, mev_tests::BROKER_ID);
    assert_eq!(before.namespace, ex.namespace);
    assert!(before.store.open);
    assert_eq!(before.totals.accepted_total, 0);
    assert_eq!(
        before.agencies.len(),
        ex.register.agencies().count(),
        "a row per registered agency"
    );
    assert_eq!(agency(&before, &cast.provider).consumers, Some(1));
    assert_eq!(before.ingress.map(|i| i.consumers), Some(1));
    let m = metrics(addr).await;
    assert_eq!(m.value("mev_rabbitmq_connected", &[]), Some(1.0));
    assert_eq!(m.value("mev_routing_seconds_count", &[]), Some(0.0));

    const N: u64 = 6;
    for i in 0..N {
        let kind = if i % 2 == 0 { "documents" } else { "not_held" };
        ex.round_trip(&cast.consumer, &cast.service, kind).await;
    }
    let refused_id = send_refused(&ex, &cast).await;
    ex.publish_raw(b"not an envelope".to_vec()).await;

    let s = status_when(addr, "the traffic in /api/status", |s| {
        s.totals.accepted.get("reply").copied() == Some(N)
            && s.totals.garbage == 1
            && s.totals.forwards_delivered >= 2 * N
            && s.outbox_depth == 0
    })
    .await;
    println!(
        "/api/status after {N} round trips: accepted {:?}, rejected {:?}, routing {:?}, reply {:?}",
        s.totals.accepted, s.totals.rejected, s.routing_time, s.reply_time
    );
    assert_eq!(s.totals.accepted.get("request").copied(), Some(N));
    assert_eq!(s.totals.accepted_total, 2 * N);
    assert_eq!(s.totals.rejected_total, 2, "{:?}", s.totals.rejected);
    let code_of = |c: ErrorCode| {
        s.totals
            .rejected
            .iter()
            .find(|r| r.code == c.as_code())
            .map(|r| (r.name.as_str(), r.count))
    };
    assert_eq!(
        code_of(ErrorCode::SenderNotAllowed),
        Some(("sender_not_allowed", 1))
    );
    assert_eq!(code_of(ErrorCode::Malformed).map(|c| c.1), Some(1));
    assert!(s.totals.receipts_delivered > 2 * N);
    assert_eq!(s.open_requests, 0);
    assert_eq!(agency(&s, &cast.provider).open_requests, 0);
    assert_eq!(s.reply_time.count, N, "every reply's time is observed");
    assert!(
        s.routing_time.count >= 2 * N + 2,
        "every message's routing time is observed: {:?}",
        s.routing_time
    );
    // The latest rejections, newest first: the garbage, then the refusal.
    assert_eq!(s.recent_rejections.len(), 2, "{:?}", s.recent_rejections);
    assert_eq!(s.recent_rejections[0].code, ErrorCode::Malformed.as_code());
    let r = &s.recent_rejections[1];
    assert_eq!(
        (
            r.code,
            r.name.as_str(),
            r.sender.as_str(),
            r.message_id.as_str()
        ),
        (
            ErrorCode::SenderNotAllowed.as_code(),
            "sender_not_allowed",
            cast.outsider.as_str(),
            refused_id.as_str()
        )
    );
    assert!(!r.reason.is_empty());

    // The same numbers in /metrics.
    let m = metrics(addr).await;
    let n = N as f64;
    assert_eq!(
        m.value("mev_messages_accepted_total", &[("kind", "request")]),
        Some(n)
    );
    assert_eq!(
        m.value("mev_messages_accepted_total", &[("kind", "reply")]),
        Some(n)
    );
    assert_eq!(
        m.value(
            "mev_rejections_total",
            &[
                ("code", &ErrorCode::SenderNotAllowed.as_code().to_string()),
                ("name", "sender_not_allowed")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(m.value("mev_garbage_total", &[]), Some(1.0));
    assert!(m.value("mev_delivered_total", &[("purpose", "forward")]) >= Some(2.0 * n));
    assert_eq!(m.value("mev_outbox_messages", &[]), Some(0.0));
    assert_eq!(m.value("mev_open_requests", &[]), Some(0.0));
    assert_eq!(m.value("mev_reply_seconds_count", &[]), Some(n));
    assert!(m.value("mev_routing_seconds_count", &[]) >= Some(2.0 * n + 2.0));
    assert_eq!(
        m.value("mev_routing_seconds_bucket", &[("le", "+Inf")]),
        m.value("mev_routing_seconds_count", &[])
    );
    assert_eq!(
        m.value("mev_inbox_consumers", &[("agency", &cast.provider)]),
        Some(1.0)
    );
    let on_time: f64 = m
        .samples
        .iter()
        .filter(|x| {
            x.name == "mev_deadline_outcomes_total"
                && x.labels.get("agency") == Some(&cast.provider)
                && x.labels.get("outcome").map(String::as_str) == Some("on_time")
        })
        .map(|x| x.value)
        .sum();
    assert_eq!(
        on_time as u64,
        agency(&s, &cast.provider).sla.on_time,
        "deadline counters agree"
    );

    // `mev status`'s table, from the same endpoint.
    let url = format!("http://{addr}");
    let (report, _) = tokio::task::spawn_blocking(move || mev_cli::status::fetch(&url))
        .await
        .unwrap()
        .expect("mev status fetches");
    let table = mev_cli::status::render_table(&report);
    println!("{table}");
    assert!(table.contains("AGENCY") && table.contains("BREACHED") && table.contains("TOTAL"));
    assert!(table.lines().any(|l| l.starts_with(&cast.provider)));
    assert!(table.contains("sender_not_allowed"));
    assert!(table.contains("store log: "), "the redo log's line");

    let missing = get(addr, "/nope").await;
    assert_eq!(missing.status, 404);
    ex.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stops_consuming_shows_its_inbox_growing() {
    let (mut ex, cast, addr) = setup().await;
    ex.round_trip(&cast.consumer, &cast.service, "documents")
        .await;
    status_when(addr, "the provider's consumer", |s| {
        agency(s, &cast.provider).consumers == Some(1)
            && agency(s, &cast.provider).inbox_depth == Some(0)
    })
    .await;

    // Its adapter stops. (The AMQP consumer is cancelled once the next
    // delivery finds the adapter gone; that message goes back to the queue.)
    ex.stop_agency(&cast.provider).await;

    const K: u32 = 7;
    let mut handles = Vec::new();
    for _ in 0..K {
        let mut h = within(
            "sending a request",
            ex.adapter(&cast.consumer)
                .send_request(ex.request(&cast.service, "documents")),
        )
        .await
        .expect("request sent");
        assert!(receipt(&mut h).await.accepted);
        handles.push(h);
    }
    let s = status_when(addr, "the provider's inbox to grow", |s| {
        agency(s, &cast.provider).inbox_depth == Some(K)
            && agency(s, &cast.provider).consumers == Some(0)
    })
    .await;
    let row = agency(&s, &cast.provider);
    println!(
        "{}: inbox {:?}, consumers {:?}, open {}",
        row.id, row.inbox_depth, row.consumers, row.open_requests
    );
    assert_eq!(row.consumers, Some(0));
    assert_eq!(row.open_requests, u64::from(K));
    assert_eq!(s.open_requests, u64::from(K));
    assert_eq!(
        s.totals.inbox_depth,
        u64::from(K),
        "nobody else has mail waiting"
    );
    assert!(
        s.timers_armed >= u64::from(K),
        "deadline timers of the open requests"
    );

    let m = metrics(addr).await;
    let k = f64::from(K);
    assert_eq!(
        m.value("mev_inbox_messages", &[("agency", &cast.provider)]),
        Some(k)
    );
    assert_eq!(
        m.value("mev_inbox_consumers", &[("agency", &cast.provider)]),
        Some(0.0)
    );
    assert_eq!(
        m.value("mev_agency_open_requests", &[("agency", &cast.provider)]),
        Some(k)
    );
    assert_eq!(m.value("mev_open_requests", &[]), Some(k));
    drop(handles);
    ex.cleanup().await;
}

/// The Chromium binary: `$CHROMIUM`, or Debian's `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return c.into();
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("headless Chromium is needed for the dashboard test: apt-get install -y chromium (or set CHROMIUM)");
}

/// Runs headless Chromium with `args` and `url`, returning its stdout;
/// killed after [`WAIT`].
async fn run_chromium(args: Vec<String>, url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = std::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&args)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
        });
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("chromium's status") {
                let out = reader.join().expect("reader").expect("chromium's output");
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    panic!("chromium failed ({status}): {err}");
                }
                return out;
            }
            if started.elapsed() > WAIT * 2 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium took longer than {:?}", WAIT * 2);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("the chromium task")
}

/// The text of the element with `id="<id>"` in a DOM dump.
fn text_of(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open_end = at + dom[at..].find('>')?;
    let rest = &dom[open_end + 1..];
    let close = rest.find('<')?;
    Some(
        rest[..close]
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .trim()
            .to_string(),
    )
}

/// The value of attribute `name` on the `<body>` tag of a DOM dump.
fn body_attr(dom: &str, name: &str) -> Option<String> {
    let body = &dom[dom.find("<body")?..];
    let tag = &body[..body.find('>')?];
    let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// What the dashboard should show for `s`: element id → text.
fn expected_dom(s: &StatusReport) -> BTreeMap<String, String> {
    let opt = |v: Option<u32>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
    let mut want = BTreeMap::new();
    want.insert("broker-id".into(), s.broker_id.clone());
    want.insert("namespace".into(), s.namespace.clone());
    want.insert(
        "summary-inbox_depth".into(),
        s.totals.inbox_depth.to_string(),
    );
    want.insert("summary-outbox_depth".into(), s.outbox_depth.to_string());
    want.insert("summary-open_requests".into(), s.open_requests.to_string());
    want.insert(
        "summary-accepted_total".into(),
        s.totals.accepted_total.to_string(),
    );
    want.insert(
        "summary-rejected_total".into(),
        s.totals.rejected_total.to_string(),
    );
    want.insert("summary-breached".into(), s.totals.sla.breached.to_string());
    want.insert(
        "summary-ingress_depth".into(),
        s.ingress.map_or("–".into(), |i| i.messages.to_string()),
    );
    for a in &s.agencies {
        let p = format!("agency-{}-", a.id);
        want.insert(format!("{p}inbox_depth"), opt(a.inbox_depth));
        want.insert(format!("{p}consumers"), opt(a.consumers));
        want.insert(format!("{p}open_requests"), a.open_requests.to_string());
        want.insert(format!("{p}on_time"), a.sla.on_time.to_string());
        want.insert(format!("{p}late"), a.sla.late.to_string());
        want.insert(format!("{p}breached"), a.sla.breached.to_string());
        want.insert(format!("{p}at_risk"), a.sla.at_risk.to_string());
    }
    for c in &s.totals.rejected {
        want.insert(format!("code-{}-count", c.code), c.count.to_string());
    }
    for (i, r) in s.recent_rejections.iter().enumerate() {
        want.insert(format!("rejection-{i}-code"), r.code.to_string());
        want.insert(format!("rejection-{i}-name"), r.name.clone());
        want.insert(format!("rejection-{i}-reason"), r.reason.clone());
    }
    want
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir.join("dashboard.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium_shows_the_status() {
    let (mut ex, cast, addr) = setup().await;
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    // Nothing from elsewhere: the only absolute URL is the SVG namespace.
    assert_eq!(
        page.body.matches("http").count(),
        page.body.matches("\"http://www.w3.org/2000/svg\"").count(),
        "the dashboard loads nothing from elsewhere"
    );
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!page.body.contains(external), "{external} in the dashboard");
    }

    // Traffic: replies, two kinds of rejection, and a provider gone with
    // requests piling up in its inbox.
    for kind in ["documents", "refusal", "not_held"] {
        ex.round_trip(&cast.consumer, &cast.service, kind).await;
    }
    send_refused(&ex, &cast).await;
    ex.publish_raw(b"\x00garbage".to_vec()).await;
    ex.stop_agency(&cast.provider).await;
    for _ in 0..4 {
        let mut h = ex
            .adapter(&cast.consumer)
            .send_request(ex.request(&cast.service, "documents"))
            .await
            .expect("sent");
        assert!(receipt(&mut h).await.accepted);
    }
    let settled = |s: &StatusReport| {
        agency(s, &cast.provider).inbox_depth == Some(4)
            && agency(s, &cast.provider).consumers == Some(0)
            && s.totals.garbage == 1
            && s.outbox_depth == 0
            && s.rabbitmq.connected
    };
    status_when(addr, "the traffic to settle", settled).await;

    // The page shows what /api/status says (retried if a poll moved a number
    // between Chromium's fetch and ours).
    let url = format!("http://{addr}/");
    let mut last = String::new();
    for attempt in 1..=3 {
        let dom = run_chromium(vec!["--dump-dom".into()], url.clone()).await;
        let s = status(addr).await;
        assert_eq!(
            body_attr(&dom, "data-loaded").as_deref(),
            Some("true"),
            "the dashboard's script rendered a status:\n{dom}"
        );
        let polls: u32 = body_attr(&dom, "data-polls")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(polls >= 1);
        let mismatches: Vec<String> = expected_dom(&s)
            .into_iter()
            .filter_map(|(id, want)| {
                let got = text_of(&dom, &id);
                (got.as_deref() != Some(want.as_str()))
                    .then(|| format!("#{id}: page {got:?}, /api/status {want:?}"))
            })
            .collect();
        if mismatches.is_empty() {
            // The chart has a line per agency.
            assert_eq!(dom.matches("<polyline").count(), s.agencies.len());
            assert!(text_of(&dom, "summary-compliance").is_some_and(|c| c.ends_with('%')));
            println!(
                "dashboard: {polls} polls in Chromium, {} agencies, {} rejections shown, all numbers match /api/status",
                s.agencies.len(),
                s.recent_rejections.len()
            );
            last.clear();
            break;
        }
        last = format!("attempt {attempt}:\n{}", mismatches.join("\n"));
        eprintln!("{last}");
    }
    assert!(
        last.is_empty(),
        "the dashboard differs from /api/status: {last}"
    );

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
            "--hide-scrollbars".into(),
        ],
        url,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real PNG"
    );
    println!("dashboard screenshot: {}", shot.display());
    ex.cleanup().await;
}
