use super::*;
use crate::transport::Route;

fn msg(i: u32) -> Outgoing {
    Outgoing {
        route: Route::Ingress,
        body: i.to_le_bytes().to_vec().into(),
        message_id: format!("m{i}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn group_commit_writes_waiting_requests_in_one_transaction() {
    let store = Arc::new(Store::open(None, "A").unwrap());
    let (outbox, writer) = Outbox::start(store.clone(), Duration::from_secs(3600), 32).unwrap();
    // On one thread the writer cannot run until this task yields: every
    // request below is waiting in its channel when it does. (Unconstrained:
    // tokio's cooperative budget would otherwise yield after ~128 sends.)
    let waiters = tokio::task::unconstrained(async {
        let mut waiters = Vec::new();
        for i in 0..300u32 {
            let rx = outbox
                .enqueue(vec![msg(i)], vec![format!("h{i}")], false)
                .await
                .unwrap();
            waiters.push(rx);
        }
        waiters
    })
    .await;
    for rx in waiters {
        rx.await.unwrap().unwrap();
    }
    assert_eq!(store.durable_commits(), 1, "one fsync for 300 messages");
    assert_eq!(store.outbox_len().unwrap(), 300);
    assert_eq!(outbox.depth(), 300);
    assert!(store.handled("h299").unwrap());
    outbox.close().await;
    writer.await.unwrap();
    assert!(matches!(
        outbox.commit(vec![msg(1)], vec![]).await,
        Err(AdapterError::Closed)
    ));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn marks_ride_on_the_next_transaction_or_wait_at_most_the_linger() {
    let store = Arc::new(Store::open(None, "A").unwrap());
    let (outbox, writer) = Outbox::start(store.clone(), Duration::from_secs(3600), 32).unwrap();
    let outbox = Arc::new(outbox);
    let marked = |key: &'static str| {
        let o = outbox.clone();
        tokio::spawn(async move { o.mark_handled(vec![key.into()]).await })
    };

    // A mark and, 10 ms later, a send: one transaction carries both.
    let start = tokio::time::Instant::now();
    let a = marked("a");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!a.is_finished(), "a mark waits for company");
    assert!(!store.handled("a").unwrap());
    outbox.commit(vec![msg(1)], vec![]).await.unwrap();
    a.await.unwrap().unwrap();
    assert!(start.elapsed() < LINGER);
    assert!(store.handled("a").unwrap());
    assert_eq!(store.durable_commits(), 1, "the mark rode on the send");

    // Marks alone: written together once the first has waited LINGER.
    let start = tokio::time::Instant::now();
    let b = marked("b");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = marked("c");
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
    assert_eq!(
        start.elapsed(),
        LINGER,
        "no longer than the first one's linger"
    );
    assert!(store.handled("b").unwrap() && store.handled("c").unwrap());
    assert_eq!(store.durable_commits(), 2, "one transaction for both");

    // Closing writes what still lingers.
    let d = marked("d");
    tokio::task::yield_now().await;
    outbox.close().await;
    d.await.unwrap().unwrap();
    writer.await.unwrap();
    assert!(store.handled("d").unwrap());
    assert_eq!(store.durable_commits(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn marks_holding_back_half_the_prefetch_do_not_wait() {
    let store = Arc::new(Store::open(None, "A").unwrap());
    let (outbox, writer) = Outbox::start(store.clone(), Duration::from_secs(3600), 2).unwrap();
    let outbox = Arc::new(outbox);
    let start = tokio::time::Instant::now();
    let marks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|k| {
            let o = outbox.clone();
            tokio::spawn(async move { o.mark_handled(vec![k.into()]).await })
        })
        .collect();
    for m in marks {
        m.await.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "the second mark made two");
    assert_eq!(store.durable_commits(), 1);
    outbox.close().await;
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(Some(dir.path()), "A").unwrap());
    let (outbox, writer) = Outbox::start(store.clone(), Duration::from_secs(3600), 32).unwrap();
    let outbox = Arc::new(outbox);
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let o = outbox.clone();
            tokio::spawn(async move { o.commit(vec![msg(i)], vec![]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let commits = store.durable_commits();
    eprintln!("400 concurrent sends in {commits} durable commits");
    assert!(commits < 100, "{commits} commits for 400 sends");
    assert_eq!(store.outbox_len().unwrap(), 400);
    outbox.close().await;
    writer.await.unwrap();
}
