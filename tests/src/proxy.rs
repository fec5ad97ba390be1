//! A TCP proxy between the clients and RabbitMQ that can cut every live
//! connection at once and refuse new ones, to inject outages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

struct State {
    upstream: SocketAddr,
    up: AtomicBool,
    links: Mutex<Vec<AbortHandle>>,
    cuts: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A proxy listening on an ephemeral local port.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Proxy {
    /// Starts a proxy to `upstream` (host:port), up.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            upstream,
            up: AtomicBool::new(true),
            links: Mutex::new(Vec::new()),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !st.up.load(Ordering::SeqCst) {
                    drop(client); // refused: the link is down
                    st.refused.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let upstream = st.upstream;
                let link = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                let mut links = st.links.lock().unwrap_or_else(|p| p.into_inner());
                links.retain(|l| !l.is_finished());
                links.push(link.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// Starts a proxy to the RabbitMQ that [`crate::amqp_url`] names.
    pub async fn to_rabbitmq() -> Proxy {
        Proxy::start(rabbitmq_addr()).await
    }

    /// `amqp_url()` with the proxy's address instead of RabbitMQ's.
    pub fn url(&self) -> String {
        with_host_port(&crate::amqp_url(), &self.addr.to_string())
    }

    /// Drops every live connection (both ends see the socket close).
    pub fn cut(&self) {
        let links =
            std::mem::take(&mut *self.state.links.lock().unwrap_or_else(|p| p.into_inner()));
        for l in links {
            l.abort();
        }
        self.state.cuts.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the link down (cutting what is live and refusing new
    /// connections) or brings it back up.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut();
        }
    }

    /// How many times connections were cut.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::Relaxed)
    }

    /// How many connections were let through.
    pub fn connections(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// How many connections were refused (closed at once) while the link was down.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}

/// An amqp URL split as (scheme, user info with its `@`, host[:port], path with its `/`).
fn split_url(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let (user, rest) = match rest.rfind('@') {
        Some(i) => rest.split_at(i + 1),
        None => ("", rest),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    (scheme, user, hostport, path)
}

/// `host:port` of an amqp URL (default port 5672).
fn rabbitmq_host_port(url: &str) -> String {
    let (_, _, hostport, _) = split_url(url);
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5672")
    }
}

/// `url` pointing at `hostport` instead.
fn with_host_port(url: &str, hostport: &str) -> String {
    let (scheme, user, _, path) = split_url(url);
    format!("{scheme}://{user}{hostport}{path}")
}

fn rabbitmq_addr() -> SocketAddr {
    use std::net::ToSocketAddrs;
    let hp = rabbitmq_host_port(&crate::amqp_url());
    hp.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve RabbitMQ at {hp}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            rabbitmq_host_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(rabbitmq_host_port("amqp://rabbit/%2f"), "rabbit:5672");
        assert_eq!(
            with_host_port("amqp://u:p@rabbit/%2f", "127.0.0.1:9"),
            "amqp://u:p@127.0.0.1:9/%2f"
        );
    }
}
