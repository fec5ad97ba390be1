//! The exchange: a broker and two adapters, their stores on disk.

use super::*;

/// A broker and the two agencies' adapters in a namespace of their own.
pub(crate) struct ExchangeRig {
    pub(crate) admin: Amqp,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) broker: Option<BrokerHandle>,
    pub(crate) consumer: Option<Arc<Adapter<Amqp>>>,
    pub(crate) provider: Option<Adapter<Amqp>>,
    pub(crate) counters: Arc<Counters>,
    /// The broker's store (its redo log's figures).
    pub(crate) store: Option<Arc<Store>>,
    /// What the provider's handler saw: calls, the latest, and in the
    /// latency part the one-way latency (scheduled send → handler).
    pub(crate) provider_seen: Arc<Sink>,
    /// One-way runs: a plain consumer of the provider's inbox that counts
    /// and acks, like the relay's final consumer (no adapter, no reply).
    pub(crate) raw_provider: Option<tokio::task::JoinHandle<()>>,
}

impl ExchangeRig {
    /// The broker's store's redo log figures so far.
    pub(crate) fn log_stats(&self) -> mev_store::wal::Stats {
        self.store
            .as_ref()
            .map(|s| s.log_stats())
            .unwrap_or_default()
    }

    /// An exchange serving `flow`: its consumer and provider attached.
    pub(crate) async fn start(fx: &Fixture, flow: &Flow) -> anyhow::Result<ExchangeRig> {
        ExchangeRig::start_with(fx, flow, true).await
    }

    /// `replying`: the provider's adapter answers; otherwise a plain
    /// consumer takes the provider's inbox.
    pub(crate) async fn start_with(
        fx: &Fixture,
        flow: &Flow,
        replying: bool,
    ) -> anyhow::Result<ExchangeRig> {
        let namespace = format!("mevbench-{}", uuid::Uuid::new_v4().simple());
        let admin = transport(&namespace, "admin");
        step("connecting to RabbitMQ", admin.connect())
            .await?
            .with_context(|| format!("connecting to RabbitMQ at {}", redact(&amqp_url())))?;
        let mut rig = ExchangeRig {
            admin,
            dir: tempfile::tempdir().context("temp dir")?,
            broker: None,
            consumer: None,
            provider: None,
            counters: Arc::new(Counters::default()),
            store: None,
            provider_seen: Arc::new(Sink::default()),
            raw_provider: None,
        };
        match rig.bring_up(fx, flow, &namespace, replying).await {
            Ok(()) => Ok(rig),
            Err(e) => {
                rig.stop(fx).await;
                Err(e)
            }
        }
    }

    pub(crate) async fn bring_up(
        &mut self,
        fx: &Fixture,
        flow: &Flow,
        namespace: &str,
        replying: bool,
    ) -> anyhow::Result<()> {
        let store =
            Arc::new(Store::open(&self.dir.path().join("broker")).context("the broker's store")?);
        self.store = Some(store.clone());
        let ctx = Arc::new(Context {
            verifier: fx.verifier.clone(),
            // As `mev broker` sets it: the dedup window (30 days by default).
            max_message_age: Some(chrono::TimeDelta::days(30)),
            counters: self.counters.clone(),
            ..Context::new(
                fx.register.clone(),
                fx.trust.clone(),
                fx.broker.clone(),
                store,
            )
        });
        let batching = default_batching();
        let broker = Broker::new(
            ctx,
            transport(namespace, "broker"),
            batching,
            broker_prefetch(),
        );
        self.broker = Some(
            step("the broker to start", broker.start())
                .await?
                .context("starting the broker")?,
        );

        if !replying {
            let t = transport(namespace, "provider");
            step("the provider's inbox", t.declare_inbox(&flow.provider_id))
                .await?
                .context("declaring the provider's inbox")?;
            let queue = t.names().inbox_queue(&flow.provider_id);
            let mut inbox = step("consuming the provider's inbox", t.consume(&queue, 512))
                .await?
                .context("consuming the provider's inbox")?;
            let seen = self.provider_seen.clone();
            self.raw_provider = Some(tokio::spawn(async move {
                let _link = t;
                while let Some(d) = inbox.next().await {
                    seen.last_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    seen.count.fetch_add(1, Ordering::Relaxed);
                    let _ = d.ack().await;
                }
            }));
        } else {
            self.start_provider(fx, flow, namespace).await?;
        }
        self.start_consumer(fx, namespace).await
    }

