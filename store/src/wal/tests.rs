use super::*;
use redb::{ReadableTable, ReadableTableMetadata};

const A: TableDefinition<u64, &[u8]> = TableDefinition::new("a");
const B: TableDefinition<(u64, &str), ()> = TableDefinition::new("b");
static TABLES: [&dyn Replay; 2] = [&A, &B];

fn open(dir: &Path) -> Db {
    Db::open(&dir.join("t.redb"), &TABLES).unwrap()
}

/// What a crash at this moment leaves: the files as the disk (the page
/// cache) holds them, copied while the database is open.
fn crash_copy(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for f in ["t.redb", "t.redb.wal"] {
        std::fs::copy(from.join(f), to.path().join(f)).unwrap();
    }
    to
}

fn write(db: &Db, durable: bool, k: u64, v: &[u8]) {
    let tx = db.begin(durable).unwrap();
    {
        let mut a = tx.open(A).unwrap();
        a.insert(k, v).unwrap();
        let mut b = tx.open(B).unwrap();
        b.insert((k, "x"), ()).unwrap();
    }
    tx.commit().unwrap();
}

fn remove(db: &Db, k: u64) {
    let tx = db.begin(true).unwrap();
    {
        let mut a = tx.open(A).unwrap();
        a.remove(k).unwrap();
        tx.open(B).unwrap().remove((k, "x")).unwrap();
    }
    tx.commit().unwrap();
}

fn contents(db: &Db) -> (Vec<(u64, Vec<u8>)>, u64) {
    let tx = db.begin_read().unwrap();
    let a = tx.open_table(A).unwrap();
    let rows = a
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect();
    let b = tx.open_table(B).unwrap().len().unwrap();
    (rows, b)
}

fn wal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("t.redb.wal")).unwrap().len()
}

/// Where the log's next record goes (the file is longer: it grows in steps).
fn log_end(db: &Db) -> u64 {
    db.log.as_ref().unwrap().lock().unwrap().end
}

#[test]
fn durable_commits_survive_a_crash_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for k in 0..10 {
        write(&db, true, k, format!("v{k}").as_bytes());
    }
    write(&db, true, 3, b"replaced");
    remove(&db, 5);
    assert_eq!(
        db.logged(),
        12,
        "no checkpoint yet: every commit is in the log"
    );
    let crashed = crash_copy(dir.path());
    let live = contents(&db);
    drop(db);
    let reopened = open(crashed.path());
    assert_eq!(contents(&reopened), live);
    assert_eq!(reopened.stats().replayed, 12);
    assert_eq!(live.0.len(), 9);
    assert_eq!(live.0[3], (3, b"replaced".to_vec()));
    assert_eq!(
        wal_len(crashed.path()),
        FILE_HEADER,
        "replayed into the database, the log emptied to its header"
    );
    // The replay was durable: another crash loses nothing.
    let again = crash_copy(crashed.path());
    assert_eq!(contents(&open(again.path())), live);
}

#[test]
fn a_torn_last_record_is_dropped_and_the_ones_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    let one = log_end(&db);
    write(&db, true, 2, b"two");
    let two = log_end(&db) as usize;
    assert_eq!(
        wal_len(dir.path()),
        GROW,
        "the file grows in steps of zeros"
    );
    let crashed = crash_copy(dir.path());
    let flipped = crash_copy(dir.path());
    drop(db);
    // The second record half written; then a garbage tail.
    let wal = crashed.path().join("t.redb.wal");
    let bytes = std::fs::read(&wal).unwrap();
    let mut torn = bytes[..(one as usize + 20)].to_vec();
    std::fs::write(&wal, &torn).unwrap();
    let (rows, _) = contents(&open(crashed.path()));
    assert_eq!(rows, vec![(1, b"one".to_vec())]);
    // A record whose bytes changed fails its checksum the same way.
    torn = bytes.clone();
    torn[two - 1] ^= 0xff;
    std::fs::write(flipped.path().join("t.redb.wal"), &torn).unwrap();
    let (rows, _) = contents(&open(flipped.path()));
    assert_eq!(rows, vec![(1, b"one".to_vec())]);
}

