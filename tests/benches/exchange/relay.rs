//! The zero-work relay, written with lapin alone: the ceiling.

use super::*;

/// What the relay's final consumer saw.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) count: AtomicU64,
    /// `now_ns()` of the latest message.
    pub(crate) last_ns: AtomicU64,
    /// Latencies of messages sent at or after this `now_ns()` are recorded.
    pub(crate) record_from_ns: AtomicU64,
    pub(crate) hist: Mutex<Option<Histogram<u64>>>,
}

/// A relay topology in its own namespace: Q1 → relay → Q2 → final consumer.
pub(crate) struct Relay {
    pub(crate) q1: String,
    pub(crate) q2: String,
    pub(crate) admin: Connection,
    pub(crate) publisher_conn: Connection,
    pub(crate) relay_conn: Connection,
    pub(crate) sink_conn: Connection,
    pub(crate) publisher: Channel,
    pub(crate) sink: Arc<Sink>,
    pub(crate) failures: Arc<AtomicU64>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub(crate) async fn connect(name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("mevbench {name}").as_str()));
    step(
        "connecting to RabbitMQ",
        Connection::connect(&amqp_url(), props),
    )
    .await?
    .with_context(|| format!("connecting to RabbitMQ at {}", redact(&amqp_url())))
}

/// A channel consuming `queue` with the relay's prefetch, and its consumer.
pub(crate) async fn consume(
    conn: &Connection,
    queue: &str,
    tag: &str,
) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(RELAY_PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

pub(crate) fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

pub(crate) fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

impl Relay {
    pub(crate) async fn start() -> anyhow::Result<Relay> {
        let ns = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
        let q1 = format!("{ns}.relay.q1");
        let q2 = format!("{ns}.relay.q2");
        let admin = connect("relay admin").await?;
        let ch = admin.create_channel().await?;
        for q in [&q1, &q2] {
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                quorum_args(),
            )
            .await
            .with_context(|| format!("declaring {q}"))?;
        }
        let _ = ch.close(200, "declared".into()).await;
        let publisher_conn = connect("relay publisher").await?;
        let publisher = publisher_conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut relay = Relay {
            q1,
            q2,
            publisher_conn,
            relay_conn: connect("relay").await?,
            sink_conn: connect("relay final consumer").await?,
            admin,
            publisher,
            sink: Arc::new(Sink::default()),
            failures: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        };
        relay.start_relay().await?;
        relay.start_sink().await?;
        Ok(relay)
    }

    /// Q1 → Q2: re-publish each message, ack it on Q1 once Q2 confirmed it.
    /// Publishes and confirms overlap: at most the prefetch in flight.
    pub(crate) async fn start_relay(&mut self) -> anyhow::Result<()> {
        let (input, mut consumer) = consume(&self.relay_conn, &self.q1, "relay").await?;
        let output = self.relay_conn.create_channel().await?;
        output
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (tx, mut rx) = mpsc::channel::<(PublisherConfirm, Acker)>(RELAY_PREFETCH as usize);
        let q2 = self.q2.clone();
        let failures = self.failures.clone();
        self.tasks.push(tokio::spawn(async move {
            let _keep = input;
            while let Some(Ok(d)) = consumer.next().await {
                let published = output
                    .basic_publish(
                        "".into(),
                        q2.as_str().into(),
                        BasicPublishOptions::default(),
                        &d.data,
                        persistent(),
                    )
                    .await;
                match published {
                    Ok(confirm) => {
                        if tx.send((confirm, d.acker)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("  relay: publish to Q2 failed: {e}");
                        return;
                    }
                }
            }
        }));
        let failures = self.failures.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some((confirm, acker)) = rx.recv().await {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => {
                        let _ = acker.ack(BasicAckOptions::default()).await;
                    }
                    other => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("  relay: Q2 did not confirm: {other:?}");
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await;
                    }
                }
            }
        }));
        Ok(())
    }

    /// The final consumer: counts, records latency, acks.
    pub(crate) async fn start_sink(&mut self) -> anyhow::Result<()> {
        let (ch, mut consumer) = consume(&self.sink_conn, &self.q2, "sink").await?;
        let sink = self.sink.clone();
        self.tasks.push(tokio::spawn(async move {
            let _keep = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let now = now_ns();
                let sent = d
                    .data
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(now);
                if sent >= sink.record_from_ns.load(Ordering::Relaxed) {
                    if let Some(h) = lock(&sink.hist).as_mut() {
                        h.saturating_record(now.saturating_sub(sent) / 1_000);
                    }
                }
                sink.last_ns.fetch_max(now, Ordering::Relaxed);
                sink.count.fetch_add(1, Ordering::Relaxed);
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
        }));
        Ok(())
    }

    /// A message of `bytes` bytes stamped with `sent_ns`.
    pub(crate) fn body(bytes: usize, sent_ns: u64, k: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(bytes.max(16));
        body.extend_from_slice(&sent_ns.to_le_bytes());
        body.extend_from_slice(&k.to_le_bytes());
        let filler = b"relay payload of the envelope's size ";
        while body.len() < bytes {
            let take = (bytes - body.len()).min(filler.len());
            body.extend_from_slice(&filler[..take]);
        }
        body
    }

    /// A task awaiting the publisher's confirms in order; the channel's
    /// capacity is the window of confirms in flight.
    pub(crate) fn confirmer(
        &self,
        window: usize,
    ) -> (mpsc::Sender<PublisherConfirm>, tokio::task::JoinHandle<u64>) {
        let (tx, mut rx) = mpsc::channel::<PublisherConfirm>(window.max(1));
        let task = tokio::spawn(async move {
            let mut failed = 0u64;
            while let Some(c) = rx.recv().await {
                match c.await {
                    Ok(Confirmation::Ack(None)) => {}
                    other => {
                        failed += 1;
                        if failed == 1 {
                            eprintln!("  relay: Q1 did not confirm: {other:?}");
                        }
                    }
                }
            }
            failed
        });
        (tx, task)
    }

    pub(crate) async fn publish(&self, body: &[u8]) -> anyhow::Result<PublisherConfirm> {
        Ok(self
            .publisher
            .basic_publish(
                "".into(),
                self.q1.as_str().into(),
                BasicPublishOptions::default(),
                body,
                persistent(),
            )
            .await?)
    }

    /// Waits until the final consumer has seen `n` messages in all.
    pub(crate) async fn wait_count(&self, n: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.sink.count.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Deletes the queues and closes the connections.
    pub(crate) async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.publisher_conn.close(200, "done".into()).await;
        let _ = self.relay_conn.close(200, "done".into()).await;
        let _ = self.sink_conn.close(200, "done".into()).await;
        let deleted = async {
            let ch = self.admin.create_channel().await?;
            for q in [&self.q1, &self.q2] {
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            let _ = self.admin.close(200, "done".into()).await;
            Ok::<_, lapin::Error>(())
        };
        match tokio::time::timeout(STEP, deleted).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  cleanup of {} failed: {e}", self.q1),
            Err(_) => eprintln!("  cleanup of {} timed out", self.q1),
        }
    }
}

