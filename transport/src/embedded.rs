//! An in-process transport: queues in memory, the same semantics the broker
//! relies on from RabbitMQ (routing by exchange and key, manual acks,
//! prefetch, redelivery of what was not acked). For the demo and unit tests;
//! it keeps nothing across a restart of the process.

use super::{
    AckHandle, BoxFuture, Consumer, Delivery, Names, Outgoing, QueueDepth, Route, Topology,
    Transport, TransportError,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, Notify, Semaphore};

#[derive(Default)]
struct QueueState {
    ready: VecDeque<(Vec<u8>, bool)>,
    unacked: HashMap<u64, Vec<u8>>,
    next_tag: u64,
    consumers: u32,
}

struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain collections; the data is still consistent enough to go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Hub {
    queues: HashMap<String, Arc<Queue>>,
    /// (exchange, routing key) → queue.
    bindings: HashMap<(String, String), String>,
}

/// The in-process transport. Clones share the same queues.
#[derive(Clone)]
pub struct Embedded {
    names: Names,
    hub: Arc<Mutex<Hub>>,
}

impl Embedded {
    /// A new, empty set of queues under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Embedded {
            names: Names::new(namespace),
            hub: Arc::new(Mutex::new(Hub::default())),
        }
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn declare(&self, queue: String, exchange: String, key: String) {
        let mut hub = self.hub();
        hub.queues.entry(queue.clone()).or_insert_with(|| {
            Arc::new(Queue {
                state: Mutex::new(QueueState::default()),
                notify: Notify::new(),
            })
        });
        hub.bindings.insert((exchange, key), queue);
    }

    fn resolve(&self, route: &Route) -> Option<Arc<Queue>> {
        let hub = self.hub();
        let name = match route {
            Route::Ingress => hub
                .bindings
                .get(&(self.names.ingress_exchange(), String::new()))?
                .clone(),
            Route::Inbox(agency) => hub
                .bindings
                .get(&(self.names.deliver_exchange(), agency.clone()))?
                .clone(),
            Route::Queue(name) => name.clone(),
        };
        hub.queues.get(&name).cloned()
    }
}

struct EmbeddedAck {
    queue: Arc<Queue>,
    tag: u64,
    permits: Arc<Semaphore>,
}

impl EmbeddedAck {
    fn settle(&self, requeue: bool) {
        let mut st = self.queue.lock();
        if let Some(body) = st.unacked.remove(&self.tag) {
            if requeue {
                st.ready.push_front((body, true));
                drop(st);
                self.queue.notify.notify_one();
            }
            self.permits.add_permits(1);
        }
    }
}

impl AckHandle for EmbeddedAck {
    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.settle(false);
        Box::pin(async { Ok(()) })
    }
    fn requeue(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.settle(true);
        Box::pin(async { Ok(()) })
    }
}

impl Transport for Embedded {
    fn names(&self) -> &Names {
        &self.names
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Vec<Result<(), TransportError>> {
        messages
            .into_iter()
            .map(|m| match self.resolve(&m.route) {
                Some(q) => {
                    q.lock().ready.push_back((m.body.to_vec(), false));
                    q.notify.notify_one();
                    Ok(())
                }
                None => Err(TransportError::Unroutable(m.route)),
            })
            .collect()
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, TransportError> {
        let q = self
            .hub()
            .queues
            .get(queue)
            .cloned()
            .ok_or_else(|| TransportError::NoSuchQueue(queue.to_string()))?;
        q.lock().consumers += 1;
        let (tx, rx) = mpsc::channel(prefetch.max(1) as usize);
        let permits = Arc::new(Semaphore::new(prefetch.max(1) as usize));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let next = loop {
                    let notified = q.notify.notified();
                    {
                        let mut st = q.lock();
                        if let Some((body, redelivered)) = st.ready.pop_front() {
                            let tag = st.next_tag;
                            st.next_tag += 1;
                            st.unacked.insert(tag, body.clone());
                            break (body, redelivered, tag);
                        }
                    }
                    if tx.is_closed() {
                        q.lock().consumers -= 1;
                        return;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tx.closed() => {}
                    }
                };
                permit.forget();
                let (body, redelivered, tag) = next;
                let acker = EmbeddedAck {
                    queue: q.clone(),
                    tag,
                    permits: permits.clone(),
                };
                if let Err(mpsc::error::SendError(d)) = tx
                    .send(Delivery::new(body, redelivered, Box::new(acker)))
                    .await
                {
                    // The consumer went away: what it never saw goes back.
                    let _ = d.requeue().await;
                    q.lock().consumers -= 1;
                    return;
                }
            }
        });
        Ok(Consumer::new(rx))
    }
}

