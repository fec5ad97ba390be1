//! Reading the log back at open: the records after the database's last
//! checkpoint, applied in order in durable transactions of bounded size.

use super::{checksum, Error, Tables, APPLIED, DEL, HEADER, PUT, REPLAY_CHUNK_BYTES};
use redb::{Database, WriteTransaction};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Applies the records `log` holds after sequence `applied`, in order, in
/// durable transactions of at most [`REPLAY_CHUNK_BYTES`] of records, each
/// recording the last sequence it covers; returns the last sequence the
/// database then covers.
///
/// The log's records run in sequence from its start: those of the current
/// round (the first one follows the checkpoint that restarted the log), then
/// what earlier rounds left (older sequences) or zeros. Reading stops at the
/// first record that is torn, zeros, or not newer than the one before it.
/// Records not newer than `applied` are read and skipped: after a crash in
/// the middle of an earlier replay, the database covers a prefix of the
/// round (its last chunk's sequence), and the replay goes on after it. So a
/// crash at any point of a replay loses nothing and applies nothing twice in
/// a way that matters (a chunk's writes and its sequence commit together;
/// the log is only emptied after the last chunk).
pub(super) fn replay(
    db: &Database,
    path: &Path,
    mut log: impl Read,
    size: u64,
    applied: u64,
    tables: Tables,
) -> Result<u64, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // The last sequence the database covers (committed or in `tx`), and
    // the last record read.
    let mut last = applied;
    let mut prev: Option<u64> = None;
    let mut left = size;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let mut tx = db.begin_write()?;
    let mut in_tx = 0usize;
    loop {
        if left < HEADER as u64 || !read_all(&mut log, &mut header).map_err(io)? {
            break; // the end of the file, or a torn header
        }
        left -= HEADER as u64;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
        let sum = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if lsn == 0 || prev.is_some_and(|p| lsn <= p) {
            // Zeros, or a record of an earlier round: what a restarted log
            // holds past its newest record.
            break;
        }
        if len as u64 > left {
            break; // torn: its length runs past the end of the file
        }
        left -= len as u64;
        payload.resize(len, 0);
        if !read_all(&mut log, &mut payload).map_err(io)? || checksum(lsn, &payload) != sum {
            break; // torn: its sync never returned
        }
        prev = Some(lsn);
        if lsn <= last {
            continue; // covered by the checkpoint, or by an earlier replay's chunk
        }
        if lsn != last + 1 {
            return Err(corrupt(format!(
                "record {lsn} follows {last}: the records between are missing"
            )));
        }
        apply(&tx, &payload, tables).map_err(|e| match e {
            Error::Corrupt { reason, .. } => corrupt(format!("record {lsn}: {reason}")),
            e => e,
        })?;
        last = lsn;
        in_tx += len;
        if in_tx >= REPLAY_CHUNK_BYTES {
            tx.open_table(APPLIED)?.insert("lsn", last)?;
            tx.commit()?;
            tx = db.begin_write()?;
            in_tx = 0;
        }
    }
    if last > applied {
        tx.open_table(APPLIED)?.insert("lsn", last)?;
        tracing::info!("replayed {} records of {}", last - applied, path.display());
    }
    // Durable either way: lazy commits redb held before a crash are gone,
    // and new records must follow a state the disk has.
    tx.commit()?;
    Ok(last)
}

/// Fills `buf` from `r`; false if the input ends first.
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies one record's writes.
fn apply(tx: &WriteTransaction, mut payload: &[u8], tables: Tables) -> Result<(), Error> {
    let bad = |reason: &str| Error::Corrupt {
        path: PathBuf::new(),
        reason: reason.to_string(),
    };
    while let Some((&op, rest)) = payload.split_first() {
        let (&name_len, rest) = rest.split_first().ok_or_else(|| bad("short write"))?;
        let name = rest
            .get(..name_len as usize)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| bad("a bad table name"))?;
        let mut rest = &rest[name_len as usize..];
        let key = take(&mut rest).ok_or_else(|| bad("a short key"))?;
        let value = match op {
            PUT => Some(take(&mut rest).ok_or_else(|| bad("a short value"))?),
            DEL => None,
            _ => return Err(bad(&format!("unknown write kind {op}"))),
        };
        let table = tables
            .iter()
            .find(|t| t.table_name() == name)
            .ok_or_else(|| bad(&format!("a table this version does not know: {name}")))?;
        table.apply(tx, key, value)?;
        payload = rest;
    }
    Ok(())
}

fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let v = rest.get(..len)?;
    *bytes = &rest[len..];
    Some(v)
}