/// One throughput run of the relay.
pub(crate) struct RelayRun {
    /// First publish → every confirm of Q1 in.
    pub(crate) publish: Duration,
    /// First publish → the final consumer's last message.
    pub(crate) delivered: Duration,
    pub(crate) count: u64,
    pub(crate) failures: u64,
    pub(crate) cpu: CpuUse,
}

pub(crate) async fn relay_run(s: &Settings, bytes: usize) -> anyhow::Result<RelayRun> {
    let relay = Relay::start().await?;
    let result = relay_measure(&relay, s, bytes).await;
    relay.stop().await;
    result
}

pub(crate) async fn relay_measure(
    relay: &Relay,
    s: &Settings,
    bytes: usize,
) -> anyhow::Result<RelayRun> {
    let n = s.n as u64;
    let cpu = Cpu::now();
    let start = Instant::now();
    let start_ns = now_ns();
    let (tx, confirms) = relay.confirmer(s.window);
    for k in 0..n {
        let confirm = relay.publish(&Relay::body(bytes, now_ns(), k)).await?;
        if tx.send(confirm).await.is_err() {
            bail!("the relay's confirm task ended early");
        }
    }
    drop(tx);
    let nacked = confirms
        .await
        .context("the relay's confirm task panicked")?;
    let publish = start.elapsed();
    if !relay.wait_count(n, RUN_LIMIT).await {
        eprintln!(
            "  relay: only {} of {n} arrived within {RUN_LIMIT:?}",
            relay.sink.count.load(Ordering::Relaxed)
        );
    }
    let delivered = Duration::from_nanos(
        relay
            .sink
            .last_ns
            .load(Ordering::Relaxed)
            .saturating_sub(start_ns),
    );
    Ok(RelayRun {
        publish,
        delivered,
        count: relay.sink.count.load(Ordering::Relaxed),
        failures: nacked + relay.failures.load(Ordering::Relaxed),
        cpu: Cpu::now().since(&cpu),
    })
}

/// The relay at `rate` messages a second for `secs` seconds, open loop.
pub(crate) async fn relay_open_loop(
    relay: &Relay,
    rate: f64,
    secs: u64,
    bytes: usize,
    window: usize,
) -> anyhow::Result<LatencyStep> {
    let base = relay.sink.count.load(Ordering::Relaxed);
    let cpu = Cpu::now();
    let sched = Schedule::new(rate, secs);
    *lock(&relay.sink.hist) = Some(histogram());
    relay
        .sink
        .record_from_ns
        .store(ns_of(sched.warm_until), Ordering::Relaxed);
    let (tx, confirms) = relay.confirmer(window);
    {
        let tx = &tx;
        sched
            .run(|k, due| {
                let body = Relay::body(bytes, ns_of(due), k);
                async move {
                    let confirm = relay.publish(&body).await?;
                    tx.send(confirm)
                        .await
                        .map_err(|_| anyhow::anyhow!("the relay's confirm task ended early"))
                }
            })
            .await?;
    }
    drop(tx);
    let nacked = confirms
        .await
        .context("the relay's confirm task panicked")?;
    relay.wait_count(base + sched.total, REPLY_LIMIT).await;
    let completed = relay.sink.count.load(Ordering::Relaxed) - base;
    relay.sink.record_from_ns.store(u64::MAX, Ordering::Relaxed);
    let hist = lock(&relay.sink.hist).take().unwrap_or_else(histogram);
    let missing = sched.total.saturating_sub(completed);
    Ok(LatencyStep {
        offered: rate,
        sent: sched.total,
        completed,
        failed: missing + nacked,
        hist,
        first_error: (missing + nacked > 0)
            .then(|| format!("{missing} not delivered, {nacked} not confirmed")),
        cpu: Cpu::now().since(&cpu),
        broker: None,
        oneway: None,
    })
}
