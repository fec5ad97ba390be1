//! RabbitMQ through lapin: durable quorum queues, persistent messages,
//! publisher confirms, manual acks, bounded prefetch.
//!
//! The connection is opened lazily and re-opened after it is lost; a consumer
//! started while RabbitMQ is unreachable subscribes once it is back, and one
//! re-subscribes on its own after a reconnection (RabbitMQ redelivers what was
//! unacked, flagged `redelivered`). Publishes whose confirm was lost fail with
//! [`TransportError::Connection`]; callers keep them (the outboxes) and publish
//! again, and receivers drop the duplicates by message id.

use super::{
    AckHandle, BoxFuture, Confirms, Consumer, Delivery, Names, Outgoing, QueueDepth, Route,
    Topology, Transport, TransportError,
};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

/// Settings of the AMQP transport.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// Connection name shown in the RabbitMQ management UI.
    pub connection_name: String,
    /// Declare queues as quorum queues (durable, replicated). Default true.
    pub quorum: bool,
    /// Maximum messages per inbox; past it, publishes are nacked
    /// (`x-overflow = reject-publish`) and stay in the sender's outbox. 0 = unbounded.
    pub max_inbox_length: u32,
    /// TLS for `amqps://` URLs; required for them, ignored for `amqp://`.
    pub tls: Option<AmqpTls>,
}

/// TLS to RabbitMQ (rustls on ring). Only the CA certificates given here are
/// trusted, never the system's roots: RabbitMQ's certificate must chain to
/// them and name the URL's host (a DNS name or an IP address).
#[derive(Clone)]
pub struct AmqpTls {
    /// PEM CA certificates that issued RabbitMQ's server certificate.
    pub ca_pem: String,
    /// The client certificate chain and its PKCS#8 key (both PEM), for
    /// RabbitMQ listeners that ask for one (`fail_if_no_peer_cert`).
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for AmqpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("AmqpTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl AmqpTls {
    /// Reads the CA file and, if given, the client certificate and key files.
    pub fn from_files(
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> std::io::Result<AmqpTls> {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let ca_pem = String::from_utf8(read(ca)?).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a PEM file", ca.display()),
            )
        })?;
        if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: no PEM certificate in it", ca.display()),
            ));
        }
        let client = match client {
            Some((cert, key)) => Some(ClientIdentity {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            }),
            None => None,
        };
        Ok(AmqpTls { ca_pem, client })
    }

    fn owned(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: self
                .client
                .as_ref()
                .map(|c| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: c.cert_pem.clone(),
                    key: c.key_pem.clone(),
                }),
            cert_chain: Some(self.ca_pem.clone()),
        }
    }
}

impl AmqpConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        AmqpConfig {
            url: url.into(),
            connection_name: "mev".into(),
            quorum: true,
            max_inbox_length: 0,
            tls: None,
        }
    }
}

/// How long one protocol step (connect, open a channel, subscribe, publish)
/// may take before the link is taken for dead and rebuilt: a connection cut
/// at the wrong moment must not leave a task waiting for a reply for ever.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a publisher confirm may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiting consumer checks that its channel is still open.
const CONSUMER_CHECK: Duration = Duration::from_secs(2);

/// `fut`, or a connection error if it takes longer than `limit`.
async fn timed<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Connection(format!(
            "{what}: no answer within {} s",
            limit.as_secs()
        ))),
    }
}

#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    publisher: Channel,
}

struct Inner {
    config: AmqpConfig,
    live: Mutex<Option<Live>>,
}

/// The RabbitMQ transport. Clones share one connection.
#[derive(Clone)]
pub struct Amqp {
    names: Names,
    inner: Arc<Inner>,
}

fn map_err(e: lapin::Error) -> TransportError {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                TransportError::AccessRefused(e.to_string())
            }
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                TransportError::NoSuchQueue(e.to_string())
            }
            AMQPErrorKind::Hard(_) => TransportError::Connection(e.to_string()),
            _ => TransportError::Other(e.to_string()),
        },
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::InvalidChannel(_)
        | lapin::ErrorKind::MissingHeartbeatError => TransportError::Connection(e.to_string()),
        _ => TransportError::Other(e.to_string()),
    }
}

impl Amqp {
    /// A transport for `config` under `namespace`. Connects lazily; use
    /// [`Amqp::connect`] to fail fast when RabbitMQ is unreachable.
    pub fn new(namespace: impl Into<String>, config: AmqpConfig) -> Self {
        Amqp {
            names: Names::new(namespace),
            inner: Arc::new(Inner {
                config,
                live: Mutex::new(None),
            }),
        }
    }

    /// Opens the connection now.
    pub async fn connect(&self) -> Result<(), TransportError> {
        self.live().await.map(|_| ())
    }

