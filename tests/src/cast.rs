//! Who plays which part in a test exchange, and how its providers reply.

use mev_adapter::{IncomingRequest, ReplyBody};
use mev_broker::register::{Register, Service};
use std::sync::Arc;

/// Picks the reply a provider sends to a request.
pub type Replier = Arc<dyn Fn(&Register, &IncomingRequest) -> ReplyBody + Send + Sync>;

/// The reply kinds, by [`ReplyBody::kind_name`].
pub const REPLY_KINDS: [&str; 4] = ["documents", "refusal", "not_held", "insufficient_data"];

/// A valid reply body of `kind` (a [`REPLY_KINDS`] name) to `req`.
pub fn reply_of_kind(kind: &str, register: &Register, req: &IncomingRequest) -> ReplyBody {
    match kind {
        "refusal" => ReplyBody::Refusal {
            partial: false,
            legal_act:
                "Law of the Republic of Uzbekistan No. ZRU-445 \"On personal data\", art. 15".into(),
            reason: "the applicant's consent to disclosure is not on file".into(),
            refused_codes: vec![],
        },
        "not_held" => ReplyBody::NotHeld {
            reason: "no record for this applicant in our database".into(),
            possible_holder: "UZ-ARXIV".into(),
        },
        "insufficient_data" => ReplyBody::InsufficientData {
            missing: vec!["applicant.birth_date".into()],
        },
        _ => {
            let schema = register
                .service(&req.header.service)
                .map(|s| s.reply_schema.clone())
                .unwrap_or_default();
            ReplyBody::Documents {
                provided: req.header.documents.clone(),
                payload: register.sample_payload(&schema).unwrap_or_default(),
                payload_schema: schema,
            }
        }
    }
}

/// The default replier: the kind named at the end of the applicant's full
/// name (see [`Exchange::request`]), documents otherwise.
pub fn reply_by_applicant_name() -> Replier {
    Arc::new(|register: &Register, req: &IncomingRequest| {
        let name = req
            .header
            .applicant
            .as_ref()
            .map(|a| a.full_name.as_str())
            .unwrap_or("");
        let kind = REPLY_KINDS
            .iter()
            .find(|k| name.ends_with(*k))
            .copied()
            .unwrap_or("documents");
        reply_of_kind(kind, register, req)
    })
}

/// Who plays which part, chosen from the register's data.
#[derive(Debug, Clone)]
pub struct Cast {
    /// An active service.
    pub service: Service,
    /// An allowed consumer of `service`.
    pub consumer: String,
    /// The provider of `service`.
    pub provider: String,
    /// A registered agency that neither provides nor may consume `service`.
    pub outsider: String,
    /// Another active service `consumer` may ask for, whose provider is none
    /// of the above (it gets no adapter: its inbox just fills up).
    pub idle_service: Service,
    /// An abolished service.
    pub abolished: Service,
}

impl Cast {
    /// Chooses the parts from `register`.
    pub fn choose(register: &Register) -> Cast {
        let service = register
            .services()
            .find(|s| s.is_active() && !s.consumers.is_empty())
            .expect("an active service with consumers")
            .clone();
        let consumer = service.consumers[0].agency.clone();
        let provider = service.provider.clone();
        let outsider = register
            .agencies()
            .map(|a| a.id.clone())
            .find(|a| *a != provider && service.consumer(a).is_none())
            .expect("an agency outside the service");
        let idle_service = register
            .services()
            .find(|s| {
                s.is_active()
                    && s.number != service.number
                    && s.consumer(&consumer).is_some()
                    && ![&consumer, &provider, &outsider].contains(&&s.provider)
            })
            .expect("a second service the consumer may ask for")
            .clone();
        let abolished = register
            .services()
            .find(|s| !s.is_active())
            .expect("an abolished service in the register")
            .clone();
        Cast {
            service,
            consumer,
            provider,
            outsider,
            idle_service,
            abolished,
        }
    }

    /// The agencies that get an adapter.
    pub fn attached(&self) -> [&str; 3] {
        [&self.consumer, &self.provider, &self.outsider]
    }
}