    pub(crate) async fn start_provider(
        &mut self,
        fx: &Fixture,
        flow: &Flow,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let seen = self.provider_seen.clone();
        let schema = flow.service.reply_schema.clone();
        let payload = flow.reply_payload.clone();
        let handler = move |req: IncomingRequest| {
            let now = now_ns();
            seen.last_ns.fetch_max(now, Ordering::Relaxed);
            seen.count.fetch_add(1, Ordering::Relaxed);
            // The latency part's requests carry their scheduled send time.
            let due = req
                .header
                .applicant
                .as_ref()
                .and_then(|a| a.full_name.rsplit_once(" @"))
                .and_then(|(_, ns)| ns.parse::<u64>().ok());
            if let Some(due) = due {
                if due >= seen.record_from_ns.load(Ordering::Relaxed) {
                    if let Some(h) = lock(&seen.hist).as_mut() {
                        h.saturating_record(now.saturating_sub(due) / 1_000);
                    }
                }
            }
            std::future::ready(ReplyBody::Documents {
                provided: req.header.documents.clone(),
                payload_schema: schema.clone(),
                payload: payload.clone(),
            })
        };
        let provider = self
            .connect_adapter(
                namespace,
                "provider",
                flow.provider.clone(),
                fx,
                Some(handler),
            )
            .await?;
        self.provider = Some(provider);
        Ok(())
    }

    pub(crate) async fn start_consumer(
        &mut self,
        fx: &Fixture,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let consumer = self
            .connect_adapter(
                namespace,
                "consumer",
                fx.consumer.clone(),
                fx,
                None::<NoHandler>,
            )
            .await?;
        self.consumer = Some(Arc::new(consumer));
        Ok(())
    }

    /// Connects `role`'s adapter for `identity`, its store in this rig's
    /// directory, its events drained.
    async fn connect_adapter<H: mev_adapter::Handler>(
        &self,
        namespace: &str,
        role: &str,
        identity: Identity,
        fx: &Fixture,
        handler: Option<H>,
    ) -> anyhow::Result<Adapter<Amqp>> {
        let config = AdapterConfig::new(identity, fx.trust.clone(), fx.verifier.clone(), BROKER_ID)
            .with_data_dir(self.dir.path().join(role));
        let adapter = step(
            &format!("the {role}'s adapter to connect"),
            Adapter::connect(transport(namespace, role), config, handler),
        )
        .await?
        .with_context(|| format!("connecting the {role}'s adapter"))?;
        drain_events(&adapter);
        Ok(adapter)
    }

    pub(crate) fn consumer(&self) -> anyhow::Result<Arc<Adapter<Amqp>>> {
        self.consumer
            .clone()
            .context("the consumer's adapter is not running")
    }

    /// Stops the adapters and the broker and deletes the namespace.
    pub(crate) async fn stop(mut self, fx: &Fixture) {
        if let Some(c) = self.consumer.take() {
            match Arc::try_unwrap(c) {
                Ok(a) => {
                    let _ = tokio::time::timeout(STEP, a.shutdown()).await;
                }
                Err(_) => eprintln!("  exchange: the consumer's adapter is still shared; dropped"),
            }
        }
        if let Some(p) = self.provider.take() {
            let _ = tokio::time::timeout(STEP, p.shutdown()).await;
        }
        if let Some(raw) = self.raw_provider.take() {
            raw.abort();
        }
        if let Some(b) = self.broker.take() {
            let _ = tokio::time::timeout(STEP, b.stop()).await;
        }
        let ns = self.admin.names().namespace().to_string();
        match tokio::time::timeout(STEP, self.admin.delete_topology(&fx.agency_ids)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("  cleanup of {ns} failed: {e}"),
            Err(_) => eprintln!("  cleanup of {ns} timed out"),
        }
    }
}

