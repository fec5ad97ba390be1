//! What an auditor does with a journal: verify it end to end, trace one
//! message's history, export entries, prove one entry's inclusion under a
//! signed checkpoint (and check such a proof offline), and replay a range.

use crate::journal::checkpoint::{from_hex_bytes, to_hex_bytes, Checkpoint};
use crate::journal::entry::{leaf_of, Entry};
use crate::journal::merkle::{self, Frontier, Hash};
use crate::store::prelude::*;
use crate::store::{EventKind, StoreError};
use mev_proto::crypto::SignatureVerifier;
use mev_proto::envelope::{self, Limits};
use mev_proto::trust::TrustStore;
use serde::{Deserialize, Serialize};

/// The first thing found wrong, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry it concerns, if it concerns one.
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "entry {s}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    /// Envelopes whose original signature was checked.
    pub signatures: u64,
    /// Whether signatures were also checked to chain to trusted CAs.
    pub chains_checked: bool,
    pub checkpoints: u64,
    /// Segment files checked.
    pub segments: u64,
    /// Sealed entries taken on their stored leaf hashes (no segments given).
    pub unchecked_sealed: u64,
    /// The first problem, if any; verification stops there.
    pub problem: Option<Problem>,
}

/// Kinds whose envelope was accepted (or made) by the exchange and so must
/// still verify; refused ones are kept as evidence of what was refused.
fn signature_must_verify(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Received
            | EventKind::ReplyReceived
            | EventKind::ReceiptSent
            | EventKind::NoticeSent
    )
}

/// Checks an envelope's signature: with `trust`, the full chain to a
/// trusted CA and the agency binding at `at`; without, against the key of
/// the certificate it carries.
pub fn check_envelope(
    bytes: &[u8],
    at: chrono::DateTime<chrono::Utc>,
    verifier: &dyn SignatureVerifier,
    trust: Option<&TrustStore>,
) -> Result<(), String> {
    check_envelope_cached(bytes, at, verifier, trust, &mut SpkiCache::default())
}

/// Certificate → its public key, so a journal of a million envelopes from a
/// few signers parses each certificate once.
#[derive(Default)]
pub struct SpkiCache(std::collections::HashMap<Hash, Vec<u8>>);

fn check_envelope_cached(
    bytes: &[u8],
    at: chrono::DateTime<chrono::Utc>,
    verifier: &dyn SignatureVerifier,
    trust: Option<&TrustStore>,
    cache: &mut SpkiCache,
) -> Result<(), String> {
    let limits = Limits {
        max_message_bytes: usize::MAX,
        max_repeated: usize::MAX,
    };
    let opened = envelope::open(bytes, &limits).map_err(|r| r.reason)?;
    if let Some(trust) = trust {
        return opened
            .verify(trust, verifier, at)
            .map(|_| ())
            .map_err(|r| r.reason);
    }
    let sig = opened.envelope.signature.as_ref().ok_or("no signature")?;
    let cert = sig.certificate_chain.first().ok_or("no certificate")?;
    let key = envelope::sha256(cert);
    let spki = match cache.0.get(&key) {
        Some(s) => s,
        None => {
            let s = crate::journal::checkpoint::spki_of(cert)?;
            cache.0.entry(key).or_insert(s)
        }
    };
    let alg = mev_proto::pb::SignatureAlgorithm::try_from(sig.algorithm)
        .map_err(|_| format!("unknown algorithm {}", sig.algorithm))?;
    verifier
        .verify(alg, spki, &opened.envelope.header, &sig.value)
        .map_err(|e| e.to_string())
}

/// Walks entries in order, checking each and the tree against checkpoints.
struct Walker<'a> {
    verifier: &'a dyn SignatureVerifier,
    trust: Option<&'a TrustStore>,
    checkpoints: Vec<(u64, Result<Checkpoint, String>)>,
    next_cp: usize,
    frontier: Frontier,
    prev: Option<Hash>,
    out: Verified,
    /// Envelopes whose signatures are still to be checked, in a batch.
    pending: Vec<(u64, Vec<u8>, chrono::DateTime<chrono::Utc>)>,
}

