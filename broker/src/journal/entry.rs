//! One journal entry as stored: `MEVJ1`, a 4-byte big-endian length, the
//! head as JSON, then the signed envelope exactly as it was received or sent
//! (empty when the event has none). The Merkle leaf is the hash of these
//! bytes as stored, so nothing is ever re-encoded before hashing.

use super::event::Event;
use super::merkle::{self, Hash};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 5] = b"MEVJ1";

/// What an entry says, besides its envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Its position in the journal (the Merkle leaf index).
    pub seq: u64,
    /// The leaf hash of the entry before it (hex; empty for the first): a
    /// hash chain that locates the first altered, removed or reordered entry.
    pub prev: String,
    /// When, in UTC (RFC 3339).
    pub at_utc: String,
    /// When, in the sender's and the recipient's local time (KZ order §10).
    pub sender_local: String,
    pub recipient_local: String,
    /// What happened.
    pub event: Event,
    /// SHA-256 of the envelope bytes that follow (hex; empty when none).
    pub envelope_sha256: String,
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub head: Head,
    pub envelope: Vec<u8>,
}

/// Why stored bytes are not an entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("not a journal entry (bad magic or length)")]
    Framing,
    #[error("head does not decode: {0}")]
    Head(#[from] serde_json::Error),
    #[error("the envelope's SHA-256 is {actual}, the head says {claimed}")]
    EnvelopeDigest { claimed: String, actual: String },
}

/// The stored bytes of the entry `head` with `envelope` (what
/// [`Entry::encode`] gives, without an entry holding a copy of the envelope).
pub fn encode(head: &Head, envelope: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let head = serde_json::to_vec(head)?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + head.len() + envelope.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(envelope);
    Ok(out)
}

impl Entry {
    /// The stored bytes.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        encode(&self.head, &self.envelope)
    }

    /// Decodes stored bytes, checking the envelope against its digest.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(EntryError::Framing)?;
        let len: [u8; 4] = rest
            .get(..4)
            .and_then(|l| l.try_into().ok())
            .ok_or(EntryError::Framing)?;
        let len = u32::from_be_bytes(len) as usize;
        let head_bytes = rest.get(4..4 + len).ok_or(EntryError::Framing)?;
        let head: Head = serde_json::from_slice(head_bytes)?;
        let envelope = rest[4 + len..].to_vec();
        let actual = if envelope.is_empty() {
            String::new()
        } else {
            merkle::to_hex(&mev_proto::envelope::sha256(&envelope))
        };
        if actual != head.envelope_sha256 {
            return Err(EntryError::EnvelopeDigest {
                claimed: head.envelope_sha256,
                actual,
            });
        }
        Ok(Entry { head, envelope })
    }
}

/// The envelope in stored entry bytes, by their framing alone (no decoding
/// or digest check: the outbox publishes what the journal holds); `None` if
/// the framing is broken or the entry has no envelope.
pub fn envelope_of(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let envelope = rest.get(4usize.checked_add(len)?..)?;
    (!envelope.is_empty()).then_some(envelope)
}

/// The Merkle leaf hash of stored entry bytes.
pub fn leaf_of(bytes: &[u8]) -> Hash {
    merkle::leaf_hash(bytes)
}
