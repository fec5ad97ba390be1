//! A full disk under the broker, for real: its data directory on a small
//! tmpfs this test mounts (root), requests until the filesystem fills. The
//! redo log's failed write or sync poisons it, and the broker must stop by
//! itself (fail-stop): `/readyz` says 503 with the reason, the process
//! exits non-zero saying why, nothing that was not durable was acked. With
//! space freed it restarts, replays its log, and every request that got a
//! positive receipt is answered: nothing accepted is lost (guaranteed
//! delivery: KZ order §9, Tatarstan §1.3; the operator answers for
//! uninterrupted operation and must be told: UZ annex 2 §27).
//!
//! `cargo test -p mev-tests --test it disk_full:: -- --nocapture` prints the
//! figures. Skipped, saying so, where a tmpfs cannot be mounted.

use mev_tests::process::{BrokerProcess, Tmpfs};
use mev_tests::rig::Rig;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The tmpfs while it fills, and after space is freed.
const SMALL: &str = "12m";
const LARGE: &str = "512m";
/// Requests awaiting their receipt at most.
const WINDOW: usize = 32;
/// Bytes of attachment per request: the disk fills after a few hundred.
const ATTACHMENT: usize = 24 * 1024;
/// The longest the flood may take to fill the disk.
const FILL_LIMIT: Duration = Duration::from_secs(240);
/// The longest the broker may take to stop by itself once it failed: the
/// grace during which `/readyz` says why, then the stop.
const EXIT_LIMIT: Duration = Duration::from_secs(15);
/// The longest every accepted request may take to be answered after the restart.
const ANSWER_LIMIT: Duration = Duration::from_secs(180);

