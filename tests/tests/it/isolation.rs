//! Per-agency RabbitMQ accounts over the real RabbitMQ: definitions made by
//! `mev deploy rabbitmq` (the library behind it) are loaded with
//! `rabbitmqctl import_definitions` into a fresh vhost; an agency's account
//! may publish to the ingress and consume its own inbox, and nothing else
//! (ACCESS_REFUSED); and the exchange works end to end with the restricted
//! accounts only (the broker's own account declares, consumes and delivers).
//!
//! Needs `rabbitmqctl` on the machine running RabbitMQ (the vhost and the
//! users are created and deleted with it, also when the test fails).

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::{Outgoing, Route, Topology, Transport, TransportError};
use mev_adapter::{Adapter, AdapterConfig, IncomingRequest};
use mev_broker::config::BrokerConfig;
use mev_broker::pipeline::Batching;
use mev_broker::server::{self, Broker};
use mev_cli::deploy::{Deployment, Options};
use mev_devpki::KeyAlg;
use mev_proto::crypto::{Identity, RingVerifier, SignatureVerifier};
use mev_proto::trust::TrustStore;
use mev_proto::ErrorCode;
use mev_tests::{receipt, reply, within, Cast, BROKER_ID};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const MAX_INBOX: u32 = 10_000;

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running rabbitmqctl {args:?}: {e}"))
}

