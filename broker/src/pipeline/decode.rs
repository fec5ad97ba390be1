//! Stage 1: decode the bytes and check the envelope's integrity and limits.

use mev_proto::envelope::{self, Limits, Opened};
use mev_proto::{ErrorCode, Rejection};
use prost::Message;

/// What is known of a message that failed before it was verified.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The claimed sender, if the header decoded.
    pub sender: Option<String>,
    pub message_id: String,
    pub digest: Option<[u8; 32]>,
    pub recipient: String,
    pub service: String,
    pub in_reply_to: String,
    pub rejection: Rejection,
}

impl Refused {
    /// A refusal of an opened message, attributed to its claimed sender.
    pub fn of(opened: &Opened, rejection: Rejection) -> Self {
        let h = &opened.header;
        Refused {
            sender: (!h.sender.is_empty()).then(|| h.sender.clone()),
            message_id: h.message_id.clone(),
            digest: Some(opened.digest),
            recipient: h.recipient.clone(),
            service: h.service.clone(),
            in_reply_to: h.in_reply_to.clone(),
            rejection,
        }
    }

    fn unattributed(rejection: Rejection) -> Self {
        Refused {
            sender: None,
            message_id: String::new(),
            digest: None,
            recipient: String::new(),
            service: String::new(),
            in_reply_to: String::new(),
            rejection,
        }
    }
}

/// Decodes `bytes` into an envelope whose payload digest matches its header.
pub fn run(bytes: &[u8], limits: &Limits) -> Result<Opened, Box<Refused>> {
    match envelope::open(bytes, limits) {
        Ok(o) => Ok(o),
        Err(rejection) => {
            // Attribute what we can: a decodable header names its sender.
            let header = mev_proto::Envelope::decode(bytes)
                .ok()
                .filter(|_| {
                    rejection.code == ErrorCode::PayloadDigestMismatch
                        || rejection.code == ErrorCode::TooManyItems
                })
                .and_then(|e| {
                    let digest = envelope::sha256(&e.header);
                    mev_proto::Header::decode(e.header.as_slice())
                        .ok()
                        .map(|h| (h, digest))
                });
            Err(Box::new(match header {
                Some((h, digest)) => Refused {
                    sender: (!h.sender.is_empty()).then(|| h.sender.clone()),
                    message_id: h.message_id,
                    digest: Some(digest),
                    recipient: h.recipient,
                    service: h.service,
                    in_reply_to: h.in_reply_to,
                    rejection,
                },
                None => Refused::unattributed(rejection),
            }))
        }
    }
}