#[derive(Default)]
struct Outcome {
    /// Ids that got a positive receipt.
    accepted: Mutex<Vec<String>>,
    /// Ids that got a negative one (there should be none).
    refused: Mutex<Vec<String>>,
    /// Ids whose reply arrived.
    answered: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_the_broker_and_a_restart_loses_nothing_accepted() {
    let tmpfs = match Tmpfs::mount(SMALL) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED disk_full: cannot mount a tmpfs ({why}); run as root");
            return;
        }
    };
    let exe = env!("CARGO_BIN_EXE_mev-test-broker");
    let mut rig = Rig::new(0, WINDOW).await;
    let data = tmpfs.path().join("broker");
    let mut broker = BrokerProcess::spawn(&rig, exe, &data, None, "broker-1").await;
    broker.wait_ready().await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.connect(&rig.cast.consumer.clone()).await;

    // Readiness, watched while the disk fills: the first 503 and its body.
    let not_ready: Arc<Mutex<Option<String>>> = Arc::default();
    let watcher = {
        let not_ready = not_ready.clone();
        let http = broker.http;
        tokio::spawn(async move {
            let url = format!("http://{http}/readyz");
            loop {
                let url = url.clone();
                let r = tokio::task::spawn_blocking(move || {
                    mev_cli::status::client::get(&url, Duration::from_secs(1)).ok()
                })
                .await
                .ok()
                .flatten();
                if let Some(r) = r.filter(|r| r.status == 503) {
                    *lock(&not_ready) = Some(r.body);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The flood: requests until the broker stops by itself.
    let outcome = Arc::new(Outcome::default());
    let window = Arc::new(Semaphore::new(WINDOW));
    let adapter = rig.adapter(&rig.cast.consumer);
    let started = Instant::now();
    let mut sent = 0u64;
    let status = loop {
        if let Some(status) = broker.try_wait() {
            break status;
        }
        if lock(&not_ready).is_some() {
            // It failed and says so: it must now stop by itself, promptly.
            break broker.exited_within(EXIT_LIMIT).await;
        }
        assert!(
            started.elapsed() < FILL_LIMIT,
            "the broker did not stop within {FILL_LIMIT:?} of requests ({sent} sent, {} \
             accepted, tmpfs {}): {}",
            lock(&outcome.accepted).len(),
            tmpfs.usage(),
            broker.stderr_text()
        );
        // Bounded, so that a broker that stopped answering is noticed.
        let Ok(Ok(permit)) =
            tokio::time::timeout(Duration::from_millis(200), window.clone().acquire_owned()).await
        else {
            continue;
        };
        let mut req = mev_cli::demo::sample_request(
            &rig.register,
            &rig.cast.service,
            sent,
            format!("Applicant {sent}"),
        );
        if let Some(a) = req.applicant.application.as_mut() {
            a.content = vec![b'%'; ATTACHMENT];
        }
        let mut handle =
            mev_tests::within("a request to enter the outbox", adapter.send_request(req))
                .await
                .expect("send_request: the adapter's own store is not the one that fills");
        sent += 1;
        let outcome = outcome.clone();
        tokio::spawn(async move {
            let id = handle.message_id.clone();
            match handle.receipt().await {
                Ok(r) if r.accepted => lock(&outcome.accepted).push(id.clone()),
                Ok(r) => {
                    eprintln!("request {id} refused: {} {}", r.code, r.reason);
                    lock(&outcome.refused).push(id.clone());
                }
                Err(_) => {}
            }
            drop(permit);
            if handle.reply().await.is_ok() {
                lock(&outcome.answered).insert(id);
            }
        });
    };
    let stopped_after = started.elapsed();
    let stderr = broker.stderr_text();
    let accepted_before = lock(&outcome.accepted).len();
    println!(
        "[disk full] {sent} requests sent, {accepted_before} accepted, broker stopped after {:.1} s \
         with {status}; tmpfs {}",
        stopped_after.as_secs_f64(),
        tmpfs.usage()
    );
    assert!(!status.success(), "a non-zero exit: {status}\n{stderr}");
    assert_eq!(
        status.code(),
        Some(2),
        "exited by itself, not killed: {status}"
    );
    assert!(
        stderr.contains("the store failed") && stderr.contains("No space left on device"),
        "the reason in its output:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a clean exit, not a panic:\n{stderr}"
    );
    assert!(
        accepted_before > 0,
        "requests were accepted before the disk filled"
    );
    let seen = tokio::time::timeout(Duration::from_secs(1), watcher).await;
    let body = lock(&not_ready).clone();
    println!("[disk full] /readyz while stopping: {body:?}");
    assert!(
        seen.is_ok(),
        "the readiness watcher saw a 503 before the exit"
    );
    let body = body.expect("a 503 body");
    assert!(
        body.contains("the store failed") && body.contains("No space left on device"),
        "/readyz says why: {body}"
    );

    // Space freed: the restart replays the log, and the requests accepted
    // (and those not yet, waiting in the ingress) are answered.
    tmpfs.resize(LARGE);
    let mut broker = BrokerProcess::spawn(&rig, exe, &data, None, "broker-2").await;
    let deadline = Instant::now() + ANSWER_LIMIT;
    let accepted: Vec<String> = lock(&outcome.accepted).clone();
    loop {
        let missing = {
            let answered = lock(&outcome.answered);
            accepted.iter().filter(|id| !answered.contains(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted requests not answered {ANSWER_LIMIT:?} after the restart \
             (lost?): {}",
            accepted.len(),
            broker.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the requests in flight when it stopped: none was acked without
    // being durable, so RabbitMQ redelivered them, and they are answered too.
    loop {
        let answered = lock(&outcome.answered).len() as u64;
        if answered >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of {sent} requests answered {ANSWER_LIMIT:?} after the restart: \
             one was acked but not recorded? {}",
            broker.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = {
        let url = format!("http://{}/metrics", broker.http);
        tokio::task::spawn_blocking(move || {
            mev_cli::status::client::get(&url, Duration::from_secs(5)).ok()
        })
        .await
        .ok()
        .flatten()
        .and_then(|r| {
            r.body
                .lines()
                .find(|l| l.starts_with("mev_store_log_replayed_records "))
                .map(str::to_string)
        })
    };
    println!(
        "[disk full] after the restart: all {} accepted requests answered, and all {sent} sent; \
         {replayed:?}; the failed broker said: {:?}",
        accepted.len(),
        stderr.lines().last()
    );
    assert!(
        lock(&outcome.refused).is_empty(),
        "no request refused: {:?}",
        lock(&outcome.refused)
    );
    // A clean stop closes the store: the log is back to its header.
    let status = broker.terminate(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "a clean stop: {status}\n{}",
        broker.stderr_text()
    );
    let wal = std::fs::metadata(data.join("broker.redb.wal")).expect("the log");
    assert_eq!(
        wal.len(),
        mev_store::wal::FILE_HEADER,
        "a clean stop empties the redo log"
    );
    drop(broker);
    rig.cleanup().await;
    drop(tmpfs);
}