#[test]
fn checkpoints_restart_the_log_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let n = u64::from(CHECKPOINT_COMMITS) + 10;
    for k in 0..n {
        write(&db, true, k, b"v");
    }
    assert!(db.logged() < 11, "a checkpoint was made: {}", db.logged());
    let stats = db.stats();
    assert_eq!(stats.checkpoints, 1);
    assert!(stats.checkpoint_max_secs > 0.0);
    assert_eq!(stats.checkpoint_secs, stats.checkpoint_max_secs);
    assert_eq!(stats.replayed, 0, "a new store replays nothing");
    let crashed = crash_copy(dir.path());
    let live = contents(&db);
    assert_eq!(live.0.len() as u64, n);
    drop(db);
    let reopened = open(crashed.path());
    assert_eq!(contents(&reopened), live);
    assert_eq!(reopened.stats().replayed, db_pending_after(n));
    // Without `close`, the log still holds the records since the last
    // checkpoint: a reopen replays them onto what redb's drop made durable,
    // which changes nothing.
    let reopened = open(dir.path());
    assert_eq!(reopened.stats().replayed, db_pending_after(n));
    assert_eq!(contents(&reopened), live);
    // A clean close checkpoints and empties the log: nothing to replay.
    reopened.close().unwrap();
    assert_eq!(wal_len(dir.path()), FILE_HEADER);
    drop(reopened);
    let reopened = open(dir.path());
    assert_eq!(reopened.stats().replayed, 0);
    assert_eq!(contents(&reopened), live);
}

/// Records in the log after `n` commits from an empty log: those since
/// the last checkpoint, which the checkpoint commit itself is not.
fn db_pending_after(n: u64) -> u64 {
    n - u64::from(CHECKPOINT_COMMITS) - 1
}

#[test]
fn a_restarted_log_overwrites_its_file_and_replays_only_its_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for k in 0..100 {
        write(&db, true, k, b"first round");
    }
    let first_round = log_end(&db);
    let size = wal_len(dir.path());
    db.checkpoint().unwrap();
    assert_eq!(log_end(&db), FILE_HEADER, "the log starts over");
    write(&db, true, 7, b"second");
    write(&db, false, 8, b"lazy");
    write(&db, true, 9, b"third");
    assert!(log_end(&db) < first_round);
    assert_eq!(wal_len(dir.path()), size, "the file is reused, not grown");
    let crashed = crash_copy(dir.path());
    let live = contents(&db);
    drop(db);
    // Past the three new records lie the first round's: older than the
    // checkpoint, so the replay stops there.
    let reopened = open(crashed.path());
    assert_eq!(reopened.stats().replayed, 3);
    assert_eq!(contents(&reopened), live);
    assert_eq!(live.0[7], (7, b"second".to_vec()));
}

#[test]
fn records_never_synced_past_a_torn_one_stay_lost_after_reopen() {
    // Records 1 and 3 whole on disk, record 2 torn (the crash came before
    // their sync). The replay applies 1; the next record 2 must not be
    // followed by the old record 3 at a later crash.
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    let one = log_end(&db) as usize;
    write(&db, false, 2, b"two");
    write(&db, false, 3, b"333");
    let crashed = crash_copy(dir.path());
    drop(db);
    let wal = crashed.path().join("t.redb.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[one + HEADER] ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();
    let db = open(crashed.path());
    assert_eq!(db.stats().replayed, 1);
    // A record of the same size as the torn one, with other content.
    write(&db, true, 2, b"TWO");
    let again = crash_copy(crashed.path());
    drop(db);
    let (rows, _) = contents(&open(again.path()));
    assert_eq!(rows, vec![(1, b"one".to_vec()), (2, b"TWO".to_vec())]);
}

#[test]
fn lazy_commits_become_durable_with_the_next_durable_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"durable");
    write(&db, false, 2, b"lazy");
    let before_sync = log_end(&db);
    // An empty durable commit syncs what is pending, as the adapter's
    // `persist` relies on.
    db.begin(true).unwrap().commit().unwrap();
    assert_eq!(log_end(&db), before_sync, "nothing new to log");
    let crashed = crash_copy(dir.path());
    let (rows, _) = contents(&open(crashed.path()));
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_gap_in_the_sequence_or_an_unknown_table_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    let one = log_end(&db) as usize;
    write(&db, true, 2, b"two");
    write(&db, true, 3, b"three");
    let crashed = crash_copy(dir.path());
    let unknown = crash_copy(dir.path());
    drop(db);
    let wal = crashed.path().join("t.redb.wal");
    let bytes = std::fs::read(&wal).unwrap();
    let two = u32::from_le_bytes(bytes[one..one + 4].try_into().unwrap()) as usize + HEADER;
    let mut gap = bytes[..one].to_vec();
    gap.extend_from_slice(&bytes[one + two..]);
    std::fs::write(&wal, &gap).unwrap();
    let err = Db::open(&crashed.path().join("t.redb"), &TABLES)
        .err()
        .expect("a gap must not open");
    assert!(err.to_string().contains("missing"), "{err}");

    static ONLY_A: [&dyn Replay; 1] = [&A];
    let err = Db::open(&unknown.path().join("t.redb"), &ONLY_A)
        .err()
        .expect("an unknown table must not open");
    assert!(err.to_string().contains("does not know: b"), "{err}");
}

