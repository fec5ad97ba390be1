//! # mev-adapter: the library an agency embeds
//!
//! An agency's information system uses [`Adapter`] to send signed requests
//! for registered services through the exchange, to serve the requests other
//! agencies send it with an async [`Handler`], and to send status updates.
//! Everything that arrives is verified (the original sender's signature end
//! to end, the exchange's signature on receipts), and no message is handed to
//! a handler twice.
//!
//! Delivery is guaranteed (KZ order §9; Tatarstan §1.3): whatever the adapter
//! sends is written to its durable outbox before the send returns, and is
//! published from there until RabbitMQ confirms it, across outages of the
//! link or the exchange and restarts of the process (give it a
//! [`AdapterConfig::data_dir`]). Receivers drop the copies this may produce
//! by message id.
//!
//! ```no_run
//! # async fn demo(config: mev_adapter::AdapterConfig) -> Result<(), mev_adapter::AdapterError> {
//! use mev_adapter::{Adapter, transport::amqp::{Amqp, AmqpConfig}};
//! let transport = Amqp::new("mev", AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f"));
//! let adapter = Adapter::connect(transport, config, None::<mev_adapter::NoHandler>).await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`transport`]: the transport trait, RabbitMQ and embedded
//!   implementations (the `mev-transport` crate, re-exported).
//! - [`message`]: the plain values an agency sends and receives.
//! - `inbox`: the loop that verifies and dispatches what arrives.
//! - `outbox`: the durable outbox: the group-committing writer task, and
//!   the drain task that publishes it with retries and backoff (the drain
//!   and the outbox's table protocol are `mev_store::outbox`'s, shared with
//!   the broker).
//! - `store`: the adapter's database (outbox records, dedup index, through
//!   `mev-store`); the only module that touches it.
//! - `dedup`: which message ids were already handled (on disk) or are being
//!   handled (in memory).
//! - [`error`]: the adapter's errors.
//!
//! ## Confidential payloads
//! A request's payload may be encrypted to the provider's X25519 agreement
//! key ([`mev_proto::confidential`]), so that the exchange routes it and
//! checks its signature but cannot read it: the sender puts the provider's
//! public key in [`AdapterConfig::recipient_keys`] and calls
//! [`Adapter::send_confidential_request`]; the provider gives its own key as
//! [`AdapterConfig::agreement_key`], and its inbox decrypts the payload before
//! the handler sees it. A request the provider cannot decrypt (no key, a key
//! it does not hold, a ciphertext that does not open) never reaches the
//! handler: the adapter answers it with insufficient data, naming why.

mod dedup;
pub mod error;
mod inbox;
pub mod message;
mod outbox;
mod store;
/// The transport an adapter runs over (re-exported from `mev-transport`).
pub use mev_transport as transport;

#[cfg(test)]
mod tests;

pub use error::AdapterError;
pub use message::{
    AdapterEvent, IncomingReply, IncomingRequest, OutgoingRequest, ReceiptInfo, ReplyBody,
};
pub use mev_proto::confidential::{AgreementKey, RecipientKey, RecipientKeys};
pub use store::StoreError;

use mev_proto::crypto::{Identity, SignatureVerifier};
use mev_proto::envelope::{self, Limits};
use mev_proto::pb::{self, Header, Kind};
use mev_proto::trust::TrustStore;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use transport::{BoxFuture, Outgoing, Route, Transport};

/// A provider's request handler: returns one of the reply kinds.
pub trait Handler: Send + Sync + 'static {
    /// Answers one verified request. Called once per message id.
    fn handle(&self, request: IncomingRequest) -> BoxFuture<'static, ReplyBody>;
}

impl<F, Fut> Handler for F
where
    F: Fn(IncomingRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ReplyBody> + Send + 'static,
{
    fn handle(&self, request: IncomingRequest) -> BoxFuture<'static, ReplyBody> {
        Box::pin(self(request))
    }
}

/// A handler type for adapters that only ask and never serve.
pub struct NoHandler;

impl Handler for NoHandler {
    fn handle(&self, _request: IncomingRequest) -> BoxFuture<'static, ReplyBody> {
        Box::pin(async {
            ReplyBody::NotHeld {
                reason: "this system does not provide services".into(),
                possible_holder: String::new(),
            }
        })
    }
}

