//! # mev-transport: how bytes move between the agencies, the broker and the queues
//!
//! Two small traits with two implementations each, [`amqp::Amqp`] (RabbitMQ
//! through lapin, durable quorum queues, publisher confirms, manual acks) and
//! [`embedded::Embedded`] (in-process, for the demo and unit tests):
//! - [`Transport`]: what an agency needs: publish with confirms, consume,
//!   acknowledge;
//! - [`Topology`]: what only the broker or an operator needs on top: declare
//!   the exchanges and queues, read a queue's depth.
//!
//! The broker and the adapter speak only these traits, so the same code runs
//! over both. [`backoff`] is the capped, jittered exponential back-off their
//! retries share.
//!
//! Names live under a namespace so several deployments (and parallel tests)
//! share one RabbitMQ: exchange and queue `{ns}.ingress`, which agencies
//! publish to; exchange `{ns}.deliver`, routing by agency id to the queues
//! `{ns}.inbox.{agency}`.

pub mod amqp;
pub mod backoff;
pub mod embedded;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Queue and exchange names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    namespace: String,
}

impl Names {
    /// Names under `namespace` (letters, digits, `-`, `_`, `.`).
    pub fn new(namespace: impl Into<String>) -> Self {
        Names {
            namespace: namespace.into(),
        }
    }
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The exchange agencies publish to.
    pub fn ingress_exchange(&self) -> String {
        format!("{}.ingress", self.namespace)
    }
    /// The queue the broker consumes.
    pub fn ingress_queue(&self) -> String {
        format!("{}.ingress", self.namespace)
    }
    /// The exchange the broker delivers through, keyed by agency id.
    pub fn deliver_exchange(&self) -> String {
        format!("{}.deliver", self.namespace)
    }
    /// An agency's inbox queue.
    pub fn inbox_queue(&self, agency: &str) -> String {
        format!("{}.inbox.{}", self.namespace, agency)
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// The broker's ingress.
    Ingress,
    /// An agency's inbox.
    Inbox(String),
    /// A queue by its full name (replays, tests).
    Queue(String),
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub route: Route,
    pub body: Arc<[u8]>,
    /// The AMQP message id property (the envelope's message id, for tracing).
    pub message_id: String,
}

/// Message and consumer counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready for delivery.
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Why a transport operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection is down or was lost; the operation may be retried.
    #[error("connection to the message broker is unavailable: {0}")]
    Connection(String),
    /// The broker refused the message (nack, e.g. a full queue with reject-publish).
    #[error("the message broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the route.
    #[error("no queue for route {0:?}")]
    Unroutable(Route),
    /// The queue does not exist.
    #[error("queue {0} does not exist")]
    NoSuchQueue(String),
    /// The credentials lack a permission (RabbitMQ ACCESS_REFUSED).
    #[error("access refused: {0}")]
    AccessRefused(String),
    /// Anything else the broker reported.
    #[error("message broker error: {0}")]
    Other(String),
}

impl TransportError {
    /// Whether retrying later can succeed (outage, nack, missing route that may appear).
    pub fn can_be_recovered(&self) -> bool {
        matches!(
            self,
            TransportError::Connection(_) | TransportError::Nacked | TransportError::Unroutable(_)
        )
    }
}

/// The confirms of a round of publishes ([`Transport::publish_start`]).
pub type Confirms = BoxFuture<'static, Vec<Result<(), TransportError>>>;

/// A boxed future, for the ack handles of deliveries.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Acknowledges or returns one delivery.
pub trait AckHandle: Send + Sync {
    /// Acknowledge: the message is done with.
    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Return the message to the queue for redelivery.
    fn requeue(&self) -> BoxFuture<'_, Result<(), TransportError>>;
    /// The subscription (AMQP channel) the delivery came on, where the
    /// transport can acknowledge every earlier delivery of it at once
    /// ([`AckHandle::ack_through`]); `None` where it cannot.
    fn subscription(&self) -> Option<u64> {
        None
    }
    /// Acknowledges this delivery and every earlier one of its subscription
    /// not acknowledged yet (AMQP's `basic.ack` with `multiple`). Called
    /// only where [`AckHandle::subscription`] is `Some`.
    fn ack_through(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.ack()
    }
}

/// Acknowledges every delivery of `batch` with as few frames as the
/// transport allows: one `multiple` ack per subscription, on its last
/// delivery in the batch, where the transport supports it, else one each.
///
/// The caller must have settled (acked or returned) every delivery its
/// consumer gave it before the batch's last one of each subscription, but
/// for those in `batch`: a `multiple` ack covers whatever came before.
/// On failure returns how many deliveries may be left unacked (they come
/// back when the channel closes) and the error.
pub async fn ack_all(batch: &[Delivery]) -> Result<(), (usize, TransportError)> {
    let mut last: Vec<(u64, usize)> = Vec::new();
    for (i, d) in batch.iter().enumerate() {
        match d.acker.subscription() {
            Some(sub) => match last.iter_mut().find(|(s, _)| *s == sub) {
                Some(entry) => entry.1 = i,
                None => last.push((sub, i)),
            },
            None => {
                d.ack().await.map_err(|e| (batch.len() - i, e))?;
            }
        }
    }
    for (n, (_, i)) in last.iter().enumerate() {
        batch[*i]
            .acker
            .ack_through()
            .await
            .map_err(|e| (last.len() - n, e))?;
    }
    Ok(())
}