#[test]
fn a_database_in_memory_has_no_log() {
    let db = Db::in_memory().unwrap();
    write(&db, true, 1, b"one");
    assert_eq!(db.logged(), 0);
    assert_eq!(contents(&db).0.len(), 1);
}

#[test]
fn a_large_transaction_is_made_durable_by_redb_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"small");
    assert_eq!((db.logged(), db.stats().checkpoints), (1, 0));
    let big = vec![9u8; DIRECT_BYTES];
    write(&db, true, 2, &big);
    // A checkpoint: redb's durable commit covers it and the small one
    // before it, and the log is empty.
    assert_eq!((db.logged(), db.stats().checkpoints), (0, 1));
    assert_eq!(log_end(&db), FILE_HEADER);
    let crashed = crash_copy(dir.path());
    let (rows, _) = contents(&open(crashed.path()));
    assert_eq!(rows, vec![(1, b"small".to_vec()), (2, big)]);
}

fn header_of(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("t.redb.wal")).unwrap()[..FILE_HEADER as usize].to_vec()
}

fn refused(dir: &Path) -> String {
    match Db::open(&dir.join("t.redb"), &TABLES) {
        Ok(_) => panic!("the log must be refused"),
        Err(e) => {
            assert!(matches!(e, Error::Version { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn a_fresh_log_gets_its_header_and_records_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(wal_len(dir.path()), FILE_HEADER);
    let mut expected = MAGIC.to_vec();
    expected.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    expected.extend_from_slice(&KEY_ENCODING.to_le_bytes());
    assert_eq!(header_of(dir.path()), expected);
    write(&db, true, 1, b"one");
    assert_eq!(
        header_of(dir.path()),
        expected,
        "records do not overwrite it"
    );
    let crashed = crash_copy(dir.path());
    assert_eq!(open(crashed.path()).stats().replayed, 1);
    assert_eq!(header_of(crashed.path()), expected);
}

#[test]
fn a_log_of_another_format_or_key_encoding_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    let wal = std::fs::read(dir.path().join("t.redb.wal")).unwrap();
    drop(db);
    let put = |bytes: &[u8]| {
        let d = crash_copy(dir.path());
        std::fs::write(d.path().join("t.redb.wal"), bytes).unwrap();
        d
    };
    let mut future = wal.clone();
    future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let d = put(&future);
    let e = refused(d.path());
    assert!(e.contains("log format 2"), "{e}");
    assert!(
        e.contains("open it with the version of mev that wrote it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(d.path().join("t.redb.wal")).unwrap(),
        future,
        "a refused log is left as it was"
    );

    let mut keys = wal.clone();
    keys[12..16].copy_from_slice(&(KEY_ENCODING + 1).to_le_bytes());
    let e = refused(put(&keys).path());
    assert!(e.contains("key encoding 2"), "{e}");

    let mut magic = wal.clone();
    magic[..8].copy_from_slice(b"NOTAWAL!");
    let e = refused(put(&magic).path());
    assert!(e.contains("not a redo log of this version"), "{e}");
}

#[test]
fn an_old_header_less_log_with_records_to_replay_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    write(&db, true, 2, b"two");
    // The earlier format: the same records from the file's first byte.
    let old =
        std::fs::read(dir.path().join("t.redb.wal")).unwrap()[FILE_HEADER as usize..].to_vec();
    let crashed = crash_copy(dir.path());
    drop(db);
    std::fs::write(crashed.path().join("t.redb.wal"), &old).unwrap();
    let e = refused(crashed.path());
    assert!(e.contains("written by an earlier version"), "{e}");
    assert!(e.contains("stop that cleanly"), "{e}");
}

#[test]
fn an_old_header_less_log_with_nothing_to_replay_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for k in 0..5 {
        write(&db, true, k, b"v");
    }
    // What the earlier version left at a clean stop: records its last
    // checkpoint covers, from the file's first byte, then zeros.
    db.checkpoint().unwrap();
    let live = contents(&db);
    let mut old =
        std::fs::read(dir.path().join("t.redb.wal")).unwrap()[FILE_HEADER as usize..].to_vec();
    drop(db);
    for bytes in [old.clone(), vec![0; 4096], Vec::new()] {
        let d = crash_copy(dir.path());
        std::fs::write(d.path().join("t.redb.wal"), &bytes).unwrap();
        let db = open(d.path());
        assert_eq!(db.stats().replayed, 0);
        assert_eq!(contents(&db), live);
        assert_eq!(wal_len(d.path()), FILE_HEADER, "rewritten with a header");
        write(&db, true, 9, b"after");
        let again = crash_copy(d.path());
        assert_eq!(open(again.path()).stats().replayed, 1);
    }
    // A torn first record is not something an old log after a clean stop
    // holds: refused rather than guessed at.
    old[FILE_HEADER as usize] ^= 0xff;
    let d = crash_copy(dir.path());
    std::fs::write(d.path().join("t.redb.wal"), &old).unwrap();
    refused(d.path());
}

#[test]
fn close_empties_the_log_and_drop_leaves_it_for_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"one");
    write(&db, false, 2, b"lazy");
    drop(db);
    assert!(
        wal_len(dir.path()) > FILE_HEADER,
        "drop wrote no checkpoint"
    );
    let db = open(dir.path());
    assert_eq!(db.stats().replayed, 2, "replayed onto redb's own state");
    assert_eq!(contents(&db).0.len(), 2);
    write(&db, true, 3, b"three");
    db.close().unwrap();
    assert_eq!(wal_len(dir.path()), FILE_HEADER);
    // A write after close is logged as usual.
    write(&db, true, 4, b"four");
    let crashed = crash_copy(dir.path());
    drop(db);
    let db = open(crashed.path());
    assert_eq!(db.stats().replayed, 1);
    assert_eq!(contents(&db).0.len(), 4);
}

#[test]
fn the_replay_commits_in_bounded_chunks_and_resumes_after_a_crash_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    // 48 records of 40 KB: about two chunks of replay.
    let n = 48u64;
    for k in 0..n {
        write(&db, true, k, &vec![k as u8; 40_000]);
    }
    assert_eq!(db.stats().checkpoints, 0);
    let crashed = crash_copy(dir.path());
    let live = contents(&db);
    drop(db);
    let mid = crash_copy(crashed.path());
    let reopened = open(crashed.path());
    assert_eq!(reopened.stats().replayed, n);
    assert_eq!(contents(&reopened), live);

    // A crash after the first chunk of a replay: the database covers the
    // records up to that chunk's end (its sequence recorded with them), the
    // log is whole. The next open skips what is covered and goes on.
    let wal = std::fs::read(mid.path().join("t.redb.wal")).unwrap();
    let covered = {
        let db = redb::Database::create(mid.path().join("t.redb")).unwrap();
        let records = &wal[FILE_HEADER as usize..];
        let mut first_chunk = 0usize;
        let mut bytes = 0usize;
        let mut k = 0;
        while bytes < REPLAY_CHUNK_BYTES {
            let len = u32::from_le_bytes(records[first_chunk..first_chunk + 4].try_into().unwrap())
                as usize;
            first_chunk += HEADER + len;
            bytes += len;
            k += 1;
        }
        let covered = replay(
            &db,
            Path::new("x"),
            &records[..first_chunk],
            first_chunk as u64,
            0,
            &TABLES,
        )
        .unwrap();
        assert_eq!(covered, k);
        assert!(covered < n);
        covered
    };
    std::fs::write(mid.path().join("t.redb.wal"), &wal).unwrap();
    let resumed = open(mid.path());
    assert_eq!(
        resumed.stats().replayed,
        n - covered,
        "{:?}",
        resumed.stats()
    );
    assert_eq!(contents(&resumed), live);
}

