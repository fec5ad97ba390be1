//! `mev demo`: the main job on an embedded default. Starts a broker and K
//! agencies from the register, each with its own certificate from an
//! in-memory development CA, sends N requests among them covering every
//! reply kind plus a few deliberately bad messages, and prints a summary.
//! Exits 0 only if nothing was lost.

use anyhow::Context as _;
use mev_adapter::message::{Applicant, Attachment, Classification, Official, RequestedDocument};
use mev_adapter::transport::amqp::{Amqp, AmqpConfig};
use mev_adapter::transport::embedded::Embedded;
use mev_adapter::transport::{Outgoing, Route, Topology};
use mev_adapter::{
    Adapter, AdapterConfig, AdapterError, IncomingRequest, OutgoingRequest, ReplyBody,
};
use mev_broker::pipeline::{Batching, Context};
use mev_broker::register::{Register, Service};
use mev_broker::server::Broker;
use mev_broker::store::Store;
use mev_devpki::{DevPki, KeyAlg};
use mev_proto::crypto::RingVerifier;
use mev_proto::pb::{Header, Kind};
use mev_proto::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `mev demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many agencies take part (at least 2).
    #[arg(long, default_value_t = 6)]
    pub agencies: usize,
    /// How many requests to send.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Run over RabbitMQ at this URL instead of the embedded transport.
    #[arg(long)]
    pub amqp: Option<String>,
    /// Keep the broker's store here (default: in memory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The register directory.
    #[arg(long, default_value = "schemas")]
    pub register: PathBuf,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to wait for each reply, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

const BROKER_ID: &str = "MEV-EXCHANGE";

/// Runs the demo; prints the summary to stdout.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match args.amqp.clone() {
            None => run_over(args, Embedded::new("mev-demo"), "the embedded transport").await,
            Some(url) => {
                let agencies: Vec<String> = Register::load(&args.register)
                    .map(|r| r.agencies().map(|a| a.id.clone()).collect())
                    .unwrap_or_default();
                let ns = format!("mev-demo-{}", uuid::Uuid::new_v4().simple());
                let t = Amqp::new(ns, AmqpConfig::new(url.clone()));
                t.connect()
                    .await
                    .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
                let code = run_over(args, t.clone(), "RabbitMQ").await;
                // Clean up this run's queues whatever happened.
                let _ = t.delete_topology(&agencies).await;
                code
            }
        }
    })
}

/// The (consumer, service) pairs among the chosen agencies.
fn choose(register: &Register, k: usize) -> (BTreeSet<String>, Vec<(String, Service)>) {
    let mut chosen: Vec<String> = Vec::new();
    let active: Vec<&Service> = register.services().filter(|s| s.is_active()).collect();
    for s in &active {
        for a in std::iter::once(&s.provider).chain(s.consumers.iter().map(|c| &c.agency)) {
            if chosen.len() < k && !chosen.contains(a) {
                chosen.push(a.clone());
            }
        }
    }
    let set: BTreeSet<String> = chosen.into_iter().collect();
    let mut pairs = Vec::new();
    for s in active {
        if !set.contains(&s.provider) {
            continue;
        }
        for c in &s.consumers {
            if set.contains(&c.agency) {
                pairs.push((c.agency.clone(), s.clone()));
            }
        }
    }
    (set, pairs)
}

/// The provider's handler: the reply kind follows the applicant's number, so
/// every kind occurs.
fn handler(
    register: Arc<Register>,
) -> impl Fn(IncomingRequest) -> std::future::Ready<ReplyBody> + Send + Sync + 'static {
    move |req: IncomingRequest| {
        let h = &req.header;
        let n: u64 = h
            .applicant
            .as_ref()
            .map(|a| a.id_number.bytes().map(u64::from).sum())
            .unwrap_or(0);
        let body = match n % 4 {
            0 => {
                let schema = register
                    .service(&h.service)
                    .map(|s| s.reply_schema.clone())
                    .unwrap_or_default();
                ReplyBody::Documents {
                    provided: h.documents.clone(),
                    payload: register.sample_payload(&schema).unwrap_or_default(),
                    payload_schema: schema,
                }
            }
            1 => ReplyBody::Refusal {
                partial: false,
                legal_act:
                    "Law of the Republic of Uzbekistan No. ZRU-445 \"On personal data\", art. 15"
                        .into(),
                reason: "the applicant's consent to disclosure is not on file".into(),
                refused_codes: vec![],
            },
            2 => ReplyBody::NotHeld {
                reason: "no record for this applicant in our database".into(),
                possible_holder: "UZ-ARCHIVE".into(),
            },
            _ => ReplyBody::InsufficientData {
                missing: vec!["applicant.birth_date".into()],
            },
        };
        std::future::ready(body)
    }
}

/// A valid request for `service` (its provider, documents and a sample
/// payload), from applicant number `i` named `applicant_name`. Shared by the
/// demo and the integration tests.
pub fn sample_request(
    register: &Register,
    service: &Service,
    i: u64,
    applicant_name: String,
) -> OutgoingRequest {
    OutgoingRequest {
        recipient: service.provider.clone(),
        service: service.number.clone(),
        official: Official {
            full_name: "Rahimova Nodira".into(),
            position: "Chief specialist, public service centre".into(),
            id: String::new(),
        },
        applicant: Applicant {
            id_number: format!("{:014}", 31_203_850_000_000u64 + i),
            id_kind: "PINFL".into(),
            full_name: applicant_name,
            birth_date: "1985-03-12".into(),
            application: Some(Attachment {
                name: "application.pdf".into(),
                media_type: "application/pdf".into(),
                content: format!("%PDF-1.7 application no. {i}").into_bytes(),
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
    }
}

fn request_for(register: &Register, service: &Service, i: usize) -> OutgoingRequest {
    sample_request(register, service, i as u64, format!("Applicant {i}"))
}

#[derive(Default)]
struct Tally {
    sent: u64,
    accepted: u64,
    rejected: BTreeMap<u32, u64>,
    replied: BTreeMap<&'static str, u64>,
    lost: u64,
    bad_expected: u64,
    bad_ok: u64,
}

async fn run_over<T: Topology>(
    args: DemoArgs,
    transport: T,
    over: &str,
) -> anyhow::Result<ExitCode> {
    let register = Arc::new(Register::load(&args.register).with_context(|| {
        format!(
            "loading the register from {} (run from the repository root or pass --register)",
            args.register.display()
        )
    })?);
    let (agencies, pairs) = choose(&register, args.agencies.max(2));
    if pairs.is_empty() {
        anyhow::bail!(
            "no registered service is provided and consumed among the first {} agencies",
            args.agencies
        );
    }
    let pki = DevPki::new().context("creating the development CA")?;
    let trust = Arc::new(pki.trust_store().context("trust store")?);
    let verifier = Arc::new(RingVerifier::new());
    let store = match &args.data {
        Some(dir) => {
            let store = Store::open(dir).with_context(|| format!("store in {}", dir.display()))?;
            // The demo's CA lives only in memory: keep its certificate with the
            // journal, so `mev audit verify --ca DIR/ca.pem` can check the chains.
            let ca = dir.join("ca.pem");
            std::fs::write(&ca, pki.ca_cert_pem())
                .with_context(|| format!("writing {}", ca.display()))?;
            store
        }
        None => Store::in_memory().context("in-memory store")?,
    };
    let ctx = Arc::new(Context {
        verifier: verifier.clone(),
        ..Context::new(
            register.clone(),
            trust.clone(),
            pki.issue(BROKER_ID, KeyAlg::Ed25519)
                .context("broker certificate")?,
            Arc::new(store),
        )
    });
    let batching = Batching {
        batch_size: 256,
        batch_window: Duration::from_millis(5),
    };
    let broker = Broker::new(ctx.clone(), transport.clone(), batching, 512)
        .start()
        .await
        .context("starting the broker")?;

    let mut adapters = BTreeMap::new();
    for id in &agencies {
        let identity = pki.issue(id, KeyAlg::Ed25519)?;
        let config = AdapterConfig::new(identity, trust.clone(), verifier.clone(), BROKER_ID);
        let a = Adapter::connect(transport.clone(), config, Some(handler(register.clone())))
            .await
            .with_context(|| format!("connecting agency {id}"))?;
        adapters.insert(id.clone(), Arc::new(a));
    }
    println!(
        "mev demo: {} agencies, {} requests over {over}",
        agencies.len(),
        args.requests
    );

    let started = Instant::now();
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..args.requests {
        let (consumer, service) = &pairs[i % pairs.len()];
        let adapter = adapters[consumer].clone();
        let req = request_for(&register, service, i);
        let tally = tally.clone();
        let permit = slots.clone().acquire_owned().await?;
        let timeout = Duration::from_secs(args.timeout);
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let outcome = tokio::time::timeout(timeout, async {
                let mut h = adapter.send_request(req).await?;
                let receipt = h.receipt().await?;
                if !receipt.accepted {
                    return Ok::<_, AdapterError>((Some(receipt.code), None));
                }
                let reply = h.reply().await?;
                Ok((None, Some(reply.body.kind_name())))
            })
            .await;
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.sent += 1;
            match outcome {
                Ok(Ok((None, Some(kind)))) => {
                    t.accepted += 1;
                    *t.replied.entry(kind).or_default() += 1;
                }
                Ok(Ok((Some(code), _))) => *t.rejected.entry(code).or_default() += 1,
                Ok(Ok((None, None))) | Ok(Err(_)) | Err(_) => t.lost += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();

    send_bad_messages(&register, &pairs, &adapters, &transport, &pki, &tally, &ctx).await?;

    let lost = {
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        let snap = ctx.counters.snapshot();
        let rejected: u64 = t.rejected.values().sum();
        println!("  sent      {}", t.sent);
        println!("  accepted  {}", t.accepted);
        println!("  rejected  {rejected}");
        for (code, n) in &t.rejected {
            let name = ErrorCode::from_code(*code).map_or("unknown", |c| c.name());
            println!("    {code} {name:<28} {n}");
        }
        let replied: u64 = t.replied.values().sum();
        println!("  replied   {replied}");
        for (kind, n) in &t.replied {
            println!("    {kind:<33} {n}");
        }
        println!(
            "  garbage   {} (not attributable to a sender: recorded and dropped)",
            snap.garbage
        );
        println!(
            "  bad messages refused as expected: {}/{}",
            t.bad_ok, t.bad_expected
        );
        println!("  lost      {}", t.lost);
        let sla = snap.sla_total();
        println!(
            "  deadlines on time {}, late {}, breached {}, at risk {}, late dispatch {}",
            sla.on_time, sla.late, sla.breached, sla.at_risk, sla.late_dispatch
        );
        println!(
            "  delivered forwards {}, notices {}, publish retries {}",
            snap.forwarded, snap.notices, snap.publish_failures
        );
        println!(
            "  elapsed   {:.2} s ({:.0} requests/s, receipts signed per sender per batch: {} receipts for {} batches)",
            elapsed.as_secs_f64(),
            args.requests as f64 / elapsed.as_secs_f64().max(1e-9),
            snap.receipts,
            snap.batches
        );
        t.lost + (t.bad_expected - t.bad_ok)
    };

    for (_, a) in adapters {
        if let Ok(a) = Arc::try_unwrap(a) {
            a.shutdown().await;
        }
    }
    broker.stop().await;
    Ok(if lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A few deliberately bad messages, each of which must come back refused
/// with its own code.
async fn send_bad_messages<T: Topology>(
    register: &Register,
    pairs: &[(String, Service)],
    adapters: &BTreeMap<String, Arc<Adapter<T>>>,
    transport: &T,
    pki: &DevPki,
    tally: &Arc<std::sync::Mutex<Tally>>,
    ctx: &Context,
) -> anyhow::Result<()> {
    let (consumer, service) = &pairs[0];
    let adapter = &adapters[consumer];
    let good = |i: usize| -> Header {
        request_for(register, service, 1_000_000 + i)
            .into_parts(consumer)
            .0
    };
    let payload = register
        .sample_payload(&service.request_schema)
        .unwrap_or_default();
    let mut cases: Vec<(ErrorCode, Vec<u8>)> = Vec::new();
    // Each case: what is wrong, and the code the receipt must carry.

    // A signature that does not verify.
    let mut tampered: mev_proto::Envelope =
        prost::Message::decode(adapter.seal(good(0), payload.clone())?.as_slice())?;
    if let Some(sig) = tampered.signature.as_mut() {
        if let Some(b) = sig.value.first_mut() {
            *b ^= 0x01;
        }
    }
    cases.push((
        ErrorCode::BadSignature,
        prost::Message::encode_to_vec(&tampered),
    ));
    let mut h = good(1);
    h.service = "XX-99999".into();
    cases.push((ErrorCode::UnknownService, adapter.seal(h, payload.clone())?));
    let mut h = good(2);
    h.classification = mev_proto::pb::Classification::Secret as i32;
    cases.push((
        ErrorCode::ClassifiedMaterial,
        adapter.seal(h, payload.clone())?,
    ));
    let mut h = good(3);
    h.documents.clear();
    cases.push((ErrorCode::MissingField, adapter.seal(h, payload.clone())?));
    // Signed by a certificate from a CA nobody trusts.
    let foreign = DevPki::new()?;
    let stranger = foreign.issue(consumer, KeyAlg::Ed25519)?;
    let env2 = mev_proto::envelope::seal(
        good(4),
        payload.clone(),
        stranger.signer.as_ref(),
        &stranger.certificate_chain,
    )?;
    cases.push((
        ErrorCode::UntrustedCertificate,
        prost::Message::encode_to_vec(&env2),
    ));
    // A reply to a request nobody sent.
    let mut h = good(5);
    h.kind = Kind::Reply as i32;
    h.in_reply_to = uuid::Uuid::new_v4().to_string();
    std::mem::swap(&mut h.sender, &mut h.recipient);
    h.reply = Some(mev_proto::pb::ReplyOutcome {
        outcome: Some(mev_proto::pb::reply_outcome::Outcome::NotHeld(
            mev_proto::pb::NotHeld {
                reason: "x".into(),
                possible_holder: String::new(),
            },
        )),
    });
    let provider = &adapters[&service.provider];
    cases.push((ErrorCode::UnknownRequest, provider.seal(h, Vec::new())?));
    let _ = pki;

    let before_garbage = ctx.counters.snapshot().garbage;
    let expected = cases.len() as u64 + 1;
    for (code, bytes) in cases {
        let sender = if code == ErrorCode::UnknownRequest {
            provider
        } else {
            adapter
        };
        let mut handle = sender.send_raw(bytes).await?;
        let receipt = tokio::time::timeout(Duration::from_secs(30), handle.receipt()).await;
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        t.sent += 1;
        t.bad_expected += 1;
        if let Ok(Ok(r)) = receipt {
            *t.rejected.entry(r.code).or_default() += 1;
            if !r.accepted && r.code == code.as_code() {
                t.bad_ok += 1;
            }
        }
    }
    // Garbage: bytes that are not an envelope at all.
    transport
        .publish(Outgoing {
            route: Route::Ingress,
            body: b"\xff\xfe not an envelope \x00\x01".as_slice().into(),
            message_id: String::new(),
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.counters.snapshot().garbage == before_garbage && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    t.sent += 1;
    t.bad_expected = expected;
    *t.rejected
        .entry(ErrorCode::Malformed.as_code())
        .or_default() += 1;
    if ctx.counters.snapshot().garbage > before_garbage {
        t.bad_ok += 1;
    }
    Ok(())
}