/// Reads an adapter's events (receipts of replies, notices) so none pile up.
pub(crate) fn drain_events(adapter: &Adapter<Amqp>) {
    if let Some(mut rx) = adapter.events() {
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let AdapterEvent::Receipt(r) = e {
                    if !r.accepted {
                        eprintln!("  exchange: a reply was refused: {} {}", r.code, r.reason);
                    }
                }
            }
        });
    }
}

/// One throughput run of the exchange.
pub(crate) struct ExchangeRun {
    /// First send → every `send_request` returned (all in the outbox on disk).
    pub(crate) send: Duration,
    /// First send → the provider's handler saw the last request.
    pub(crate) handled_at: Duration,
    /// First send → the last reply arrived at the consumer.
    pub(crate) replied_at: Duration,
    pub(crate) handled: u64,
    pub(crate) replies: u64,
    pub(crate) failed: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) batches: u64,
    pub(crate) accepted: u64,
    pub(crate) receipts: u64,
    pub(crate) breached: u64,
    pub(crate) disk_bytes: u64,
    pub(crate) cpu: CpuUse,
    pub(crate) broker_times: BrokerTimes,
}

/// Sends `s.n` requests of the throughput flow, `s.concurrency` at once
/// (each `send_request` returns once the request is in the outbox on disk).
/// Each task yields when its reply came (`wait_reply`) or when its send
/// returned (ns). The semaphore is free again once every send returned.
pub(crate) async fn send_requests(
    consumer: &Arc<Adapter<Amqp>>,
    fx: &Fixture,
    s: &Settings,
    wait_reply: bool,
) -> anyhow::Result<(JoinSet<Result<u64, String>>, Arc<Semaphore>)> {
    let slots = Arc::new(Semaphore::new(s.concurrency));
    let mut tasks = JoinSet::new();
    for _ in 0..s.n {
        let permit = slots.clone().acquire_owned().await?;
        let adapter = consumer.clone();
        let req = fx.request(&fx.throughput);
        tasks.spawn(async move {
            let sent = adapter.send_request(req).await;
            drop(permit);
            let handle = sent.map_err(|e| format!("send_request: {e}"))?;
            if !wait_reply {
                return Ok(now_ns());
            }
            match tokio::time::timeout(REPLY_LIMIT, handle.reply()).await {
                Ok(Ok(_)) => Ok(now_ns()),
                Ok(Err(e)) => Err(format!("reply: {e}")),
                Err(_) => Err(format!("no reply within {REPLY_LIMIT:?}")),
            }
        });
    }
    Ok((tasks, slots))
}

/// One one-way throughput run: first send → the provider's inbox consumer
/// took the `n`th request (the relay's topology: two queues, a final
/// consumer that acks). Returns that time.
pub(crate) async fn one_way_run(fx: &Fixture, s: &Settings) -> anyhow::Result<(Duration, CpuUse)> {
    let rig = ExchangeRig::start_with(fx, &fx.throughput, false).await?;
    let result = one_way_measure(&rig, fx, s).await;
    rig.stop(fx).await;
    result
}