impl Topology for Embedded {
    async fn declare_ingress(&self) -> Result<(), TransportError> {
        self.declare(
            self.names.ingress_queue(),
            self.names.ingress_exchange(),
            String::new(),
        );
        Ok(())
    }
    async fn declare_inbox(&self, agency: &str) -> Result<(), TransportError> {
        self.declare(
            self.names.inbox_queue(agency),
            self.names.deliver_exchange(),
            agency.to_string(),
        );
        Ok(())
    }
    async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, TransportError> {
        let q = self
            .hub()
            .queues
            .get(queue)
            .cloned()
            .ok_or_else(|| TransportError::NoSuchQueue(queue.to_string()))?;
        let st = q.lock();
        Ok(QueueDepth {
            messages: st.ready.len() as u32,
            consumers: st.consumers,
        })
    }
    async fn delete_topology(&self, agencies: &[String]) -> Result<(), TransportError> {
        let mut queues = vec![self.names.ingress_queue()];
        queues.extend(agencies.iter().map(|a| self.names.inbox_queue(a)));
        let exchanges = [self.names.ingress_exchange(), self.names.deliver_exchange()];
        let mut hub = self.hub();
        for q in &queues {
            hub.queues.remove(q);
        }
        hub.bindings.retain(|(exchange, _), queue| {
            !exchanges.contains(exchange) && !queues.contains(queue)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(route: Route, body: &[u8]) -> Outgoing {
        Outgoing {
            route,
            body: body.into(),
            message_id: String::new(),
        }
    }

    #[tokio::test]
    async fn a_deleted_topology_has_no_queues_and_routes_nothing() {
        let t = Embedded::new("t");
        t.declare_ingress().await.unwrap();
        t.declare_inbox("A").await.unwrap();
        assert_eq!(t.queue_depth("t.inbox.A").await.unwrap().messages, 0);
        t.delete_topology(&["A".to_string()]).await.unwrap();
        assert!(matches!(
            t.queue_depth("t.inbox.A").await,
            Err(TransportError::NoSuchQueue(_))
        ));
        assert!(t.queue_depth("t.ingress").await.is_err());
        let r = t.publish(msg(Route::Inbox("A".into()), b"x")).await;
        assert!(matches!(r, Err(TransportError::Unroutable(_))), "{r:?}");
    }

    #[tokio::test]
    async fn routes_acks_and_redelivers() {
        let t = Embedded::new("t");
        t.declare_ingress().await.unwrap();
        t.declare_inbox("A").await.unwrap();
        let r = t
            .publish_batch(vec![
                msg(Route::Ingress, b"1"),
                msg(Route::Inbox("A".into()), b"2"),
                msg(Route::Inbox("B".into()), b"3"),
            ])
            .await;
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(matches!(r[2], Err(TransportError::Unroutable(_))));
        assert_eq!(t.queue_depth("t.ingress").await.unwrap().messages, 1);

        let mut c = t.consume("t.inbox.A", 1).await.unwrap();
        let d = c.next().await.unwrap();
        assert_eq!(d.body, b"2");
        assert!(!d.redelivered);
        d.requeue().await.unwrap();
        let d = c.next().await.unwrap();
        assert!(d.redelivered);
        d.ack().await.unwrap();
        assert_eq!(t.queue_depth("t.inbox.A").await.unwrap().messages, 0);
    }

    #[tokio::test]
    async fn prefetch_bounds_unacked() {
        let t = Embedded::new("t");
        t.declare_inbox("A").await.unwrap();
        for i in 0..5u8 {
            t.publish(msg(Route::Inbox("A".into()), &[i]))
                .await
                .unwrap();
        }
        let mut c = t.consume("t.inbox.A", 2).await.unwrap();
        let a = c.next().await.unwrap();
        let _b = c.next().await.unwrap();
        tokio::task::yield_now().await;
        assert!(c.try_next().is_none(), "prefetch of 2 exceeded");
        a.ack().await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_secs(1), c.next()).await;
        assert!(third.unwrap().is_some());
    }
}