/// How an adapter identifies itself and what it trusts.
#[derive(Clone)]
pub struct AdapterConfig {
    /// The agency's signing identity (key and certificate bound to its id).
    pub identity: Identity,
    /// The CAs (and CRLs) that agencies' and the exchange's certificates chain to.
    pub trust: Arc<TrustStore>,
    /// The verifier of signatures (ring's, or a set with a national algorithm).
    pub verifier: Arc<dyn SignatureVerifier>,
    /// The exchange's id in its certificate; receipts and notices must be signed by it.
    pub broker_id: String,
    /// Size limits for what arrives, and the largest message sent (larger
    /// ones are refused with `TooLarge` before they reach the outbox).
    pub limits: Limits,
    /// Unacked deliveries at most; also how many requests are handled at once.
    pub prefetch: u16,
    /// How long handled message ids are remembered to drop redeliveries.
    pub dedup_retention: Duration,
    /// The official named in replies this adapter sends (UZ annex 2 §14 item 7).
    pub official: pb::Official,
    /// Where the outbox and the dedup index are kept: the file
    /// `<data_dir>/adapter-<agency>.redb`. `None` (the default) keeps them
    /// in memory: nothing unsent survives the process.
    pub data_dir: Option<PathBuf>,
    /// How long [`Adapter::shutdown`] lets the outbox drain before it stops
    /// (what is left stays on disk for the next start). Default 5 s.
    pub shutdown_flush: Duration,
    /// This agency's own X25519 agreement key, to decrypt the request
    /// payloads encrypted to it. `None` (the default): such requests are
    /// answered with insufficient data and never reach the handler.
    pub agreement_key: Option<Arc<AgreementKey>>,
    /// The public agreement keys of the providers this agency sends
    /// confidential requests to ([`Adapter::send_confidential_request`]).
    pub recipient_keys: RecipientKeys,
}

impl AdapterConfig {
    /// A config with default limits, prefetch 64, a 7-day dedup window and
    /// the outbox in memory (see [`AdapterConfig::with_data_dir`]).
    pub fn new(
        identity: Identity,
        trust: Arc<TrustStore>,
        verifier: Arc<dyn SignatureVerifier>,
        broker_id: impl Into<String>,
    ) -> Self {
        AdapterConfig {
            identity,
            trust,
            verifier,
            broker_id: broker_id.into(),
            limits: Limits::default(),
            prefetch: 64,
            dedup_retention: Duration::from_secs(7 * 24 * 3600),
            official: pb::Official {
                full_name: "Automated information system".into(),
                position: "system".into(),
                id: String::new(),
            },
            data_dir: None,
            shutdown_flush: Duration::from_secs(5),
            agreement_key: None,
            recipient_keys: RecipientKeys::new(),
        }
    }

    /// The same config, decrypting confidential requests with `key`.
    pub fn with_agreement_key(mut self, key: AgreementKey) -> Self {
        self.agreement_key = Some(Arc::new(key));
        self
    }

    /// The same config, knowing `agency`'s public agreement key.
    pub fn with_recipient_key(mut self, agency: impl Into<String>, key: RecipientKey) -> Self {
        self.recipient_keys.insert(agency, key);
        self
    }

    /// The same config, keeping the outbox and the dedup index on disk in `dir`.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

type ReplyResult = Result<IncomingReply, AdapterError>;

#[derive(Default)]
struct Pending {
    receipts: HashMap<[u8; 32], oneshot::Sender<ReceiptInfo>>,
    replies: HashMap<String, oneshot::Sender<ReplyResult>>,
}

pub(crate) struct Shared<T: Transport> {
    transport: T,
    config: AdapterConfig,
    pending: Mutex<Pending>,
    dedup: dedup::Dedup,
    outbox: outbox::Outbox,
    events: mpsc::Sender<AdapterEvent>,
    /// The store, to stop consuming once it has failed.
    store: Arc<store::Store>,
}

impl<T: Transport> Shared<T> {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn agency(&self) -> &str {
        &self.config.identity.agency
    }