    async fn live(&self) -> Result<Live, TransportError> {
        let mut guard = self.inner.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() && live.publisher.status().connected() {
                return Ok(live.clone());
            }
        }
        *guard = None;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.inner.config.connection_name.as_str()));
        let url = self.inner.config.url.clone();
        let tls = match (&self.inner.config.tls, url.starts_with("amqps://")) {
            (Some(tls), true) => tls.owned(),
            (None, true) => {
                return Err(TransportError::Connection(
                    "an amqps:// URL needs AmqpConfig::tls with the CA that issued RabbitMQ's certificate".into(),
                ))
            }
            (_, false) => lapin::tcp::OwnedTLSConfig::default(),
        };
        let connection = timed("connecting", STEP_TIMEOUT, async {
            let runtime = lapin::runtime::default_runtime()
                .map_err(|e| TransportError::Connection(e.to_string()))?;
            Connection::connect_with_config(&url, props, tls, runtime)
                .await
                .map_err(|e| TransportError::Connection(e.to_string()))
        })
        .await?;
        let publisher = timed("opening a channel", STEP_TIMEOUT, async {
            connection.create_channel().await.map_err(map_err)
        })
        .await?;
        timed("enabling confirms", STEP_TIMEOUT, async {
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(map_err)
        })
        .await?;
        let live = Live {
            connection: Arc::new(connection),
            publisher,
        };
        *guard = Some(live.clone());
        Ok(live)
    }

    async fn reset(&self) {
        *self.inner.live.lock().await = None;
    }

    fn queue_args(&self, inbox: bool) -> FieldTable {
        let mut args = FieldTable::default();
        if self.inner.config.quorum {
            args.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        if inbox && self.inner.config.max_inbox_length > 0 {
            args.insert(
                ShortString::from("x-max-length"),
                AMQPValue::LongUInt(self.inner.config.max_inbox_length),
            );
            args.insert(
                ShortString::from("x-overflow"),
                AMQPValue::LongString(LongString::from("reject-publish")),
            );
        }
        args
    }

    async fn declare(
        &self,
        exchange: String,
        queue: String,
        key: String,
        inbox: bool,
    ) -> Result<(), TransportError> {
        let live = self.live().await?;
        let ch = live.connection.create_channel().await.map_err(map_err)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            self.queue_args(inbox),
        )
        .await
        .map_err(map_err)?;
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    fn address(&self, route: &Route) -> (String, String) {
        match route {
            Route::Ingress => (self.names.ingress_exchange(), String::new()),
            Route::Inbox(agency) => (self.names.deliver_exchange(), agency.clone()),
            Route::Queue(name) => (String::new(), name.clone()),
        }
    }

    /// A consumer of `queue` on a channel of its own (returned too, so the
    /// consuming task can tell when it is gone).
    async fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<(lapin::Consumer, Channel), TransportError> {
        let live = self.live().await?;
        timed("subscribing", STEP_TIMEOUT, async {
            let ch = live.connection.create_channel().await.map_err(map_err)?;
            ch.basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(map_err)?;
            let consumer = ch
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(map_err)?;
            Ok((consumer, ch))
        })
        .await
    }
}

/// Numbers each subscription (its own channel), so that a batch of
/// deliveries can be acked with one `multiple` ack per channel.
static SUBSCRIPTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct AmqpAck {
    acker: lapin::Acker,
    subscription: u64,
}

impl AmqpAck {
    fn ack_with(&self, multiple: bool) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(timed("acking", STEP_TIMEOUT, async move {
            self.acker
                .ack(BasicAckOptions { multiple })
                .await
                .map(|_| ())
                .map_err(map_err)
        }))
    }
}

impl AckHandle for AmqpAck {
    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.ack_with(false)
    }
    fn subscription(&self) -> Option<u64> {
        Some(self.subscription)
    }
    fn ack_through(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.ack_with(true)
    }
    fn requeue(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(timed("returning a message", STEP_TIMEOUT, async move {
            self.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(map_err)
        }))
    }
}

