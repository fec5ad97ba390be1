//! The fixture: register, services, identities, request templates.

use super::*;

/// Requests for one service from the consumer to its provider.
pub(crate) struct Flow {
    pub(crate) service: Service,
    pub(crate) provider_id: String,
    pub(crate) provider: Identity,
    /// A valid request for the service, its attachment to be padded.
    pub(crate) template: OutgoingRequest,
    /// The attachment's length that makes the envelope the target size.
    pub(crate) attachment_len: usize,
    /// The reply's payload (a sample of the service's reply schema).
    pub(crate) reply_payload: Vec<u8>,
}

pub(crate) struct Fixture {
    pub(crate) register: Arc<Register>,
    pub(crate) consumer_id: String,
    pub(crate) consumer: Identity,
    pub(crate) broker: Identity,
    pub(crate) agency_ids: Vec<String>,
    pub(crate) trust: Arc<TrustStore>,
    pub(crate) verifier: Arc<dyn SignatureVerifier>,
    /// A service with a 48-hour deadline: the throughput runs, whose
    /// saturated round trips take longer than a real-time service allows
    /// (its breach notices would add traffic the relay does not carry).
    pub(crate) throughput: Flow,
    /// The real-time service (2 s): the latency part.
    pub(crate) latency: Flow,
    pub(crate) seq: AtomicU64,
}

impl Fixture {
    pub(crate) fn new(target_bytes: usize) -> anyhow::Result<Fixture> {
        let register = Arc::new(load_register());
        let service = |number: &str| {
            register
                .service(number)
                .filter(|s| s.is_active())
                .with_context(|| format!("no active service {number} in the shipped register"))
                .cloned()
        };
        let (throughput, latency) = (service(THROUGHPUT_SERVICE)?, service(LATENCY_SERVICE)?);
        let consumer_id = latency
            .consumers
            .first()
            .with_context(|| format!("service {LATENCY_SERVICE} has no consumers"))?
            .agency
            .clone();
        if throughput.consumer(&consumer_id).is_none() {
            bail!("{consumer_id} may not ask for {THROUGHPUT_SERVICE}");
        }
        let pki = DevPki::new().context("development CA")?;
        let consumer = pki
            .issue(&consumer_id, KeyAlg::Ed25519)
            .context("the consumer's certificate")?;
        let broker = pki
            .issue(BROKER_ID, KeyAlg::Ed25519)
            .context("the broker's certificate")?;
        let flow = |service: Service| -> anyhow::Result<Flow> {
            let provider = pki
                .issue(&service.provider, KeyAlg::Ed25519)
                .context("the provider's certificate")?;
            let template =
                mev_cli::demo::sample_request(&register, &service, 0, "Galiev Rustem".into());
            if template.payload.is_empty() {
                bail!("no sample payload for {}", service.request_schema);
            }
            let reply_payload = register
                .sample_payload(&service.reply_schema)
                .with_context(|| format!("no sample payload for {}", service.reply_schema))?;
            Ok(Flow {
                provider_id: service.provider.clone(),
                service,
                provider,
                template,
                attachment_len: 0,
                reply_payload,
            })
        };
        let mut fx = Fixture {
            throughput: flow(throughput)?,
            latency: flow(latency)?,
            trust: Arc::new(pki.trust_store().context("trust store")?),
            verifier: Arc::new(RingVerifier::new()),
            agency_ids: register.agencies().map(|a| a.id.clone()).collect(),
            register,
            consumer_id,
            consumer,
            broker,
            seq: AtomicU64::new(0),
        };
        // Pad the applicant's attached application (carried in the signed
        // header) so the envelope is about the target size: the payload
        // itself must decode strictly against the service's schema.
        for _ in 0..3 {
            for latency in [false, true] {
                let flow = if latency { &fx.latency } else { &fx.throughput };
                let size = fx
                    .seal_consumer(fx.request_with(flow, 0, flow.attachment_len))?
                    .len();
                let len = (flow.attachment_len + target_bytes).saturating_sub(size);
                if latency {
                    fx.latency.attachment_len = len;
                } else {
                    fx.throughput.attachment_len = len;
                }
            }
        }
        Ok(fx)
    }

    /// Request number `i` of `flow` with an attachment of `len` bytes.
    pub(crate) fn request_with(&self, flow: &Flow, i: u64, len: usize) -> OutgoingRequest {
        let mut req = flow.template.clone();
        req.applicant.id_number = format!("{:014}", 31_203_850_000_000u64 + i);
        req.applicant.full_name = format!("Galiev Rustem {i}");
        let mut content = format!("%PDF-1.7 application no. {i:08}\n").into_bytes();
        let filler = b"0 0 612 792 re f BT /F1 12 Tf 72 720 Td (Application) Tj ET\n";
        while content.len() < len {
            let take = (len - content.len()).min(filler.len());
            content.extend_from_slice(&filler[..take]);
        }
        req.applicant.application = Some(Attachment {
            name: "application.pdf".into(),
            media_type: "application/pdf".into(),
            content,
        });
        req.application_received_at = Some(chrono::Utc::now());
        req
    }

    /// The next request of `flow`, padded to the target size.
    pub(crate) fn request(&self, flow: &Flow) -> OutgoingRequest {
        let i = self.seq.fetch_add(1, Ordering::Relaxed);
        self.request_with(flow, i, flow.attachment_len)
    }

    /// `req` sealed by the consumer, as `send_request` would.
    pub(crate) fn seal_consumer(&self, req: OutgoingRequest) -> anyhow::Result<Vec<u8>> {
        let (header, payload) = req.into_parts(&self.consumer_id);
        Ok(mev_proto::envelope::seal(
            header,
            payload,
            self.consumer.signer.as_ref(),
            &self.consumer.certificate_chain,
        )?
        .encode_to_vec())
    }

    /// The average size of the envelopes of `flow`.
    pub(crate) fn envelope_size(&self, flow: &Flow) -> anyhow::Result<f64> {
        let mut total = 0usize;
        for i in 0..SIZE_SAMPLE {
            total += self
                .seal_consumer(self.request_with(flow, i as u64, flow.attachment_len))?
                .len();
        }
        Ok(total as f64 / SIZE_SAMPLE as f64)
    }
}

/// A transport of its own (one connection) for one participant.
pub(crate) fn transport(namespace: &str, name: &str) -> Amqp {
    Amqp::new(
        namespace.to_string(),
        AmqpConfig {
            connection_name: format!("mevbench {name}"),
            ..AmqpConfig::new(amqp_url())
        },
    )
}
