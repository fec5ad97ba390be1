//! Fault injection over the real RabbitMQ (issue 4): connections cut in the
//! middle of a run, the broker killed with SIGKILL, an agency started while
//! RabbitMQ is unreachable, a provider offline behind a full inbox. Each test
//! ends with every request answered exactly once at the requester and every
//! handler called exactly once per request — counted, and printed
//! (`cargo test -p mev-tests --test it faults:: -- --nocapture` shows the counts).
//!
//! Guaranteed delivery: undelivered messages wait in a queue and sending
//! resumes when the link is back (KZ order §9; Tatarstan §1.3).

use mev_tests::rig::Rig;
use std::time::Duration;

/// How long a whole run may take before the test gives up and reports.
const RUN_LIMIT: Duration = Duration::from_secs(900);
/// How long to wait, after the last reply, for copies that must not come.
const SETTLE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_cut_24_times_during_10000_requests() {
    let n: usize = std::env::var("MEV_FAULT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rig = Rig::new(0, 400).await;
    rig.start_broker().await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.connect(&rig.cast.consumer.clone()).await;

    let mut cuts_mid_run = (0, 0); // (agency side, broker side)
    let cutter = async {
        for i in 0..24 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            if rig.answered() >= n {
                break;
            }
            if i % 2 == 0 {
                rig.agency_link.cut();
                cuts_mid_run.0 += 1;
            } else {
                rig.broker_link.cut();
                cuts_mid_run.1 += 1;
            }
        }
    };
    tokio::join!(rig.send(n), cutter, rig.progress("cuts", n));
    let report = rig.finish("cuts", RUN_LIMIT, SETTLE).await;
    println!(
        "[cuts] connections cut mid-run: {} on the agencies' side, {} on the broker's side; \
         connections made: agencies {}, broker {}",
        cuts_mid_run.0,
        cuts_mid_run.1,
        rig.agency_link.connections(),
        rig.broker_link.connections()
    );
    assert!(
        cuts_mid_run.0 + cuts_mid_run.1 >= 20 && cuts_mid_run.0 >= 10 && cuts_mid_run.1 >= 10,
        "at least 20 cuts, on both sides, while requests were unanswered: {cuts_mid_run:?}"
    );
    report.assert_exactly_once();
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_with_sigkill_6_times_and_restarted() {
    const N: usize = 3_000;
    let exe = env!("CARGO_BIN_EXE_mev-test-broker");
    let mut rig = Rig::new(0, 400).await;
    rig.spawn_broker(exe).await;
    rig.connect(&rig.cast.provider.clone()).await;
    rig.connect(&rig.cast.consumer.clone()).await;

    let mut kills_mid_run = 0;
    let killer = async {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if rig.answered() >= N {
                break;
            }
            rig.kill_broker();
            kills_mid_run += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            rig.spawn_broker(exe).await;
        }
    };
    tokio::join!(rig.send(N), killer, rig.progress("sigkill", N));
    let report = rig.finish("sigkill", RUN_LIMIT, SETTLE).await;
    println!("[sigkill] broker killed with SIGKILL and restarted {kills_mid_run} times mid-run");
    assert!(
        kills_mid_run >= 5,
        "at least 5 kills while requests were unanswered: {kills_mid_run}"
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
    let consumer = rig.cast.consumer.clone();
    rig.connect(&consumer).await;
    rig.send(N).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = rig.adapter(&consumer).outbox_depth();
    println!("[offline start] {waiting} requests wait in the consumer's outbox while RabbitMQ is unreachable");
    assert_eq!(waiting, N as u64, "every request is on disk, none sent");
    assert_eq!(rig.answered(), 0);
    rig.agency_link.set_up(true);
    let report = rig.finish("offline start", RUN_LIMIT, SETTLE).await;
    report.assert_exactly_once();
    assert_eq!(
        rig.adapter(&consumer).outbox_depth(),
        0,
        "the outbox drained"
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
    let warmup = rig
        .finish("provider offline: warm-up", RUN_LIMIT, Duration::ZERO)
        .await;
    warmup.assert_exactly_once();

    rig.disconnect(&provider).await;
    rig.send(N).await;
    let admin = rig.admin();
    let inbox = mev_adapter::transport::Transport::names(&admin).inbox_queue(&provider);
    let held = mev_tests::within("the provider's inbox to fill and the rest to wait", async {
        loop {
            let depth = mev_adapter::transport::Topology::queue_depth(&admin, &inbox)
                .await
                .map(|d| d.messages)
                .unwrap_or(0);
            let outbox = rig.broker_outbox_depth().unwrap_or(0);
            if depth >= INBOX && outbox > 0 {
                return (depth, outbox);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    println!(
        "[provider offline] inbox full at {} messages, {} more wait in the broker's outbox",
        held.0, held.1
    );
    assert_eq!(rig.answered(), 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.connect(&provider).await;
    let report = rig.finish("provider offline", RUN_LIMIT, SETTLE).await;
    report.assert_exactly_once();
    assert_eq!(
        rig.broker_outbox_depth(),
        Some(0),
        "the broker's outbox drained"
    );
    rig.cleanup().await;
}