    /// Signs `header` + `payload` into a message for the ingress, and its digest.
    fn seal_for_ingress(
        &self,
        header: Header,
        payload: Vec<u8>,
    ) -> Result<(Outgoing, [u8; 32]), AdapterError> {
        let id = header.message_id.clone();
        let env = envelope::seal(
            header,
            payload,
            self.config.identity.signer.as_ref(),
            &self.config.identity.certificate_chain,
        )?;
        let digest = envelope::sha256(&env.header);
        let body = env.encode_to_vec();
        self.check_size(body.len())?;
        let message = Outgoing {
            route: Route::Ingress,
            body: body.into(),
            message_id: id,
        };
        Ok((message, digest))
    }

    /// Refuses, before it reaches the outbox, a message the exchange would
    /// refuse as too large (or RabbitMQ's `max_message_size` would close the
    /// channel over, stalling the outbox behind it).
    fn check_size(&self, len: usize) -> Result<(), AdapterError> {
        let max = self.config.limits.max_message_bytes;
        if len > max {
            return Err(AdapterError::Invalid(mev_proto::Rejection::new(
                mev_proto::ErrorCode::TooLarge,
                format!("the signed message is {len} bytes; at most {max} are accepted"),
            )));
        }
        Ok(())
    }
}

/// A request on its way: yields the exchange's receipt, then the reply.
pub struct RequestHandle {
    /// The request's message id.
    pub message_id: String,
    /// SHA-256 of the signed header: what the receipt names.
    pub digest: [u8; 32],
    receipt: Option<oneshot::Receiver<ReceiptInfo>>,
    reply: oneshot::Receiver<ReplyResult>,
}

impl RequestHandle {
    /// The exchange's signed receipt (positive or negative).
    pub async fn receipt(&mut self) -> Result<ReceiptInfo, AdapterError> {
        match self.receipt.take() {
            Some(rx) => rx.await.map_err(|_| AdapterError::Closed),
            None => Err(AdapterError::Closed),
        }
    }