impl Transport for Amqp {
    fn names(&self) -> &Names {
        &self.names
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Vec<Result<(), TransportError>> {
        self.publish_start(messages).await.await
    }

    async fn publish_start(&self, messages: Vec<Outgoing>) -> Confirms {
        let n = messages.len();
        let live = match self.live().await {
            Ok(l) => l,
            Err(e) => return Box::pin(std::future::ready(vec![Err(e); n])),
        };
        // Every publish is started before any is awaited: each registers
        // its confirm and queues its frames in its first poll, in order on
        // this task, and the I/O loop then writes them together instead of
        // one socket write (and one wake-up) per message.
        let published = futures_util::future::join_all(messages.iter().map(|m| {
            let (exchange, key) = self.address(&m.route);
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(m.message_id.as_str()));
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let publisher = &live.publisher;
            timed("publishing", STEP_TIMEOUT, async move {
                publisher
                    .basic_publish(exchange.into(), key.into(), opts, &m.body, props)
                    .await
                    .map_err(map_err)
            })
        }))
        .await;
        let routes: Vec<Route> = messages.into_iter().map(|m| m.route).collect();
        let this = self.clone();
        Box::pin(async move {
            // One deadline for the round: confirms that never come (a
            // half-open connection) fail it in CONFIRM_TIMEOUT, not n times that.
            let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
            let mut broken = false;
            let mut out = Vec::with_capacity(n);
            for (p, route) in published.into_iter().zip(routes) {
                out.push(match p {
                    Err(e) => {
                        broken = true;
                        Err(e)
                    }
                    Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                        Err(_) => {
                            broken = true;
                            Err(TransportError::Connection(format!(
                                "no publisher confirm within {} s",
                                CONFIRM_TIMEOUT.as_secs()
                            )))
                        }
                        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                        Ok(Ok(Confirmation::Ack(Some(_)))) => {
                            Err(TransportError::Unroutable(route))
                        }
                        Ok(Ok(Confirmation::Nack(_))) => Err(TransportError::Nacked),
                        Ok(Ok(Confirmation::NotRequested)) => {
                            Err(TransportError::Other("publisher confirms are off".into()))
                        }
                        Ok(Err(e)) => {
                            broken = true;
                            Err(map_err(e))
                        }
                    },
                });
            }
            if broken {
                this.reset().await;
            }
            out
        })
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, TransportError> {
        // The first subscription fails fast on what waiting will not mend (a
        // missing queue, refused access); while the link is down it starts
        // the retry loop instead, so an adapter can start offline. Later
        // subscriptions retry until the link is back.
        let first = match self.subscribe(queue, prefetch).await {
            Ok(s) => Some(s),
            Err(TransportError::Connection(e)) => {
                tracing::warn!(%queue, error = %e, "message broker unreachable; consuming once it is back");
                self.reset().await;
                None
            }
            Err(e) => return Err(e),
        };
        let (tx, rx) = mpsc::channel(prefetch.max(1) as usize);
        let this = self.clone();
        let queue = queue.to_string();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut current = first;
            loop {
                if let Some((mut stream, channel)) = current.take() {
                    let subscription = SUBSCRIPTIONS.fetch_add(1, Ordering::Relaxed);
                    loop {
                        // A connection cut at the wrong moment can leave the
                        // stream waiting for ever: check the channel too.
                        let item = tokio::select! {
                            item = stream.next() => item,
                            _ = tokio::time::sleep(CONSUMER_CHECK) => {
                                if channel.status().connected() {
                                    continue;
                                }
                                tracing::warn!(%queue, "consumer's channel closed; subscribing again");
                                break;
                            }
                        };
                        let Some(item) = item else { break };
                        match item {
                            Ok(d) => {
                                backoff = Duration::from_millis(100);
                                let delivery = Delivery::new(
                                    d.data,
                                    d.redelivered,
                                    Box::new(AmqpAck {
                                        acker: d.acker,
                                        subscription,
                                    }),
                                );
                                if tx.send(delivery).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(%queue, error = %e, "consumer interrupted");
                                break;
                            }
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match this.subscribe(&queue, prefetch).await {
                        Ok(s) => {
                            tracing::info!(%queue, "consumer subscribed");
                            current = Some(s);
                            break;
                        }
                        Err(TransportError::Connection(e)) => {
                            tracing::debug!(%queue, error = %e, "subscribe failed; link down");
                            this.reset().await;
                        }
                        Err(e) => {
                            tracing::warn!(%queue, error = %e, "subscribe failed");
                        }
                    }
                }
            }
        });
        Ok(Consumer::new(rx))
    }
}

impl Topology for Amqp {
    async fn declare_ingress(&self) -> Result<(), TransportError> {
        self.declare(
            self.names.ingress_exchange(),
            self.names.ingress_queue(),
            String::new(),
            false,
        )
        .await
    }
    async fn declare_inbox(&self, agency: &str) -> Result<(), TransportError> {
        self.declare(
            self.names.deliver_exchange(),
            self.names.inbox_queue(agency),
            agency.to_string(),
            true,
        )
        .await
    }
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, TransportError> {
        let live = self.live().await?;
        let ch = live.connection.create_channel().await.map_err(map_err)?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(map_err)?;
        let _ = ch.close(200, "depth".into()).await;
        Ok(QueueDepth {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        })
    }
    async fn delete_topology(&self, agencies: &[String]) -> Result<(), TransportError> {
        let live = self.live().await?;
        let ch = live.connection.create_channel().await.map_err(map_err)?;
        let mut queues = vec![self.names.ingress_queue()];
        queues.extend(agencies.iter().map(|a| self.names.inbox_queue(a)));
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(map_err)?;
        }
        for x in [self.names.ingress_exchange(), self.names.deliver_exchange()] {
            ch.exchange_delete(x.as_str().into(), Default::default())
                .await
                .map_err(map_err)?;
        }
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }
}