/// A vhost and users imported into RabbitMQ; deleted on drop (also on panic).
struct Deployed {
    vhost: String,
    users: Vec<String>,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let out = rabbitmqctl(&["delete_vhost", &self.vhost]);
        if !out.status.success() {
            eprintln!(
                "deleting vhost {}: {}",
                self.vhost,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for u in &self.users {
            let out = rabbitmqctl(&["delete_user", u]);
            if !out.status.success() {
                eprintln!(
                    "deleting user {u}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// host:port of the RabbitMQ at `AMQP_URL`.
fn rabbitmq_host() -> String {
    let url = mev_tests::amqp_url();
    let rest = url.split("://").nth(1).unwrap_or("");
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    rest.split('/')
        .next()
        .unwrap_or("127.0.0.1:5672")
        .to_string()
}

/// Generates and imports definitions for `agencies` in a fresh vhost (the
/// namespace is the vhost's name, so users of parallel runs never clash).
/// Returns the guard, the namespace, the secrets (id → URL) read back from
/// the secrets file, and the temp dir holding the files.
fn deploy(
    agencies: &[&str],
) -> (
    Deployed,
    String,
    BTreeMap<String, String>,
    tempfile::TempDir,
) {
    let vhost = format!("mevtest-{}", uuid::Uuid::new_v4().simple());
    let options = Options {
        vhost: vhost.clone(),
        namespace: vhost.clone(),
        broker_id: BROKER_ID.into(),
        max_inbox_length: MAX_INBOX,
        quorum: true,
        host: rabbitmq_host(),
        scheme: "amqp".into(),
    };
    let deployment =
        Deployment::new(agencies.iter().map(|a| a.to_string()), options).expect("definitions");
    let guard = Deployed {
        vhost: vhost.clone(),
        users: deployment.accounts().map(|a| a.user.clone()).collect(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("defs.json");
    let secrets_path = dir.path().join("secrets.toml");
    deployment.write(&out, &secrets_path).expect("written");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&secrets_path), 0o600, "the secrets are owner-only");
    let defs = std::fs::read_to_string(&out).unwrap();
    for a in deployment.accounts() {
        assert!(!defs.contains(&a.password), "a password in the definitions");
    }
    // rabbitmqctl (Debian's wrapper) runs as the rabbitmq user: it must be
    // able to read the definitions (not the secrets, which stay 0600).
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let imported = rabbitmqctl(&["import_definitions", out.to_str().unwrap()]);
    assert!(
        imported.status.success(),
        "rabbitmqctl import_definitions failed ({}): {}{}",
        imported.status,
        String::from_utf8_lossy(&imported.stdout),
        String::from_utf8_lossy(&imported.stderr)
    );
    let secrets: BTreeMap<String, String> =
        toml::from_str(&std::fs::read_to_string(&secrets_path).unwrap()).expect("secrets TOML");
    assert_eq!(secrets.len(), agencies.len() + 1);
    (guard, vhost, secrets, dir)
}

/// The import is asynchronous: waits until the last bindings are in place.
async fn imported(vhost: &str, agencies: usize) {
    within("the definitions to be imported", async {
        loop {
            let out = rabbitmqctl(&["list_bindings", "-q", "-p", vhost, "source_name"]);
            let named = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(vhost))
                .count();
            if named == agencies + 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

fn transport(namespace: &str, url: &str) -> Amqp {
    Amqp::new(
        namespace,
        AmqpConfig {
            max_inbox_length: MAX_INBOX,
            ..AmqpConfig::new(url)
        },
    )
}

fn refused<T>(what: &str, r: Result<T, TransportError>) {
    match r {
        Err(TransportError::AccessRefused(_)) => {}
        Err(e) => panic!("{what}: expected ACCESS_REFUSED, got {e:?}"),
        Ok(_) => panic!("{what}: expected ACCESS_REFUSED, but it succeeded"),
    }
}

fn outgoing(route: Route) -> Outgoing {
    Outgoing {
        route,
        body: b"not an envelope".to_vec().into(),
        message_id: uuid::Uuid::new_v4().to_string(),
    }
}

/// A raw lapin operation on a fresh channel of `conn` must be refused.
async fn raw_refused<T, F>(what: &str, conn: &Connection, op: impl FnOnce(lapin::Channel) -> F)
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, lapin::Error>>,
{
    let ch = conn.create_channel().await.expect("a channel");
    let r = within(what, op(ch)).await;
    let e = r.expect_err(what);
    assert!(
        e.to_string().contains("ACCESS_REFUSED") || format!("{e:?}").contains("ACCESSREFUSED"),
        "{what}: expected ACCESS_REFUSED, got {e:?}"
    );
}

#[tokio::test]
async fn agencies_are_confined_to_the_ingress_and_their_own_inbox() {
    let cast = Cast::choose(&mev_tests::load_register());
    let (a, b) = (cast.consumer.as_str(), cast.provider.as_str());
    let (_guard, ns, secrets, _dir) = deploy(&[a, b]);
    imported(&ns, 2).await;
    let names = mev_adapter::transport::Names::new(ns.clone());
    let ta = transport(&ns, &secrets[a]);
    within("A connects", ta.connect())
        .await
        .expect("A's account logs in");

    // Allowed: publish to the ingress, consume its own inbox.
    within(
        "A publishes to the ingress",
        ta.publish(outgoing(Route::Ingress)),
    )
    .await
    .expect("A may publish to the ingress");
    let own = within("A consumes its inbox", ta.consume(&names.inbox_queue(a), 4)).await;
    assert!(own.is_ok(), "A may consume its own inbox: {:?}", own.err());

    // Refused: another inbox, the deliver exchange, queues directly, declaring.
    refused(
        "A consumes B's inbox",
        within("consume", ta.consume(&names.inbox_queue(b), 4)).await,
    );
    refused(
        "A consumes the ingress",
        within("consume", ta.consume(&names.ingress_queue(), 4)).await,
    );
    refused(
        "A publishes to the deliver exchange (as if the broker, to B)",
        within("publish", ta.publish(outgoing(Route::Inbox(b.into())))).await,
    );
    refused(
        "A publishes straight to B's inbox (default exchange)",
        within(
            "publish",
            ta.publish(outgoing(Route::Queue(names.inbox_queue(b)))),
        )
        .await,
    );
    refused(
        "A publishes straight to the ingress queue (default exchange)",
        within(
            "publish",
            ta.publish(outgoing(Route::Queue(names.ingress_queue()))),
        )
        .await,
    );
    refused(
        "A declares its inbox",
        within("declare", ta.declare_inbox(a)).await,
    );
    // And still allowed after all those refusals (the channel comes back).
    within("A publishes again", ta.publish(outgoing(Route::Ingress)))
        .await
        .expect("A may still publish to the ingress");

    // Raw AMQP: A cannot tap others' traffic by binding its own inbox to
    // the ingress or to B's routing key, nor purge B's inbox.
    let conn = within(
        "a raw connection",
        Connection::connect(&secrets[a], ConnectionProperties::default()),
    )
    .await
    .expect("raw connection as A");
    let (inbox_a, inbox_b) = (names.inbox_queue(a), names.inbox_queue(b));
    let (ingress, deliver) = (names.ingress_exchange(), names.deliver_exchange());
    raw_refused("binding A's inbox to the ingress", &conn, |ch| async move {
        ch.queue_bind(
            inbox_a.as_str().into(),
            ingress.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    let inbox_a = names.inbox_queue(a);
    let b_key = b.to_string();
    raw_refused(
        "binding A's inbox to B's deliveries",
        &conn,
        |ch| async move {
            ch.queue_bind(
                inbox_a.as_str().into(),
                deliver.as_str().into(),
                b_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        },
    )
    .await;
    raw_refused("purging B's inbox", &conn, |ch| async move {
        ch.queue_purge(inbox_b.as_str().into(), QueuePurgeOptions::default())
            .await
    })
    .await;
    raw_refused("publishing to amq.direct", &conn, |ch| async move {
        // A refused publish closes the channel with ACCESS_REFUSED, and
        // lapin fails the publishes awaiting confirms with that error. (Using
        // the channel again instead races the close: an operation sent while
        // it is closing fails with the channel's state, not the reason.)
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.basic_publish(
            "amq.direct".into(),
            "x".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await?
        .await
    })
    .await;
    let _ = conn.close(200, "done".into()).await;

    // B's account logs in too, and is refused A's inbox.
    let tb = transport(&ns, &secrets[b]);
    refused(
        "B consumes A's inbox",
        within("consume", tb.consume(&names.inbox_queue(a), 4)).await,
    );
}

fn identity(pki: &Path, agency: &str) -> Identity {
    let paths = mev_devpki::PkiPaths::new(pki);
    let key = std::fs::read_to_string(paths.agency_key(agency)).expect("key");
    let cert = std::fs::read_to_string(paths.agency_cert(agency)).expect("cert");
    Identity::from_pem(&key, &cert).expect("identity")
}

#[tokio::test]
async fn the_exchange_works_end_to_end_with_restricted_accounts() {
    let register = Arc::new(mev_tests::load_register());
    let cast = Cast::choose(&register);
    let (a, b) = (cast.consumer.as_str(), cast.provider.as_str());
    let (_guard, ns, secrets, dir) = deploy(&[a, b]);
    imported(&ns, 2).await;

    let pki: PathBuf = dir.path().join("pki");
    mev_devpki::init(&pki, false).expect("dev CA");
    for id in [BROKER_ID, a, b] {
        mev_devpki::issue(&pki, id, KeyAlg::Ed25519, 30).expect("certificate");
    }
    let paths = mev_devpki::PkiPaths::new(&pki);
    let mut config = BrokerConfig::default();
    config.broker.id = BROKER_ID.into();
    config.broker.namespace = ns.clone();
    config.broker.register = mev_tests::register_dir();
    config.broker.data_dir = dir.path().join("broker");
    config.amqp.url = secrets[BROKER_ID].clone();
    config.amqp.max_inbox_length = MAX_INBOX;
    config.pki.ca = paths.ca_cert();
    config.pki.cert = paths.agency_cert(BROKER_ID);
    config.pki.key = paths.agency_key(BROKER_ID);
    config.http.listen = String::new();
    let ctx = server::context_from_config(&config).expect("broker context");
    // The broker declares the whole register's topology with its own account:
    // the imported queues (same arguments) and the inboxes of the agencies
    // that have no account in this test.
    let broker = within(
        "the broker to start",
        Broker::new(
            ctx,
            transport(&ns, &config.amqp.url),
            Batching {
                batch_size: 64,
                batch_window: Duration::from_millis(5),
            },
            64,
        )
        .start(),
    )
    .await
    .expect("the broker starts with its restricted account");

    let ca = std::fs::read_to_string(paths.ca_cert()).expect("CA");
    let trust = Arc::new(TrustStore::from_pem(&ca).expect("trust store"));
    let verifier: Arc<dyn SignatureVerifier> = Arc::new(RingVerifier::new());
    let adapter = |id: &str| {
        AdapterConfig::new(
            identity(&pki, id),
            trust.clone(),
            verifier.clone(),
            BROKER_ID,
        )
    };
    let provider = {
        let register = register.clone();
        let handler = move |req: IncomingRequest| {
            std::future::ready(mev_tests::reply_of_kind("documents", &register, &req))
        };
        within(
            "B's adapter",
            Adapter::connect(transport(&ns, &secrets[b]), adapter(b), Some(handler)),
        )
        .await
        .expect("B connects with its own account")
    };
    let consumer = within(
        "A's adapter",
        Adapter::connect(
            transport(&ns, &secrets[a]),
            adapter(a),
            None::<mev_adapter::NoHandler>,
        ),
    )
    .await
    .expect("A connects with its own account");

    for i in 0..3 {
        let req =
            mev_cli::demo::sample_request(&register, &cast.service, i, format!("Applicant {i}"));
        let mut h = within("sending", consumer.send_request(req))
            .await
            .expect("request sent");
        let r = receipt(&mut h).await;
        assert!(r.accepted, "accepted: {r:?}");
        assert_eq!(r.code, ErrorCode::Ok.as_code());
        let id = h.message_id.clone();
        let rep = reply(h).await;
        assert_eq!(rep.header.in_reply_to, id);
        assert_eq!(rep.header.sender, b);
        assert_eq!(rep.body.kind_name(), "documents");
    }

    within("A shuts down", consumer.shutdown()).await;
    within("B shuts down", provider.shutdown()).await;
    within("the broker stops", broker.stop()).await;
}