#[test]
fn a_failed_write_poisons_the_log_tells_the_owner_and_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    write(&db, true, 1, b"durable");
    let told = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let t = told.clone();
    db.on_failure(Box::new(move |r| t.lock().unwrap().push(r.to_string())));
    assert_eq!(db.failure(), None);
    // The log's file handle made read-only: the next append fails (EBADF),
    // as a full disk or EIO would.
    {
        let mut log = db.log.as_ref().unwrap().lock().unwrap();
        log.file = File::open(dir.path().join("t.redb.wal")).unwrap();
        log.size = 0; // the next append grows the file first
    }
    let tx = db.begin(true).unwrap();
    tx.open(A).unwrap().insert(2, b"lost".as_slice()).unwrap();
    let e = tx.commit().unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let reason = db.failure().expect("poisoned");
    assert_eq!(*told.lock().unwrap(), vec![reason.clone()], "told once");
    let tx = db.begin(true).unwrap();
    tx.open(A).unwrap().insert(3, b"also".as_slice()).unwrap();
    let e = tx.commit().unwrap_err();
    assert!(matches!(e, Error::Poisoned(..)), "{e}");
    assert!(e.to_string().contains(&reason), "{e}");
    assert!(db.close().is_err(), "no clean close of a poisoned log");
    assert_eq!(told.lock().unwrap().len(), 1, "told once only");
    drop(db);
    let (rows, _) = contents(&open(dir.path()));
    assert_eq!(rows, vec![(1, b"durable".to_vec())]);
}