pub(crate) async fn one_way_measure(
    rig: &ExchangeRig,
    fx: &Fixture,
    s: &Settings,
) -> anyhow::Result<(Duration, CpuUse)> {
    let consumer = rig.consumer()?;
    let cpu = Cpu::now();
    let start_ns = now_ns();
    let (mut tasks, _) = send_requests(&consumer, fx, s, false).await?;
    while let Some(r) = tasks.join_next().await {
        r?.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let limit = Instant::now() + REPLY_LIMIT;
    while rig.provider_seen.count.load(Ordering::Relaxed) < s.n as u64 {
        if Instant::now() > limit {
            bail!(
                "one way: {} of {} requests reached the provider's inbox",
                rig.provider_seen.count.load(Ordering::Relaxed),
                s.n
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((
        Duration::from_nanos(
            rig.provider_seen
                .last_ns
                .load(Ordering::Relaxed)
                .saturating_sub(start_ns),
        ),
        Cpu::now().since(&cpu),
    ))
}

pub(crate) async fn exchange_run(fx: &Fixture, s: &Settings) -> anyhow::Result<ExchangeRun> {
    let rig = ExchangeRig::start(fx, &fx.throughput).await?;
    let result = exchange_measure(&rig, fx, s).await;
    rig.stop(fx).await;
    result
}

pub(crate) async fn exchange_measure(
    rig: &ExchangeRig,
    fx: &Fixture,
    s: &Settings,
) -> anyhow::Result<ExchangeRun> {
    let consumer = rig.consumer()?;
    let routing = rig.counters.routing.snapshot();
    let reply = rig.counters.reply.snapshot();
    let log = rig.log_stats();
    let cpu = Cpu::now();
    let start = Instant::now();
    let start_ns = now_ns();
    let (mut tasks, slots) = send_requests(&consumer, fx, s, true).await?;
    let all = slots.acquire_many(s.concurrency as u32).await?;
    let send = start.elapsed();
    drop(all);
    let mut replies = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let mut last_reply_ns = start_ns;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(at)) => {
                replies += 1;
                last_reply_ns = last_reply_ns.max(at);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let cpu = Cpu::now().since(&cpu);
    let snap = rig.counters.snapshot();
    Ok(ExchangeRun {
        cpu,
        broker_times: BrokerTimes::between(&rig.counters, &routing, &reply, log, rig.log_stats()),
        send,
        handled_at: Duration::from_nanos(
            rig.provider_seen
                .last_ns
                .load(Ordering::Relaxed)
                .saturating_sub(start_ns),
        ),
        replied_at: Duration::from_nanos(last_reply_ns - start_ns),
        handled: rig.provider_seen.count.load(Ordering::Relaxed),
        replies,
        failed,
        first_error,
        batches: snap.batches,
        accepted: snap.accepted.values().sum(),
        receipts: snap.receipts,
        breached: snap.sla_total().breached,
        disk_bytes: dir_size(rig.dir.path()),
    })
}

/// The exchange at `rate` requests a second for `secs` seconds, open loop:
/// each request is sent when due, and its round trip timed from then.
pub(crate) async fn exchange_open_loop(
    rig: &ExchangeRig,
    fx: &Fixture,
    rate: f64,
    secs: u64,
) -> anyhow::Result<LatencyStep> {
    let consumer = rig.consumer()?;
    let routing = rig.counters.routing.snapshot();
    let reply = rig.counters.reply.snapshot();
    let log = rig.log_stats();
    let cpu = Cpu::now();
    let sched = Schedule::new(rate, secs);
    *lock(&rig.provider_seen.hist) = Some(histogram());
    rig.provider_seen
        .record_from_ns
        .store(ns_of(sched.warm_until), Ordering::Relaxed);
    let hist = Arc::new(Mutex::new(histogram()));
    let mut tasks = JoinSet::new();
    sched
        .run(|_, due| {
            let adapter = consumer.clone();
            let mut req = fx.request(&fx.latency);
            req.applicant.full_name = format!("{} @{}", req.applicant.full_name, ns_of(due));
            let hist = hist.clone();
            let record = due >= sched.warm_until;
            tasks.spawn(async move {
                let handle = adapter
                    .send_request(req)
                    .await
                    .map_err(|e| format!("send_request: {e}"))?;
                match tokio::time::timeout(REPLY_LIMIT, handle.reply()).await {
                    Ok(Ok(_)) => {
                        if record {
                            let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                            lock(&hist).saturating_record(us);
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("reply: {e}")),
                    Err(_) => Err(format!("no reply within {REPLY_LIMIT:?}")),
                }
            });
            std::future::ready(Ok(()))
        })
        .await?;
    let mut completed = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => completed += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let hist = std::mem::replace(&mut *lock(&hist), histogram());
    rig.provider_seen
        .record_from_ns
        .store(u64::MAX, Ordering::Relaxed);
    let oneway = lock(&rig.provider_seen.hist).take();
    Ok(LatencyStep {
        oneway,
        offered: rate,
        sent: sched.total,
        completed,
        failed,
        hist,
        first_error,
        cpu: Cpu::now().since(&cpu),
        broker: Some(BrokerTimes::between(
            &rig.counters,
            &routing,
            &reply,
            log,
            rig.log_stats(),
        )),
    })
}
