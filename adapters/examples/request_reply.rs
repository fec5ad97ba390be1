//! # One request, one reply, over RabbitMQ
//!
//! The smallest complete use of the adapter API: two agencies connect to an
//! exchange over RabbitMQ; one asks the other for a registered service, the
//! other's handler answers, and the asker prints the exchange's receipt and
//! the reply.
//!
//! Run it (RabbitMQ on `AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`):
//!
//! ```sh
//! cargo run -p mev-tests --example request_reply
//! ```
//!
//! (The example lives with the adapter but needs a broker to talk to, so the
//! `mev-tests` crate builds it; `cargo test -p mev-tests` runs it as a test.)
//!
//! A real agency runs only its own adapter; the broker and the development
//! CA are started here only so that the example is self-contained.

use mev_adapter::message::{Applicant, Attachment, Classification, Official, RequestedDocument};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::Topology as _;
use mev_adapter::{Adapter, AdapterConfig, IncomingRequest, NoHandler, OutgoingRequest, ReplyBody};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::Register;
use mev_broker::server::Broker;
use mev_broker::store::Store;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::{RingVerifier, SignatureVerifier};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The exchange's id: receipts must be signed by a certificate bound to it.
const BROKER_ID: &str = "MEV-EXCHANGE";

/// No wait in this example may take longer than this.
const WAIT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&url))
}

async fn run(url: &str) -> anyhow::Result<()> {
    // The register says who provides which service and who may ask for it.
    let register = Arc::new(Register::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas"
    )))?);
    // Pick an active service, its provider and its first allowed consumer.
    let service = register
        .services()
        .find(|s| s.is_active() && !s.consumers.is_empty())
        .ok_or_else(|| anyhow::anyhow!("no active service in the register"))?
        .clone();
    let (consumer, provider) = (
        service.consumers[0].agency.clone(),
        service.provider.clone(),
    );

    // Everything of this run lives under its own namespace on RabbitMQ.
    let namespace = format!("mev-example-{}", uuid::Uuid::new_v4().simple());
    let transport = Amqp::new(namespace, AmqpConfig::new(url));
    tokio::time::timeout(WAIT, transport.connect()).await??;

    let result = exchange(&register, &transport, &service, &consumer, &provider).await;

    // Delete this run's queues and exchanges, whatever happened.
    let agencies: Vec<String> = register.agencies().map(|a| a.id.clone()).collect();
    tokio::time::timeout(WAIT, transport.delete_topology(&agencies)).await??;
    result
}

async fn exchange(
    register: &Arc<Register>,
    transport: &Amqp,
    service: &mev_broker::register::Service,
    consumer: &str,
    provider: &str,
) -> anyhow::Result<()> {
    // A development CA: every party gets a certificate bound to its agency id
    // (production uses the operator's CA; see `mev pki`).
    let pki = DevPki::new()?;
    let trust = Arc::new(pki.trust_store()?);
    let verifier: Arc<dyn SignatureVerifier> = Arc::new(RingVerifier::new());

    // The exchange itself (normally a separate process: `mev broker`).
    let ctx = Arc::new(Context {
        verifier: verifier.clone(),
        ..Context::new(
            register.clone(),
            trust.clone(),
            pki.issue(BROKER_ID, KeyAlg::Ed25519)?,
            Arc::new(Store::in_memory()?),
        )
    });
    let batching = Batching {
        batch_size: 64,
        batch_window: Duration::from_millis(5),
    };
    let broker = Broker::new(ctx, transport.clone(), batching, 64)
        .start()
        .await?;

    // The provider: its handler answers every verified request once. Here it
    // always sends the requested documents, as a sample of the reply schema.
    let reply_schema = service.reply_schema.clone();
    let reply_payload = register.sample_payload(&reply_schema).unwrap_or_default();
    let handler = move |req: IncomingRequest| {
        println!(
            "provider: request {} from {} for {}",
            req.header.message_id, req.header.sender, req.header.service
        );
        std::future::ready(ReplyBody::Documents {
            provided: req.header.documents.clone(),
            payload_schema: reply_schema.clone(),
            payload: reply_payload.clone(),
        })
    };
    let provider_config = AdapterConfig::new(
        pki.issue(provider, KeyAlg::Ed25519)?,
        trust.clone(),
        verifier.clone(),
        BROKER_ID,
    );
    let provider_adapter =
        Adapter::connect(transport.clone(), provider_config, Some(handler)).await?;

    // The consumer only asks, so it needs no handler.
    let consumer_config = AdapterConfig::new(
        pki.issue(consumer, KeyAlg::Ed25519)?,
        trust.clone(),
        verifier.clone(),
        BROKER_ID,
    );
    let consumer_adapter =
        Adapter::connect(transport.clone(), consumer_config, None::<NoHandler>).await?;

    // The request: who is asking (the official), about whom (the applicant,
    // with their application attached), for which documents, and the
    // service's request payload (UZ annex 2 §14).
    let request = OutgoingRequest {
        recipient: provider.to_string(),
        service: service.number.clone(),
        official: Official {
            full_name: "Rahimova Nodira".into(),
            position: "Chief specialist, public service centre".into(),
            id: String::new(),
        },
        applicant: Applicant {
            id_number: "31203850000001".into(),
            id_kind: "PINFL".into(),
            full_name: "Karimov Akmal".into(),
            birth_date: "1985-03-12".into(),
            application: Some(Attachment {
                name: "application.pdf".into(),
                media_type: "application/pdf".into(),
                content: b"%PDF-1.7 application".to_vec(),
            }),
        },
        documents: service
            .documents
            .iter()
            .map(|d| RequestedDocument {
                code: d.code.clone(),
                title: d.title.clone(),
            })
            .collect(),
        payload_schema: service.request_schema.clone(),
        payload: register
            .sample_payload(&service.request_schema)
            .unwrap_or_default(),
        classification: Classification::PersonalData,
        application_received_at: Some(chrono::Utc::now()),
        ..Default::default()
    };

    // Send: the adapter validates, signs and publishes; RabbitMQ has
    // confirmed it when this returns.
    let mut handle = consumer_adapter.send_request(request).await?;
    // First the exchange's signed receipt (its time is the legal receipt time)...
    let receipt = tokio::time::timeout(WAIT, handle.receipt()).await??;
    println!(
        "consumer: receipt for {}: accepted={} code={} at {}",
        receipt.message_id, receipt.accepted, receipt.code, receipt.accepted_at
    );
    anyhow::ensure!(receipt.accepted, "request refused: {}", receipt.reason);
    // ...then the provider's reply, verified end to end.
    let request_id = handle.message_id.clone();
    let reply = tokio::time::timeout(WAIT, handle.reply()).await??;
    println!(
        "consumer: reply {} from {}: {} ({} payload bytes)",
        reply.header.message_id,
        reply.header.sender,
        reply.body.kind_name(),
        match &reply.body {
            ReplyBody::Documents { payload, .. } => payload.len(),
            _ => 0,
        }
    );
    anyhow::ensure!(
        reply.header.in_reply_to == request_id,
        "the reply answers another request"
    );

    // Close down in order: adapters, then the exchange.
    consumer_adapter.shutdown().await;
    provider_adapter.shutdown().await;
    broker.stop().await;
    Ok(())
}

#[cfg(test)]
#[test]
fn example_runs() {
    main().expect("the example runs");
}
