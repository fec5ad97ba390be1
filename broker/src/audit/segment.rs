//! Sealed segments: retention without losing verifiability. Entries up to a
//! point are written to a segment file, fsynced, and only then removed from
//! the live store (their 32-byte leaf hashes stay, so the tree, checkpoints
//! and proofs of later entries still work). Each segment names the SHA-256 of
//! the segment before it and the Merkle root of the whole tree at its end, so
//! the files chain to each other and to the checkpoints.
//!
//! File `segment-<first>-<end>.mevj`: `MEVSEG1\n`, the header as one JSON
//! line, then each entry as a 4-byte big-endian length and its stored bytes.

use crate::journal::merkle::{self, Frontier};
use crate::store::prelude::*;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"MEVSEG1\n";

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// The first entry it holds.
    pub first: u64,
    /// One past the last entry it holds.
    pub end: u64,
    /// SHA-256 (hex) of the previous segment file; empty for the first.
    pub prev_segment: String,
    /// The Merkle root (hex) of entries `0..end`.
    pub root_at_end: String,
    /// When it was sealed (UTC ms).
    pub sealed_at_ms: i64,
}

/// Why sealing or reading a segment failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}: {1}")]
    Format(PathBuf, String),
    #[error("entries {0}..{1} are not all in the live store (already sealed or never written)")]
    Range(u64, u64),
    #[error("entry {0} holds an envelope still waiting in the outbox; seal up to {0} at most")]
    Pending(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |e| SegmentError::Io(path.to_path_buf(), e)
}

/// The segment files in `dir`, in order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SegmentError> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(it) => it
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".mevj"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(SegmentError::Io(dir.to_path_buf(), e)),
    };
    out.sort();
    Ok(out)
}

/// Seals entries `sealed_upto..upto` into a new segment file in `dir` and
/// removes their bodies from the live store. Returns the file written.
pub fn seal(
    store: &(impl JournalState + OutboxState),
    upto: u64,
    dir: &Path,
    now_ms: i64,
) -> Result<PathBuf, SegmentError> {
    let first = store.journal_sealed_upto()?;
    let (size, _) = store.journal_head()?;
    if upto <= first || upto > size {
        return Err(SegmentError::Range(first, upto));
    }
    // The outbox publishes envelopes from their journal entries.
    if let Some(pending) = store.outbox_oldest_entry()?.filter(|p| *p < upto) {
        return Err(SegmentError::Pending(pending));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let prev_segment = match list(dir)?.last() {
        Some(p) if first > 0 => {
            let (h, _) = read_header(p)?;
            if h.end != first {
                return Err(SegmentError::Format(
                    p.clone(),
                    format!(
                        "the newest segment ends at {}, the live journal starts at {first}",
                        h.end
                    ),
                ));
            }
            merkle::to_hex(&mev_proto::envelope::sha256(
                &std::fs::read(p).map_err(io(p))?,
            ))
        }
        _ if first > 0 => {
            return Err(SegmentError::Format(
                dir.to_path_buf(),
                format!("entries before {first} were sealed, but their segments are not here"),
            ))
        }
        _ => String::new(),
    };
    let leaves = store.journal_leaves(upto)?;
    let header = SegmentHeader {
        first,
        end: upto,
        prev_segment,
        root_at_end: merkle::to_hex(&Frontier::from_leaves(&leaves).root()),
        sealed_at_ms: now_ms,
    };
    let path = dir.join(format!("segment-{first:012}-{upto:012}.mevj"));
    let tmp = path.with_extension("tmp");
    {
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(MAGIC).map_err(io(&tmp))?;
        serde_json::to_writer(&mut w, &header)
            .map_err(|e| SegmentError::Format(tmp.clone(), e.to_string()))?;
        w.write_all(b"\n").map_err(io(&tmp))?;
        let mut missing = None;
        let mut failed = None;
        let mut expected = first;
        store.journal_scan(first, |seq, bytes, _| {
            if seq >= upto {
                return false;
            }
            if seq != expected {
                missing = Some(expected);
                return false;
            }
            expected += 1;
            let r = w
                .write_all(&(bytes.len() as u32).to_be_bytes())
                .and_then(|()| w.write_all(bytes));
            if let Err(e) = r {
                failed = Some(e);
                return false;
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(SegmentError::Io(tmp, e));
        }
        if missing.is_some() || expected != upto {
            let _ = std::fs::remove_file(&tmp);
            return Err(SegmentError::Range(first, upto));
        }
        let file = w
            .into_inner()
            .map_err(|e| SegmentError::Io(tmp.clone(), e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // Durable on disk first; only then do the bodies leave the live store.
    store.journal_seal(upto)?;
    Ok(path)
}

fn read_header(path: &Path) -> Result<(SegmentHeader, usize), SegmentError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_header(path, &bytes)
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(SegmentHeader, usize), SegmentError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| SegmentError::Format(path.to_path_buf(), "not a segment file".into()))?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| SegmentError::Format(path.to_path_buf(), "no header line".into()))?;
    let header: SegmentHeader = serde_json::from_slice(&rest[..nl])
        .map_err(|e| SegmentError::Format(path.to_path_buf(), format!("header: {e}")))?;
    Ok((header, MAGIC.len() + nl + 1))
}

/// A segment read back: its header, entries (sequence, stored bytes), and
/// the SHA-256 of the whole file (what the next segment names).
pub struct Segment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub entries: Vec<(u64, Vec<u8>)>,
    pub sha256: String,
}

/// Reads a segment file.
pub fn read(path: &Path) -> Result<Segment, SegmentError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (header, mut at) = parse_header(path, &bytes)?;
    let mut entries = Vec::new();
    let mut seq = header.first;
    while at < bytes.len() {
        let len: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|l| l.try_into().ok())
            .ok_or_else(|| {
                SegmentError::Format(path.to_path_buf(), format!("entry {seq}: truncated length"))
            })?;
        let len = u32::from_be_bytes(len) as usize;
        let body = bytes.get(at + 4..at + 4 + len).ok_or_else(|| {
            SegmentError::Format(path.to_path_buf(), format!("entry {seq}: truncated"))
        })?;
        entries.push((seq, body.to_vec()));
        seq += 1;
        at += 4 + len;
    }
    Ok(Segment {
        path: path.to_path_buf(),
        sha256: merkle::to_hex(&mev_proto::envelope::sha256(&bytes)),
        header,
        entries,
    })
}