/// Signatures checked together, across cores.
const SIGNATURE_BATCH: usize = 4096;

fn bad(seq: Option<u64>, what: String) -> Option<Problem> {
    Some(Problem { seq, what })
}

impl Walker<'_> {
    /// Checks one entry; `stored_leaf` is the live store's leaf for it.
    fn entry(&mut self, seq: u64, bytes: &[u8], stored_leaf: Option<Hash>) -> Option<Problem> {
        let expected = self.frontier.size();
        if seq != expected {
            return bad(
                Some(expected),
                format!("missing (the next entry present is {seq}): entries were removed"),
            );
        }
        let entry = match Entry::decode(bytes) {
            Ok(e) => e,
            Err(e) => return bad(Some(seq), format!("altered: {e}")),
        };
        if entry.head.seq != seq {
            return bad(
                Some(seq),
                format!(
                    "holds the record of entry {}: entries were reordered or moved",
                    entry.head.seq
                ),
            );
        }
        let leaf = leaf_of(bytes);
        if stored_leaf != Some(leaf) {
            return bad(
                Some(seq),
                "altered: its hash differs from the Merkle leaf recorded for it".into(),
            );
        }
        let want_prev = self.prev.as_ref().map(merkle::to_hex).unwrap_or_default();
        if entry.head.prev != want_prev {
            return bad(
                seq.checked_sub(1),
                format!("altered or replaced: entry {seq} links to a different predecessor"),
            );
        }
        if !entry.envelope.is_empty() && signature_must_verify(entry.head.event.kind) {
            let at =
                chrono::DateTime::from_timestamp_millis(entry.head.event.at_ms).unwrap_or_default();
            self.pending.push((seq, entry.envelope, at));
            if self.pending.len() >= SIGNATURE_BATCH {
                if let Some(p) = self.flush_signatures() {
                    return Some(p);
                }
            }
        }
        self.push(leaf)
    }

    /// Checks the signatures gathered so far, on every core; the first
    /// failure (by sequence) is the problem.
    fn flush_signatures(&mut self) -> Option<Problem> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return None;
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = pending.len().div_ceil(threads);
        let (verifier, trust) = (self.verifier, self.trust);
        let first_bad = std::thread::scope(|scope| {
            let handles: Vec<_> = pending
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut cache = SpkiCache::default();
                        part.iter().find_map(|(seq, env, at)| {
                            check_envelope_cached(env, *at, verifier, trust, &mut cache)
                                .err()
                                .map(|e| (*seq, e))
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .min_by_key(|(seq, _)| *seq)
        });
        match first_bad {
            Some((seq, e)) => bad(
                Some(seq),
                format!("the stored envelope's signature does not verify: {e}"),
            ),
            None => {
                self.out.signatures += pending.len() as u64;
                None
            }
        }
    }

    /// Adds a leaf to the tree and checks the checkpoints it completes.
    fn push(&mut self, leaf: Hash) -> Option<Problem> {
        self.frontier.push(leaf);
        self.prev = Some(leaf);
        while let Some((size, cp)) = self.checkpoints.get(self.next_cp) {
            let size = *size;
            if size > self.frontier.size() {
                break;
            }
            self.next_cp += 1;
            let cp = match cp {
                Ok(cp) => cp,
                Err(e) => {
                    return bad(
                        None,
                        format!("checkpoint of size {size} does not decode: {e}"),
                    )
                }
            };
            if cp.size != size {
                return bad(
                    None,
                    format!("checkpoint kept under size {size} claims size {}", cp.size),
                );
            }
            if let Err(e) = cp.verify(self.verifier, self.trust) {
                return bad(None, format!("checkpoint of size {size}: {e}"));
            }
            let root = merkle::to_hex(&self.frontier.root());
            if root != cp.root {
                return bad(
                    size.checked_sub(1),
                    format!(
                        "the Merkle root of entries 0..{size} is {root}, but the checkpoint signed at {} says {}: an entry before {size} was altered",
                        fmt_ms(cp.at_ms),
                        cp.root
                    ),
                );
            }
            self.out.checkpoints += 1;
        }
        None
    }
}

