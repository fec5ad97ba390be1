//! What an agency's code sends and receives: requests, replies, receipts,
//! status updates and notices, as plain Rust values.

use chrono::{DateTime, Utc};
use mev_proto::pb::{self, reply_outcome::Outcome, Header};
use mev_proto::{ErrorCode, Rejection};

pub use mev_proto::pb::{Applicant, Attachment, Classification, Official, RequestedDocument};

/// A request for a registered service, before it is signed.
#[derive(Debug, Clone, Default)]
pub struct OutgoingRequest {
    /// The provider agency (UZ annex 2 §14 item 2).
    pub recipient: String,
    /// The service's registry number (item 3).
    pub service: String,
    /// The official who prepared and sends it (item 7).
    pub official: Official,
    /// The applicant, with their application attached (item 4).
    pub applicant: Applicant,
    /// What is requested (item 5).
    pub documents: Vec<RequestedDocument>,
    /// The payload's schema: the service's request message name.
    pub payload_schema: String,
    /// The payload: an encoded message of that schema.
    pub payload: Vec<u8>,
    pub classification: Classification,
    /// A test message.
    pub test: bool,
    /// An archive request (UZ annex 1 §8, annex 2 §22).
    pub archive: bool,
    /// When the applicant's application was received (UZ annex 2 §12).
    pub application_received_at: Option<DateTime<Utc>>,
    /// A per-interaction deadline policy (Tatarstan §2.7), or empty for the service's own.
    pub deadline_policy: String,
}

impl OutgoingRequest {
    /// The unsigned header (a fresh message id, sent now, from `sender`) and the payload.
    pub fn into_parts(self, sender: &str) -> (Header, Vec<u8>) {
        let header = Header {
            message_id: uuid::Uuid::now_v7().to_string(),
            kind: pb::Kind::Request as i32,
            sender: sender.to_string(),
            recipient: self.recipient,
            service: self.service,
            sent_at: Some(mev_proto::time::to_wire(chrono::Utc::now())),
            official: Some(self.official),
            applicant: Some(self.applicant),
            documents: self.documents,
            payload_schema: self.payload_schema,
            classification: self.classification as i32,
            test: self.test,
            archive: self.archive,
            application_received_at: self.application_received_at.map(mev_proto::time::to_wire),
            deadline_policy: self.deadline_policy,
            ..Default::default()
        };
        (header, self.payload)
    }
}

/// What a provider answers (Tatarstan §3.9–3.13).
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// The requested documents or data.
    Documents {
        provided: Vec<RequestedDocument>,
        payload_schema: String,
        payload: Vec<u8>,
    },
    /// A refusal for lack of legal grounds, citing the legal act.
    Refusal {
        partial: bool,
        legal_act: String,
        reason: String,
        refused_codes: Vec<String>,
    },
    /// Not held by this body: why, and who may hold it.
    NotHeld {
        reason: String,
        possible_holder: String,
    },
    /// What exact information is missing.
    InsufficientData { missing: Vec<String> },
}

