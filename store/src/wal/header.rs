//! The log file's header: [`MAGIC`], [`FORMAT_VERSION`] and
//! [`KEY_ENCODING`], written when a log is created and checked at open, so
//! that a log of another version is refused with what to do instead of
//! being replayed as garbage.

use super::*;

pub(super) fn file_header() -> [u8; FILE_HEADER as usize] {
    let mut h = [0u8; FILE_HEADER as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..].copy_from_slice(&KEY_ENCODING.to_le_bytes());
    h
}

/// What to do with a log of another version.
const STOP_CLEANLY: &str = "open it with the version of mev that wrote it and stop that \
     cleanly (a clean stop empties the log into the database), then start this version";

/// Reads the log's header: true if the file is a log of this version (its
/// records follow the header); false if it holds nothing to replay (a new,
/// empty file, a header torn at creation, or a log of the version before
/// headers whose records the database already covers: the replay of that
/// version would apply nothing, so the database alone is the whole state and
/// the log may be rewritten in this format). Refuses anything else: another
/// format or key encoding, a header-less log with records to replay, or a
/// file that is neither.
pub(super) fn check_header(
    path: &Path,
    file: &File,
    size: u64,
    applied: u64,
) -> Result<bool, Error> {
    let refuse = |reason: String| Error::Version {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if size < FILE_HEADER {
        // No record (16 bytes of header at least) can be whole in it.
        return Ok(false);
    }
    let mut h = [0u8; FILE_HEADER as usize];
    file.read_exact_at(&mut h, 0).map_err(io)?;
    let word = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    if h[..8] == MAGIC {
        let (format, keys) = (word(8), word(12));
        if format != FORMAT_VERSION {
            return Err(refuse(format!(
                "written in log format {format}, this version of mev reads format \
                 {FORMAT_VERSION}: {STOP_CLEANLY}"
            )));
        }
        if keys != KEY_ENCODING {
            return Err(refuse(format!(
                "its records use key encoding {keys}, this version of mev uses \
                 {KEY_ENCODING}: {STOP_CLEANLY}"
            )));
        }
        return Ok(true);
    }
    if h == [0u8; FILE_HEADER as usize] {
        return Ok(false); // zeros: the earlier format's grown, unwritten file
    }
    // The format before headers: a record header at offset 0.
    let len = u64::from(word(0));
    let lsn = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
    let sum = word(12);
    let whole = len <= size - FILE_HEADER && {
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, FILE_HEADER).map_err(io)?;
        checksum(lsn, &payload) == sum
    };
    if !whole {
        return Err(refuse(format!(
            "not a redo log of this version (no header {:?}) nor one of an earlier \
             version; if an earlier mev wrote it, {STOP_CLEANLY}",
            String::from_utf8_lossy(&MAGIC).trim_end()
        )));
    }
    if lsn > applied {
        return Err(refuse(format!(
            "written by an earlier version of mev (a log without a header) and holds \
             records from {lsn} on that the database does not: {STOP_CLEANLY}"
        )));
    }
    tracing::info!(
        log = %path.display(),
        "a redo log of the earlier format with nothing to replay; rewritten in format {FORMAT_VERSION}"
    );
    Ok(false)
}
