//! Starting and stopping the broker: topology, the pipeline task, CRL
//! refresh, and `mev broker --config FILE`.

use crate::config::BrokerConfig;
use crate::metrics::Counters;
use crate::pipeline::{self, Batching, Context};
use crate::register::Register;
use crate::store::Store;
use anyhow::Context as _;
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Transport, TransportError};
use mev_proto::crypto::{Identity, RingVerifier};
use mev_proto::envelope::Limits;
use mev_proto::trust::{self, TrustStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A broker ready to start over a transport.
pub struct Broker<T: Transport> {
    ctx: Arc<Context>,
    transport: T,
    batching: Batching,
    prefetch: u16,
}

/// A running broker.
pub struct BrokerHandle {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    ctx: Arc<Context>,
}

impl<T: Transport> Broker<T> {
    pub fn new(ctx: Arc<Context>, transport: T, batching: Batching, prefetch: u16) -> Self {
        Broker {
            ctx,
            transport,
            batching,
            prefetch,
        }
    }

    /// Declares the ingress and an inbox for every registered agency (idempotent).
    pub async fn declare_topology(&self) -> Result<(), TransportError> {
        self.transport.declare_ingress().await?;
        for agency in self.ctx.register.agencies() {
            self.transport.declare_inbox(&agency.id).await?;
        }
        Ok(())
    }

    /// Declares the topology and starts consuming the ingress.
    pub async fn start(self) -> Result<BrokerHandle, TransportError> {
        self.declare_topology().await?;
        let ingress = self
            .transport
            .consume(&self.transport.names().ingress_queue(), self.prefetch)
            .await?;
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(pipeline::run(
            self.ctx.clone(),
            self.transport,
            ingress,
            self.batching,
            rx,
        ));
        Ok(BrokerHandle {
            shutdown,
            task,
            ctx: self.ctx,
        })
    }
}

impl BrokerHandle {
    /// The broker's counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.ctx.counters
    }
    /// The broker's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.ctx.store
    }
    /// Stops after the batch in progress.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Loads every CRL file into `trust`.
fn load_crls(trust: &TrustStore, files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for f in files {
        all.extend(trust::crls_from_pem(&read(f)?).with_context(|| format!("{}", f.display()))?);
    }
    trust.set_crls(all).context("loading CRLs")?;
    Ok(())
}

/// Builds the broker's context from its config.
pub fn context_from_config(config: &BrokerConfig) -> anyhow::Result<Arc<Context>> {
    let register = Register::load(&config.broker.register)
        .with_context(|| format!("register {}", config.broker.register.display()))?;
    let trust = TrustStore::from_pem(&read(&config.pki.ca)?).context("trusted CA certificates")?;
    load_crls(&trust, &config.pki.crls)?;
    let identity = Identity::from_pem(&read(&config.pki.key)?, &read(&config.pki.cert)?)
        .context("the broker's key and certificate")?;
    if identity.agency != config.broker.id {
        anyhow::bail!(
            "the broker's certificate is bound to {:?}, but broker.id is {:?}",
            identity.agency,
            config.broker.id
        );
    }
    let store = Store::open(&config.broker.data_dir)
        .with_context(|| format!("store in {}", config.broker.data_dir.display()))?;
    Ok(Arc::new(Context {
        register: Arc::new(register),
        trust: Arc::new(trust),
        verifier: Arc::new(RingVerifier::new()),
        identity,
        store: Arc::new(store),
        limits: Limits {
            max_message_bytes: config.limits.max_message_bytes,
            max_repeated: config.limits.max_repeated,
        },
        max_clock_skew: (config.limits.max_clock_skew_secs > 0)
            .then(|| chrono::TimeDelta::seconds(config.limits.max_clock_skew_secs as i64)),
        counters: Arc::new(Counters::default()),
    }))
}

/// `mev broker --config FILE`: runs until Ctrl-C or SIGTERM.
pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let ctx = context_from_config(&config)?;
    let transport = Amqp::new(
        config.broker.namespace.clone(),
        AmqpConfig {
            url: config.amqp.url.clone(),
            connection_name: format!("mev-broker {}", config.broker.id),
            quorum: config.amqp.quorum,
            max_inbox_length: config.amqp.max_inbox_length,
        },
    );
    transport
        .connect()
        .await
        .context("connecting to RabbitMQ")?;
    let batching = Batching {
        batch_size: config.pipeline.batch_size,
        batch_window: Duration::from_millis(config.pipeline.batch_window_ms),
    };
    let handle = Broker::new(ctx.clone(), transport, batching, config.amqp.prefetch)
        .start()
        .await
        .context("starting the broker")?;
    tracing::info!(namespace = %config.broker.namespace, "broker running");

    if !config.pki.crls.is_empty() {
        let trust = ctx.trust.clone();
        let files = config.pki.crls.clone();
        let every = Duration::from_secs(config.pki.crl_refresh_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = load_crls(&trust, &files) {
                    tracing::warn!(error = %format!("{e:#}"), "CRL refresh failed; keeping the previous CRLs");
                }
            }
        });
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