    /// The reply; an error if the exchange rejected the request.
    pub async fn reply(self) -> Result<IncomingReply, AdapterError> {
        self.reply.await.map_err(|_| AdapterError::Closed)?
    }
}

/// A connected agency.
pub struct Adapter<T: Transport> {
    shared: Arc<Shared<T>>,
    shutdown: watch::Sender<bool>,
    stop_drain: watch::Sender<bool>,
    inbox_task: Option<tokio::task::JoinHandle<()>>,
    drain_task: Option<tokio::task::JoinHandle<()>>,
    writer_task: Option<tokio::task::JoinHandle<()>>,
    events: Mutex<Option<mpsc::Receiver<AdapterEvent>>>,
    #[cfg(test)]
    store: Arc<store::Store>,
}

impl<T: Transport> Adapter<T> {
    /// Connects as `config.identity.agency`: opens its store (the outbox and
    /// the dedup index), starts draining what is left in the outbox from an
    /// earlier run, consumes the agency's inbox (declared by the exchange)
    /// and, with a handler, serves requests.
    ///
    /// Succeeds while RabbitMQ is unreachable: the inbox is consumed and the
    /// outbox drained once the link is up. Fails on a store that cannot be
    /// opened and on a missing inbox queue or refused access.
    pub async fn connect<H: Handler>(
        transport: T,
        config: AdapterConfig,
        handler: Option<H>,
    ) -> Result<Self, AdapterError> {
        let agency = config.identity.agency.clone();
        let store = {
            let dir = config.data_dir.clone();
            let agency = agency.clone();
            tokio::task::spawn_blocking(move || store::Store::open(dir.as_deref(), &agency))
                .await
                .map_err(|e| StoreError::Database(format!("opening the store panicked: {e}")))??
        };
        let store = Arc::new(store);
        let (outbox, writer_task) = outbox::Outbox::start(
            store.clone(),
            config.dedup_retention,
            usize::from(config.prefetch / 2),
        )?;
        let inbox = transport.names().inbox_queue(&agency);
        let consumer = match transport.consume(&inbox, config.prefetch).await {
            Ok(c) => c,
            Err(e) => {
                outbox.close().await;
                let _ = writer_task.await;
                return Err(e.into());
            }
        };
        let (stop_drain, stop_drain_rx) = watch::channel(false);
        let drain_task = tokio::spawn(outbox::drain(
            transport.clone(),
            outbox.drain_parts(store.clone()),
            stop_drain_rx,
        ));
        let (events_tx, events_rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            dedup: dedup::Dedup::new(store.clone()),
            outbox,
            transport,
            config,
            pending: Mutex::new(Pending::default()),
            events: events_tx,
            store: store.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handler: Option<Arc<dyn Handler>> = handler.map(|h| Arc::new(h) as Arc<dyn Handler>);
        let inbox_task = tokio::spawn(inbox::run(shared.clone(), consumer, handler, shutdown_rx));
        Ok(Adapter {
            shared,
            shutdown,
            stop_drain,
            inbox_task: Some(inbox_task),
            drain_task: Some(drain_task),
            writer_task: Some(writer_task),
            events: Mutex::new(Some(events_rx)),
            #[cfg(test)]
            store,
        })
    }

    /// The transport this adapter sends and receives over.
    pub fn transport(&self) -> &T {
        &self.shared.transport
    }

    /// This agency's id.
    pub fn agency(&self) -> &str {
        self.shared.agency()
    }

    /// Notices, status updates, and receipts and replies nobody waits on.
    /// Can be taken once.
    pub fn events(&self) -> Option<mpsc::Receiver<AdapterEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Signs and sends a request; returns once it is in the durable outbox
    /// (not waiting for RabbitMQ: see [`Adapter::flush`]).
    pub async fn send_request(&self, req: OutgoingRequest) -> Result<RequestHandle, AdapterError> {
        let (header, payload) = req.into_parts(self.agency());
        mev_proto::validate::validate(&header).map_err(AdapterError::Invalid)?;
        self.send_header(header, payload).await
    }

    /// Like [`Adapter::send_request`], with the payload encrypted to the
    /// recipient's agreement key from [`AdapterConfig::recipient_keys`]: the
    /// exchange checks the signature and the digest (of the ciphertext) but
    /// cannot read the payload, nor check it against the service's schema.
    /// [`AdapterError::Invalid`] if the recipient's key is not configured.
    pub async fn send_confidential_request(
        &self,
        req: OutgoingRequest,
    ) -> Result<RequestHandle, AdapterError> {
        let (mut header, payload) = req.into_parts(self.agency());
        mev_proto::validate::validate(&header).map_err(AdapterError::Invalid)?;
        let key = self
            .shared
            .config
            .recipient_keys
            .get(&header.recipient)
            .ok_or_else(|| {
                AdapterError::Invalid(mev_proto::Rejection::new(
                    mev_proto::ErrorCode::InvalidField,
                    format!(
                        "header.recipient: no agreement key for {} in AdapterConfig::recipient_keys",
                        header.recipient
                    ),
                ))
            })?;
        let ciphertext = mev_proto::confidential::encrypt_payload(&mut header, &payload, key)
            .map_err(|e| {
                AdapterError::Invalid(mev_proto::Rejection::new(
                    mev_proto::ErrorCode::InvalidField,
                    format!("payload encryption: {e}"),
                ))
            })?;
        self.send_header(header, ciphertext).await
    }

    /// Sends a raw header and payload as they are (no validation): for tests
    /// and tools that must produce unusual messages.
    pub async fn send_header(
        &self,
        header: Header,
        payload: Vec<u8>,
    ) -> Result<RequestHandle, AdapterError> {
        let bytes = self.seal(header, payload)?;
        self.send_raw(bytes).await
    }

    /// Puts already encoded envelope bytes in the outbox as they are, and
    /// waits for the receipt by the digest of their header (for tests and
    /// tools that must produce tampered or unusual messages). Bytes that are
    /// not an envelope get a handle whose receipt never comes.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<RequestHandle, AdapterError> {
        self.shared.check_size(bytes.len())?;
        let (id, digest) = match mev_proto::Envelope::decode(bytes.as_slice()) {
            Ok(env) => {
                let id = Header::decode(env.header.as_slice())
                    .map(|h| h.message_id)
                    .unwrap_or_default();
                (id, envelope::sha256(&env.header))
            }
            Err(_) => (String::new(), envelope::sha256(&bytes)),
        };
        let (rtx, rrx) = oneshot::channel();
        let (ptx, prx) = oneshot::channel();
        {
            let mut p = self.shared.pending();
            p.receipts.insert(digest, rtx);
            p.replies.insert(id.clone(), ptx);
        }
        let message = Outgoing {
            route: Route::Ingress,
            body: bytes.into(),
            message_id: id.clone(),
        };
        if let Err(e) = self.shared.outbox.commit(vec![message], Vec::new()).await {
            let mut p = self.shared.pending();
            p.receipts.remove(&digest);
            p.replies.remove(&id);
            return Err(e);
        }
        Ok(RequestHandle {
            message_id: id,
            digest,
            receipt: Some(rrx),
            reply: prx,
        })
    }