/// Verifies every entry, the hash chain, the Merkle tree against every
/// checkpoint, every checkpoint's signature and every accepted envelope's
/// signature. Entries sealed away are read from the segment files in
/// `segments` (their chain checked too); without it, their stored leaf
/// hashes are taken as they are. `progress` is called with entries done.
pub fn verify(
    store: &impl JournalState,
    verifier: &dyn SignatureVerifier,
    trust: Option<&TrustStore>,
    segments: Option<&std::path::Path>,
    mut progress: impl FnMut(u64),
) -> Result<Verified, StoreError> {
    let mut checkpoints: Vec<(u64, Result<Checkpoint, String>)> = store
        .checkpoints()?
        .into_iter()
        .map(|(size, bytes)| {
            (
                size,
                serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            )
        })
        .collect();
    checkpoints.sort_by_key(|(s, _)| *s);
    let mut w = Walker {
        verifier,
        trust,
        checkpoints,
        next_cp: 0,
        frontier: Frontier::new(),
        prev: None,
        pending: Vec::new(),
        out: Verified {
            chains_checked: trust.is_some(),
            ..Verified::default()
        },
    };
    let sealed = store.journal_sealed_upto()?;
    let mut problem = None;
    if sealed > 0 {
        let leaves = store.journal_leaves(sealed)?;
        match segments {
            Some(dir) => problem = walk_segments(&mut w, dir, &leaves, sealed),
            None => {
                w.out.unchecked_sealed = sealed;
                for leaf in leaves {
                    if let Some(p) = w.push(leaf) {
                        problem = Some(p);
                        break;
                    }
                }
            }
        }
    }
    if problem.is_none() {
        store.journal_scan(sealed, |seq, bytes, stored_leaf| {
            problem = w.entry(seq, bytes, stored_leaf);
            if w.frontier.size().is_multiple_of(10_000) {
                progress(w.frontier.size());
            }
            problem.is_none()
        })?;
    }
    // Signatures of entries before the first structural problem come first.
    if let Some(p) = w.flush_signatures() {
        problem = Some(p);
    }
    let mut out = w.out;
    out.entries = w.frontier.size();
    progress(out.entries);
    if problem.is_none() {
        let (head_size, _) = store.journal_head()?;
        if head_size > out.entries {
            problem = bad(
                Some(out.entries),
                format!(
                    "missing: the log was truncated ({} entries recorded, {} remain)",
                    head_size, out.entries
                ),
            );
        }
    }
    if problem.is_none() {
        if let Some((size, cp)) = w.checkpoints.get(w.next_cp) {
            let at = cp.as_ref().map(|c| fmt_ms(c.at_ms)).unwrap_or_default();
            problem = bad(
                Some(out.entries),
                format!(
                    "missing: the log was truncated; the checkpoint signed at {at} covers {size} entries, only {} remain",
                    out.entries
                ),
            );
        }
    }
    out.problem = problem;
    Ok(out)
}

