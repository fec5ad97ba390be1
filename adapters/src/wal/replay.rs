//! Reading the log back at open: the records after the database's last
//! checkpoint, applied in order in one durable transaction.

use super::{checksum, Error, Tables, APPLIED, DEL, HEADER, PUT};
use redb::{Database, WriteTransaction};
use std::path::{Path, PathBuf};

/// Applies the records of `bytes` after sequence `applied`, in one durable
/// transaction; returns the last sequence the database then covers.
pub(super) fn replay(
    db: &Database,
    path: &Path,
    bytes: &[u8],
    applied: u64,
    tables: Tables,
) -> Result<u64, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut last = applied;
    let mut rest = bytes;
    let tx = db.begin_write()?;
    while rest.len() >= HEADER {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let lsn = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
        let sum = u32::from_le_bytes(rest[12..16].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            break; // torn: its sync never returned
        };
        if checksum(lsn, payload) != sum {
            break; // torn, or what an emptied log held before
        }
        rest = &rest[HEADER + len..];
        if lsn <= last {
            if lsn <= applied {
                continue; // covered by the checkpoint
            }
            break; // stale bytes from before the log was emptied
        }
        if lsn != last + 1 {
            return Err(corrupt(format!(
                "record {lsn} follows {last}: the records between are missing"
            )));
        }
        apply(&tx, payload, tables).map_err(|e| match e {
            Error::Corrupt { reason, .. } => corrupt(format!("record {lsn}: {reason}")),
            e => e,
        })?;
        last = lsn;
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
