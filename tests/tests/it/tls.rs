//! TLS to RabbitMQ (issue 8, item 2), against a real RabbitMQ TLS listener.
//!
//! Each test makes a throwaway TLS PKI (a CA, RabbitMQ's server certificate
//! for 127.0.0.1, a client certificate), starts a TLS listener on a free port
//! of the local RabbitMQ with `rabbitmqctl eval` (so no config file or
//! restart is needed, and the plain listener the other tests use is left
//! alone), and stops it at the end. The listener asks for a client
//! certificate and refuses connections without one (`verify_peer`,
//! `fail_if_no_peer_cert`).
//!
//! - The whole exchange (broker and adapters) works over `amqps://` with
//!   client certificates, and RabbitMQ reports the connection as TLS.
//! - Refused: no client certificate; a server certificate from a CA the
//!   client was not given (the system's roots are never trusted); a server
//!   certificate that does not name the host connected to; plain AMQP to the
//!   TLS port; an `amqps://` URL without TLS settings.

use mev_adapter::transport::amqp::{Amqp, AmqpConfig, AmqpTls, ClientIdentity};
use mev_tests::{reply_by_applicant_name, Cast, Exchange, Setup};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

/// A CA with one server and one client certificate, as PEM.
struct TlsPki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client: ClientIdentity,
}

impl TlsPki {
    /// A fresh CA; the server certificate names `server_names` (IP addresses
    /// or DNS names).
    fn new(server_names: &[&str]) -> TlsPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mev test TLS CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut server = CertificateParams::new(Vec::<String>::new()).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "rabbitmq.test");
        for name in server_names {
            server.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &ca).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "mev-broker");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &ca).unwrap();

        TlsPki {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client: ClientIdentity {
                cert_pem: client_cert.pem().into_bytes(),
                key_pem: client_key.serialize_pem().into_bytes(),
            },
        }
    }

    fn tls(&self, with_client_certificate: bool) -> AmqpTls {
        AmqpTls {
            ca_pem: self.ca_pem.clone(),
            client: with_client_certificate.then(|| self.client.clone()),
        }
    }
}

/// A TLS listener on the local RabbitMQ, stopped on drop.
struct TlsListener {
    port: u16,
    _dir: tempfile::TempDir,
}

fn rabbitmqctl_eval(expr: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["eval", expr])
        .output()
        .expect("rabbitmqctl runs (the TLS tests need the local RabbitMQ's rabbitmqctl)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "rabbitmqctl eval {expr}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

impl TlsListener {
    /// Starts a listener on a free loopback port that presents `pki`'s
    /// server certificate and requires a client certificate from its CA.
    fn start(pki: &TlsPki) -> TlsListener {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            // RabbitMQ runs as its own user and reads these files.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            p.display().to_string()
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca = write("ca.pem", &pki.ca_pem);
        let cert = write("server.pem", &pki.server_cert_pem);
        let key = write("server.key", &pki.server_key_pem);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = rabbitmqctl_eval(&format!(
            "rabbit_networking:start_ssl_listener({{\"127.0.0.1\", {port}}}, \
             [{{cacertfile, \"{ca}\"}}, {{certfile, \"{cert}\"}}, {{keyfile, \"{key}\"}}, \
              {{verify, verify_peer}}, {{fail_if_no_peer_cert, true}}], 1, 1)."
        ));
        assert_eq!(started, "ok", "starting the TLS listener on {port}");
        TlsListener { port, _dir: dir }
    }

    fn url(&self, host: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f", self.port)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args([
                "eval",
                &format!(
                    "rabbit_networking:stop_tcp_listener({{\"127.0.0.1\", {}}}).",
                    self.port
                ),
            ])
            .output();
    }
}

/// Connects a transport with `config`; the error text if it fails.
async fn connect(config: AmqpConfig) -> Result<(), String> {
    let t = Amqp::new(format!("mevtls-{}", uuid::Uuid::new_v4().simple()), config);
    match tokio::time::timeout(Duration::from_secs(30), t.connect()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn the_exchange_works_over_tls_with_client_certificates() {
    let pki = TlsPki::new(&["127.0.0.1"]);
    let listener = TlsListener::start(&pki);
    let name = format!("mev-tls-test-{}", uuid::Uuid::new_v4().simple());
    let setup = Setup {
        amqp: AmqpConfig {
            connection_name: name.clone(),
            tls: Some(pki.tls(true)),
            ..AmqpConfig::new(listener.url("127.0.0.1"))
        },
        ..Setup::default()
    };
    let register = mev_tests::load_register();
    let cast = Cast::choose(&register);
    let ex =
        Exchange::start_setup(&cast.attached(), reply_by_applicant_name(), setup, |_, c| c).await;
    for kind in ["documents", "refusal"] {
        ex.round_trip(&cast.consumer, &cast.service, kind).await;
    }

    // RabbitMQ's own view: the connection is TLS, with our client certificate.
    let listed = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "client_properties",
            "ssl",
            "ssl_protocol",
            "peer_cert_subject",
            "port",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let ours: Vec<&str> = listed.lines().filter(|l| l.contains(&name)).collect();
    assert!(!ours.is_empty(), "our connection is listed:\n{listed}");
    for line in &ours {
        assert!(line.contains("true"), "ssl = true: {line}");
        assert!(line.contains("tlsv1."), "a TLS protocol version: {line}");
        assert!(
            line.contains("CN=mev-broker"),
            "our client certificate: {line}"
        );
        assert!(
            line.contains(&listener.port.to_string()),
            "on the TLS port: {line}"
        );
    }
    eprintln!("RabbitMQ lists: {}", ours[0]);
    ex.cleanup().await;
}

#[tokio::test]
async fn tls_refuses_a_missing_client_certificate_a_foreign_ca_and_a_wrong_name() {
    let pki = TlsPki::new(&["127.0.0.1"]);
    let listener = TlsListener::start(&pki);
    let url = listener.url("127.0.0.1");
    let with = |tls: Option<AmqpTls>, url: &str| AmqpConfig {
        tls,
        ..AmqpConfig::new(url.to_string())
    };

    // The good case first, so the refusals below are not a broken listener.
    connect(with(Some(pki.tls(true)), &url))
        .await
        .expect("with the CA and a client certificate");

    let e = connect(with(Some(pki.tls(false)), &url))
        .await
        .expect_err("without a client certificate");
    eprintln!("no client certificate: {e}");

    let stranger = TlsPki::new(&["127.0.0.1"]);
    let foreign = AmqpTls {
        ca_pem: stranger.ca_pem.clone(),
        client: Some(pki.client.clone()),
    };
    let e = connect(with(Some(foreign), &url))
        .await
        .expect_err("RabbitMQ's certificate is not from the CA we were given");
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "names the certificate problem: {e}"
    );
    eprintln!("foreign CA: {e}");

    // The certificate names 127.0.0.1 only.
    let e = connect(with(Some(pki.tls(true)), &listener.url("localhost")))
        .await
        .expect_err("the server certificate does not name localhost");
    eprintln!("wrong name: {e}");

    let e = connect(with(None, &url))
        .await
        .expect_err("amqps:// without TLS settings");
    assert!(e.contains("AmqpConfig::tls"), "says what is missing: {e}");

    let plain = format!("amqp://guest:guest@127.0.0.1:{}/%2f", listener.port);
    connect(with(None, &plain))
        .await
        .expect_err("plain AMQP to the TLS port");
}