/// Checks the segment files in `dir`: each names the one before it, starts
/// where it ended, holds entries whose hashes are the stored leaves, and
/// ends at the recorded tree root; together they cover `0..sealed`.
fn walk_segments(
    w: &mut Walker<'_>,
    dir: &std::path::Path,
    leaves: &[Hash],
    sealed: u64,
) -> Option<Problem> {
    let files = match super::segment::list(dir) {
        Ok(f) => f,
        Err(e) => return bad(None, e.to_string()),
    };
    let mut prev_sha = String::new();
    for path in files {
        let seg = match super::segment::read(&path) {
            Ok(s) => s,
            Err(e) => return bad(None, format!("segment {}: {e}", path.display())),
        };
        let name = path.display();
        if seg.header.prev_segment != prev_sha {
            return bad(
                Some(seg.header.first),
                format!("segment {name} does not chain to the segment before it (altered, removed or reordered)"),
            );
        }
        if seg.header.first != w.frontier.size() {
            return bad(
                Some(w.frontier.size()),
                format!("missing: segment {name} starts at {}", seg.header.first),
            );
        }
        for (seq, bytes) in &seg.entries {
            let stored = leaves.get(*seq as usize).copied();
            if let Some(p) = w.entry(*seq, bytes, stored) {
                return Some(Problem {
                    seq: p.seq,
                    what: format!("{} (in segment {name})", p.what),
                });
            }
        }
        if w.frontier.size() != seg.header.end
            || merkle::to_hex(&w.frontier.root()) != seg.header.root_at_end
        {
            return bad(
                Some(seg.header.end.saturating_sub(1)),
                format!("segment {name} does not end at the tree it recorded"),
            );
        }
        w.out.segments += 1;
        prev_sha = seg.sha256;
    }
    if w.frontier.size() != sealed {
        return bad(
            Some(w.frontier.size()),
            format!(
                "missing: entries {}..{sealed} were sealed but no segment holds them",
                w.frontier.size()
            ),
        );
    }
    None
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An entry's stored bytes: from the live store, or, once sealed, from the
/// segment files in `segments`.
pub fn entry_bytes(
    store: &impl JournalState,
    seq: u64,
    segments: Option<&std::path::Path>,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(b) = store.journal_entry(seq)? {
        return Ok(Some(b));
    }
    let Some(dir) = segments else {
        return Ok(None);
    };
    let files = super::segment::list(dir).map_err(|e| StoreError::Journal(e.to_string()))?;
    for path in files {
        let seg = super::segment::read(&path).map_err(|e| StoreError::Journal(e.to_string()))?;
        if (seg.header.first..seg.header.end).contains(&seq) {
            return Ok(seg
                .entries
                .into_iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, b)| b));
        }
    }
    Ok(None)
}