    /// Signs a header and payload into envelope bytes without sending them.
    pub fn seal(&self, header: Header, payload: Vec<u8>) -> Result<Vec<u8>, AdapterError> {
        Ok(envelope::seal(
            header,
            payload,
            self.shared.config.identity.signer.as_ref(),
            &self.shared.config.identity.certificate_chain,
        )?
        .encode_to_vec())
    }

    /// Sends a status update about an application to another agency (KZ
    /// order §5.1, §8); returns its digest once it is in the durable outbox.
    pub async fn send_status(
        &self,
        recipient: &str,
        request_id: &str,
        official: pb::Official,
        status: pb::StatusUpdate,
    ) -> Result<[u8; 32], AdapterError> {
        let header = Header {
            message_id: uuid::Uuid::now_v7().to_string(),
            kind: Kind::Status as i32,
            in_reply_to: request_id.to_string(),
            sender: self.agency().to_string(),
            recipient: recipient.to_string(),
            sent_at: Some(mev_proto::time::to_wire(chrono::Utc::now())),
            official: Some(official),
            payload_schema: "mev.v1.StatusUpdate".into(),
            classification: pb::Classification::PersonalData as i32,
            ..Default::default()
        };
        mev_proto::validate::validate(&header).map_err(AdapterError::Invalid)?;
        let (message, digest) = self
            .shared
            .seal_for_ingress(header, status.encode_to_vec())?;
        self.shared.outbox.commit(vec![message], Vec::new()).await?;
        Ok(digest)
    }

    /// How many requests await a receipt or a reply.
    pub fn in_flight(&self) -> usize {
        self.shared.pending().replies.len()
    }

    /// Why the adapter's store failed, if it has: a write, sync or commit
    /// failed (EIO, a full disk). The adapter then stops consuming its
    /// inbox (unacked deliveries return to the queue), and every send fails
    /// with [`StoreError::Failed`] rather than being retried: shut it down
    /// and connect again once the disk is fixed (its redo log replays;
    /// nothing a send returned for is lost).
    pub fn store_failure(&self) -> Option<String> {
        self.shared.store.failure()
    }

    /// Messages in the outbox (on disk) not yet confirmed by RabbitMQ.
    pub fn outbox_depth(&self) -> u64 {
        self.shared.outbox.depth()
    }

    /// Waits until RabbitMQ has confirmed everything sent so far (the
    /// outbox is empty), for at most `timeout`
    /// ([`AdapterError::Timeout`] after it; nothing is lost).
    pub async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        self.shared.outbox.flush(timeout).await
    }

    /// Stops consuming, lets handlers in progress finish (their replies go
    /// to the outbox), lets the outbox drain for up to
    /// [`AdapterConfig::shutdown_flush`], stops the drain and closes the
    /// store. What RabbitMQ has not confirmed stays in the outbox for the
    /// next start (with a [`AdapterConfig::data_dir`]).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.inbox_task.take() {
            let _ = task.await;
        }
        if self.outbox_depth() > 0 {
            let grace = self.shared.config.shutdown_flush;
            if self.flush(grace).await.is_err() {
                tracing::warn!(
                    agency = self.agency(),
                    left = self.outbox_depth(),
                    "outbox not drained at shutdown; kept for the next start"
                );
            }
        }
        let _ = self.stop_drain.send(true);
        if let Some(mut task) = self.drain_task.take() {
            // A publish in progress is let finish, within reason; what it
            // did not get confirmed stays in the outbox.
            if tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        self.shared.outbox.close().await;
        if let Some(task) = self.writer_task.take() {
            let _ = task.await;
        }
    }

    /// The store (tests: counting its durable commits).
    #[cfg(test)]
    pub(crate) fn store(&self) -> &store::Store {
        &self.store
    }
}

impl<T: Transport> Drop for Adapter<T> {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.stop_drain.send(true);
    }
}
