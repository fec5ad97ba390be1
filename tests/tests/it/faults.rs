//! Fault injection over the real RabbitMQ (issue 4): connections cut in the
//! middle of a run, the broker killed with SIGKILL, an agency started while
//! RabbitMQ is unreachable, a provider offline behind a full inbox. Each test
//! ends with every request answered exactly once at the requester and every
//! handler called exactly once per request — counted, and printed
//! (`cargo test -p mev-tests --test it faults:: -- --nocapture` shows the counts).
//!
//! Guaranteed delivery: undelivered messages wait in a queue and sending
//! resumes when the link is back (KZ order §9; Tatarstan §1.3).

use mev_tests::proxy::Proxy;
use mev_tests::rig::Rig;
use std::time::{Duration, Instant};

/// How long a whole run may take before the test gives up and reports.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// The answered count at which the `i`th of `faults` faults (from 0) is
/// injected into a run of `n` requests: evenly spaced by progress, so every
/// fault falls while requests are unanswered, however fast the machine is.
fn fault_point(i: usize, faults: usize, n: usize) -> usize {
    (i + 1) * n / (faults + 1)
}

/// Waits until `depth` reads 0 (an outbox whose last entries are confirmed,
/// and then removed); fails after [`mev_tests::WAIT`] with the depth seen.
async fn drained(what: &str, depth: impl Fn() -> u64) {
    let mut last = depth();
    let waited = tokio::time::timeout(mev_tests::WAIT, async {
        loop {
            last = depth();
            if last == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what} did not drain within {:?}: {last} entries left",
        mev_tests::WAIT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_cut_24_times_during_10000_requests() {
    const CUTS: usize = 24;
    let n: usize = std::env::var("MEV_FAULT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    assert!(n > CUTS, "MEV_FAULT_REQUESTS must exceed {CUTS}: {n}");
    let mut rig = Rig::new(0, 400).await;
    rig.start_broker().await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.connect(&rig.cast.consumer.clone()).await;

    let started = Instant::now();
    let mut cuts_mid_run = (0, 0); // (agency side, broker side)
    let mut cut_at = Vec::new(); // answered when each cut was made
    let cutter = async {
        for i in 0..CUTS {
            let at = fault_point(i, CUTS, n);
            let side = if i % 2 == 0 { "agencies'" } else { "broker's" };
            rig.until_answered(at, &format!("cut {} ({side} side)", i + 1), RUN_LIMIT)
                .await;
            let answered = rig.answered();
            if answered >= n {
                break; // not mid-run: not counted, and the assertion below fails
            }
            if i % 2 == 0 {
                rig.agency_link.cut();
                cuts_mid_run.0 += 1;
            } else {
                rig.broker_link.cut();
                cuts_mid_run.1 += 1;
            }
            cut_at.push(answered);
        }
    };
    tokio::join!(rig.send(n), cutter, rig.progress("cuts", n));
    let report = rig.finish("cuts", RUN_LIMIT).await;
    println!(
        "[cuts] connections cut mid-run: {} on the agencies' side, {} on the broker's side \
         (at {cut_at:?} answered of {n}); connections made: agencies {}, broker {}; {:.1} s",
        cuts_mid_run.0,
        cuts_mid_run.1,
        rig.agency_link.connections(),
        rig.broker_link.connections(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        cuts_mid_run,
        (CUTS / 2, CUTS / 2),
        "{CUTS} cuts, half on each side, while requests were unanswered (at {cut_at:?} answered)"
    );
    report.assert_exactly_once();
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_with_sigkill_6_times_and_restarted() {
    const N: usize = 3_000;
    const KILLS: usize = 6;
    let exe = env!("CARGO_BIN_EXE_mev-test-broker");
    let mut rig = Rig::new(0, 400).await;
    rig.spawn_broker(exe).await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.connect(&rig.cast.consumer.clone()).await;

    let started = Instant::now();
    let mut kills_mid_run = 0;
    let mut killed_at = Vec::new(); // answered when each kill was made
    let killer = async {
        for i in 0..KILLS {
            let at = fault_point(i, KILLS, N);
            rig.until_answered(at, &format!("kill {}", i + 1), RUN_LIMIT)
                .await;
            let answered = rig.answered();
            if answered >= N {
                break; // not mid-run: not counted, and the assertion below fails
            }
            rig.kill_broker();
            kills_mid_run += 1;
            killed_at.push(answered);
            // Down for a moment, as after a real crash, then restarted.
            tokio::time::sleep(Duration::from_millis(300)).await;
            rig.spawn_broker(exe).await;
        }
    };
    tokio::join!(rig.send(N), killer, rig.progress("sigkill", N));
    let report = rig.finish("sigkill", RUN_LIMIT).await;
    println!(
        "[sigkill] broker killed with SIGKILL and restarted {kills_mid_run} times mid-run \
         (at {killed_at:?} answered of {N}); {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        kills_mid_run, KILLS,
        "{KILLS} kills while requests were unanswered (at {killed_at:?} answered)"
    );
    report.assert_exactly_once();
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agency_started_while_rabbitmq_unreachable_sends_1000_then_link_restored() {
    const N: usize = 1_000;
    let mut rig = Rig::new(0, N).await;
    rig.start_broker().await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.agency_link.set_up(false);
    // The consumer has a link of its own, so that the connections it
    // attempts are told from the provider's.
    let consumer_link = Proxy::to_rabbitmq().await;
    consumer_link.set_up(false);
    let consumer = rig.cast.consumer.clone();
    rig.connect_via(&consumer, consumer_link.url()).await;
    rig.send(N).await;
    // Every request is in the outbox. Not "nothing was sent after a while":
    // the consumer tries to reach RabbitMQ twice more (each try refused),
    // and not one of its connections ever got through.
    let refused = consumer_link.refused();
    mev_tests::within(
        "the consumer to try RabbitMQ twice more with every request in its outbox",
        async {
            while consumer_link.refused() < refused + 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let waiting = rig.adapter(&consumer).outbox_depth();
    println!(
        "[offline start] {waiting} requests wait in the consumer's outbox while RabbitMQ is \
         unreachable ({} connection attempts refused, {} let through)",
        consumer_link.refused(),
        consumer_link.connections()
    );
    assert_eq!(consumer_link.connections(), 0, "no connection got through");
    assert_eq!(waiting, N as u64, "every request is on disk, none sent");
    assert_eq!(rig.answered(), 0);
    consumer_link.set_up(true);
    rig.agency_link.set_up(true);
    let report = rig.finish("offline start", RUN_LIMIT).await;
    report.assert_exactly_once();
    drained("the consumer's outbox", || {
        rig.adapter(&consumer).outbox_depth()
    })
    .await;
    assert!(
        consumer_link.connections() > 0,
        "the consumer came through its link"
    );
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_offline_behind_a_full_inbox_then_back() {
    const N: usize = 1_000;
    const INBOX: u32 = 100;
    let mut rig = Rig::new(INBOX, 2 * N).await;
    rig.start_broker().await;
    let provider = rig.cast.provider.clone();
    rig.connect(&provider).await;
    rig.connect(&rig.cast.consumer.clone()).await;
    rig.send(20).await;
    let warmup = rig.finish("provider offline: warm-up", RUN_LIMIT).await;
    warmup.assert_exactly_once();

    rig.disconnect(&provider).await;
    rig.send(N).await;
    let admin = rig.admin();
    let inbox = mev_adapter::transport::Transport::names(&admin).inbox_queue(&provider);
    let depth = || async {
        mev_adapter::transport::Topology::queue_depth(&admin, &inbox)
            .await
            .map(|d| d.messages)
            .unwrap_or(0)
    };
    let held = mev_tests::within("the provider's inbox to fill and the rest to wait", async {
        loop {
            let depth = depth().await;
            let outbox = rig.broker_outbox_depth().unwrap_or(0);
            if depth >= INBOX && outbox > 0 {
                return (depth, outbox);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Not "nothing was lost after a while": the broker is refused by the
    // full inbox, publishes again later and is refused again (two rounds
    // counted one after the other), and still holds the rest.
    let refused = || {
        rig.broker_counters()
            .expect("the broker runs in process")
            .publish_failures
    };
    let before = refused();
    let mut rounds = vec![before];
    for round in 1..=2 {
        let last = *rounds.last().expect("a count");
        let now = mev_tests::within(
            &format!(
                "publishes to the full inbox refused again (round {round}; counts {rounds:?})"
            ),
            async {
                loop {
                    let now = refused();
                    // A round counts its refusals one by one: read once it is done.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if now > last && refused() == now {
                        return now;
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            },
        )
        .await;
        rounds.push(now);
    }
    let after = *rounds.last().expect("a count");
    let still = (depth().await, rig.broker_outbox_depth().unwrap_or(0));
    println!(
        "[provider offline] inbox full at {} messages, {} more wait in the broker's outbox; \
         publishes refused {before} -> {after}; then inbox {}, outbox {}",
        held.0, held.1, still.0, still.1
    );
    assert_eq!(rig.answered(), 20);
    assert!(
        still.0 >= INBOX && still.1 > 0,
        "still held after the refused retries: {still:?}"
    );
    rig.connect(&provider).await;
    let report = rig.finish("provider offline", RUN_LIMIT).await;
    report.assert_exactly_once();
    drained("the broker's outbox", || {
        rig.broker_outbox_depth()
            .expect("the broker runs in process")
    })
    .await;
    rig.cleanup().await;
}