impl ReplyBody {
    /// A short name of the kind: `documents`, `refusal`, `not_held`, `insufficient_data`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ReplyBody::Documents { .. } => "documents",
            ReplyBody::Refusal { .. } => "refusal",
            ReplyBody::NotHeld { .. } => "not_held",
            ReplyBody::InsufficientData { .. } => "insufficient_data",
        }
    }

    /// The wire outcome and payload of this body.
    pub(crate) fn into_wire(self) -> (pb::ReplyOutcome, String, Vec<u8>) {
        let (outcome, schema, payload) = match self {
            ReplyBody::Documents {
                provided,
                payload_schema,
                payload,
            } => (
                Outcome::Documents(pb::Documents { provided }),
                payload_schema,
                payload,
            ),
            ReplyBody::Refusal {
                partial,
                legal_act,
                reason,
                refused_codes,
            } => (
                Outcome::Refusal(pb::Refusal {
                    partial,
                    legal_act,
                    reason,
                    refused_codes,
                }),
                String::new(),
                Vec::new(),
            ),
            ReplyBody::NotHeld {
                reason,
                possible_holder,
            } => (
                Outcome::NotHeld(pb::NotHeld {
                    reason,
                    possible_holder,
                }),
                String::new(),
                Vec::new(),
            ),
            ReplyBody::InsufficientData { missing } => (
                Outcome::InsufficientData(pb::InsufficientData { missing }),
                String::new(),
                Vec::new(),
            ),
        };
        (
            pb::ReplyOutcome {
                outcome: Some(outcome),
            },
            schema,
            payload,
        )
    }

    /// The body of a verified reply header and payload.
    pub(crate) fn from_wire(header: &Header, payload: Vec<u8>) -> Option<ReplyBody> {
        Some(match header.reply.as_ref()?.outcome.as_ref()? {
            Outcome::Documents(d) => ReplyBody::Documents {
                provided: d.provided.clone(),
                payload_schema: header.payload_schema.clone(),
                payload,
            },
            Outcome::Refusal(r) => ReplyBody::Refusal {
                partial: r.partial,
                legal_act: r.legal_act.clone(),
                reason: r.reason.clone(),
                refused_codes: r.refused_codes.clone(),
            },
            Outcome::NotHeld(n) => ReplyBody::NotHeld {
                reason: n.reason.clone(),
                possible_holder: n.possible_holder.clone(),
            },
            Outcome::InsufficientData(d) => ReplyBody::InsufficientData {
                missing: d.missing.clone(),
            },
        })
    }
}

/// A verified request handed to the provider's handler.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// The verified header (the sender's signature checked end to end).
    pub header: Header,
    /// The payload; decrypted already if the sender encrypted it to this
    /// agency's agreement key (see [`IncomingRequest::was_encrypted`]).
    pub payload: Vec<u8>,
    /// The whole signed envelope, for the agency's own archive (as
    /// transmitted: an encrypted payload stays encrypted in it).
    pub envelope: Vec<u8>,
}

impl IncomingRequest {
    /// Whether the sender encrypted the payload to this agency's agreement
    /// key (the exchange could not read it, nor check it against the
    /// service's schema: decode it strictly).
    pub fn was_encrypted(&self) -> bool {
        self.header.payload_encryption.is_some()
    }
}

/// A verified reply to one of our requests.
#[derive(Debug, Clone)]
pub struct IncomingReply {
    pub header: Header,
    pub body: ReplyBody,
    /// The whole signed envelope, as the provider signed it.
    pub envelope: Vec<u8>,
}

/// The exchange's signed receipt for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptInfo {
    pub message_id: String,
    pub digest: [u8; 32],
    pub accepted: bool,
    /// The stable code (0 when accepted; 404 for an already accepted copy).
    pub code: u32,
    pub reason: String,
    /// The legal receipt time (UZ annex 2 §16).
    pub accepted_at: DateTime<Utc>,
}

impl ReceiptInfo {
    /// The rejection this receipt states, if it is negative.
    pub fn rejection(&self) -> Option<Rejection> {
        (!self.accepted).then(|| {
            Rejection::new(
                ErrorCode::from_code(self.code).unwrap_or(ErrorCode::Internal),
                self.reason.clone(),
            )
        })
    }
}

/// Things that arrive besides requests and the replies we wait for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AdapterEvent {
    /// A notice from the exchange (deadline at risk, breached, ...).
    Notice { header: Header, notice: pb::Notice },
    /// A status update about an application (KZ order §5.1, §8).
    Status {
        header: Header,
        status: pb::StatusUpdate,
    },
    /// A receipt for a message no caller waits on (our replies, status updates).
    Receipt(ReceiptInfo),
    /// A reply to a request this process no longer waits on (sent before a restart).
    Reply(IncomingReply),
}