/// The entries about a message and the messages answering it, in order
/// (sealed ones read from `segments`, if given).
pub fn trace(
    store: &impl JournalState,
    message_id: &str,
    segments: Option<&std::path::Path>,
) -> Result<Vec<Entry>, StoreError> {
    let mut seqs: Vec<u64> = store.journal_about(message_id)?;
    let mut related = Vec::new();
    for &s in &seqs {
        if let Some(bytes) = entry_bytes(store, s, segments)? {
            if let Ok(e) = Entry::decode(&bytes) {
                let id = &e.head.event.message_id;
                if id != message_id && e.head.event.in_reply_to == message_id {
                    related.push(id.clone());
                }
            }
        }
    }
    for id in related {
        seqs.extend(store.journal_about(&id)?);
    }
    seqs.sort_unstable();
    seqs.dedup();
    let mut out = Vec::new();
    for s in seqs {
        if let Some(bytes) = entry_bytes(store, s, segments)? {
            out.push(
                Entry::decode(&bytes)
                    .map_err(|e| StoreError::Journal(format!("entry {s}: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// A self-contained proof that one entry is in the journal under a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub message_id: String,
    /// The entry's index (its sequence).
    pub index: u64,
    /// The entry's stored bytes (hex): its head and the signed envelope.
    pub entry: String,
    /// The audit path (hex), RFC 9162 §2.1.3.
    pub path: Vec<String>,
    /// The signed tree head the path leads to.
    pub checkpoint: Checkpoint,
}

/// Why no proof can be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("no journal entry is about message {0}")]
    Unknown(String),
    #[error("entry {0} is newer than the newest checkpoint; the broker writes one every 10 s and when it stops")]
    NoCheckpoint(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// The inclusion proof of the first entry recording message `id` (sealed
/// entries read from `segments`, if given).
pub fn prove(
    store: &impl JournalState,
    id: &str,
    segments: Option<&std::path::Path>,
) -> Result<InclusionProof, ProveError> {
    let mut target = None;
    for s in store.journal_about(id)? {
        if let Some(bytes) = entry_bytes(store, s, segments)? {
            if Entry::decode(&bytes).is_ok_and(|e| e.head.event.message_id == id) {
                target = Some((s, bytes));
                break;
            }
        }
    }
    let (index, bytes) = target.ok_or_else(|| ProveError::Unknown(id.to_string()))?;
    let (size, cp) = store
        .checkpoints()?
        .into_iter()
        .rev()
        .find(|(size, _)| *size > index)
        .ok_or(ProveError::NoCheckpoint(index))?;
    let checkpoint: Checkpoint =
        serde_json::from_slice(&cp).map_err(|e| ProveError::Checkpoint(e.to_string()))?;
    let leaves = store.journal_leaves(size)?;
    if leaves.len() as u64 != size {
        return Err(ProveError::Checkpoint(format!(
            "the checkpoint covers {size} entries but {} leaf hashes are stored",
            leaves.len()
        )));
    }
    let path = merkle::try_inclusion_proof(&leaves, index)
        .map_err(|e| ProveError::Checkpoint(e.to_string()))?;
    Ok(InclusionProof {
        message_id: id.to_string(),
        index,
        entry: to_hex_bytes(&bytes),
        path: path.iter().map(merkle::to_hex).collect(),
        checkpoint,
    })
}

/// Checks a proof offline: the checkpoint's signature (and, given `trust`,
/// the broker's certificate), then the entry's path to the signed root.
/// Returns the entry it proves.
pub fn check_proof(
    proof: &InclusionProof,
    verifier: &dyn SignatureVerifier,
    trust: Option<&TrustStore>,
) -> Result<Entry, String> {
    proof
        .checkpoint
        .verify(verifier, trust)
        .map_err(|e| e.to_string())?;
    let bytes = from_hex_bytes(&proof.entry).ok_or("entry is not hex")?;
    let entry = Entry::decode(&bytes).map_err(|e| format!("entry: {e}"))?;
    if entry.head.seq != proof.index {
        return Err(format!(
            "the entry says it is number {}, the proof says {}",
            entry.head.seq, proof.index
        ));
    }
    if entry.head.event.message_id != proof.message_id {
        return Err(format!(
            "the entry records message {}, not {}",
            entry.head.event.message_id, proof.message_id
        ));
    }
    let path: Vec<Hash> = proof
        .path
        .iter()
        .map(|h| merkle::from_hex(h).map_err(|e| format!("path: {e}")))
        .collect::<Result<_, _>>()?;
    let root = merkle::from_hex(&proof.checkpoint.root).map_err(|e| format!("root: {e}"))?;
    merkle::verify_inclusion(
        &leaf_of(&bytes),
        proof.index,
        proof.checkpoint.size,
        &path,
        &root,
    )
    .map_err(|e| e.to_string())?;
    Ok(entry)
}

/// The accepted messages (requests, replies, status updates) recorded with
/// `from <= at < to`, in order: (message id, envelope).
pub fn replay_range(
    store: &impl JournalState,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    let mut bad = None;
    store.journal_scan(0, |seq, bytes, _| {
        match Entry::decode(bytes) {
            Ok(e) => {
                let ev = &e.head.event;
                if matches!(ev.kind, EventKind::Received | EventKind::ReplyReceived)
                    && (from_ms..to_ms).contains(&ev.at_ms)
                    && !e.envelope.is_empty()
                {
                    out.push((ev.message_id.clone(), e.envelope));
                }
            }
            Err(e) => {
                bad = Some(format!("entry {seq}: {e}"));
                return false;
            }
        }
        true
    })?;
    match bad {
        Some(b) => Err(StoreError::Journal(b)),
        None => Ok(out),
    }
}