/// One message taken from a queue; it stays with the consumer until acked.
pub struct Delivery {
    pub body: Vec<u8>,
    /// Whether the queue delivered it before (after a requeue or a lost consumer).
    pub redelivered: bool,
    acker: Box<dyn AckHandle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.body.len())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    /// A delivery with its ack handle (for transport implementations).
    pub fn new(body: Vec<u8>, redelivered: bool, acker: Box<dyn AckHandle>) -> Self {
        Delivery {
            body,
            redelivered,
            acker,
        }
    }
    /// Acknowledge the delivery.
    pub async fn ack(&self) -> Result<(), TransportError> {
        self.acker.ack().await
    }
    /// Return it to the queue.
    pub async fn requeue(&self) -> Result<(), TransportError> {
        self.acker.requeue().await
    }
}

/// A stream of deliveries from one queue.
pub struct Consumer {
    rx: tokio::sync::mpsc::Receiver<Delivery>,
}

impl Consumer {
    /// Wraps a channel fed by a transport's consuming task.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Delivery>) -> Self {
        Consumer { rx }
    }
    /// The next delivery, or `None` once the consumer is closed for good.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
    /// A delivery if one is ready now.
    pub fn try_next(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }
}

/// What an agency (and the broker) needs from a message broker: publish
/// with confirms, consume with manual acks.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The names of this deployment.
    fn names(&self) -> &Names;
    /// Publishes every message, with all confirms in flight together; one
    /// result per message, in order. `Ok` means the broker confirmed it.
    fn publish_batch(
        &self,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Vec<Result<(), TransportError>>> + Send;
    /// Consumes `queue` with manual acks and at most `prefetch` unacked deliveries.
    /// The consumer survives reconnections where the transport supports them.
    fn consume(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> impl Future<Output = Result<Consumer, TransportError>> + Send;
    /// Publishes every message and returns their confirms to await later,
    /// one result per message, in order: a drain keeps several rounds in
    /// flight instead of waiting out each. Rounds must be started one after
    /// another (not from concurrent tasks), so that confirms match the
    /// order RabbitMQ numbers publishes in. By default the whole of
    /// [`Transport::publish_batch`] runs first.
    // The confirms are a future on purpose: awaited later, by the caller.
    #[allow(clippy::async_yields_async)]
    fn publish_start(&self, messages: Vec<Outgoing>) -> impl Future<Output = Confirms> + Send {
        async move {
            let results = self.publish_batch(messages).await;
            let ready: Confirms = Box::pin(std::future::ready(results));
            ready
        }
    }
    /// Publishes one message and awaits its confirm.
    fn publish(
        &self,
        message: Outgoing,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            self.publish_batch(vec![message])
                .await
                .pop()
                .unwrap_or_else(|| Err(TransportError::Other("no confirm".into())))
        }
    }
}

/// What only the broker or an operator needs on top of [`Transport`]: the
/// exchanges and queues of a deployment, and how full they are.
pub trait Topology: Transport {
    /// Declares the ingress exchange and queue (idempotent).
    fn declare_ingress(&self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Declares an agency's inbox and its binding (idempotent).
    fn declare_inbox(
        &self,
        agency: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Message and consumer counts of a queue (a passive declare on RabbitMQ).
    fn queue_depth(
        &self,
        queue: &str,
    ) -> impl Future<Output = Result<QueueDepth, TransportError>> + Send;
    /// Deletes the ingress, the inboxes of `agencies` and the exchanges of
    /// this namespace (test clean-up, decommissioning a deployment).
    fn delete_topology(
        &self,
        agencies: &[String],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records which deliveries were acked, and how.
    struct Recorder {
        index: usize,
        subscription: Option<u64>,
        log: Arc<Mutex<Vec<(usize, &'static str)>>>,
    }

    impl AckHandle for Recorder {
        fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "ack"));
            Box::pin(std::future::ready(Ok(())))
        }
        fn requeue(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "requeue"));
            Box::pin(std::future::ready(Ok(())))
        }
        fn subscription(&self) -> Option<u64> {
            self.subscription
        }
        fn ack_through(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            self.log.lock().unwrap().push((self.index, "through"));
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[tokio::test]
    async fn a_batch_is_acked_once_per_subscription_on_its_last_delivery() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let subs = [Some(1), Some(1), Some(2), None, Some(1), Some(2), None];
        let batch: Vec<Delivery> = subs
            .iter()
            .enumerate()
            .map(|(index, subscription)| {
                let acker = Recorder {
                    index,
                    subscription: *subscription,
                    log: log.clone(),
                };
                Delivery::new(Vec::new(), false, Box::new(acker))
            })
            .collect();
        ack_all(&batch).await.unwrap();
        let mut got = log.lock().unwrap().clone();
        got.sort();
        // Subscription 1's last delivery is 4, subscription 2's is 5; the
        // transport without `multiple` (None) gets one ack each.
        assert_eq!(
            got,
            [(3, "ack"), (4, "through"), (5, "through"), (6, "ack")]
        );
    }
}
