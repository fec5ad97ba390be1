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
        0,
        "replayed into the database, the log emptied"
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
    // A clean close checkpoints: nothing left to replay, though the file
    // still holds the records of the last round (they are older than the
    // checkpoint).
    assert!(wal_len(dir.path()) > 0);
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
    assert_eq!(log_end(&db), 0, "the log starts over");
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
    assert_eq!(log_end(&db), 0);
    let crashed = crash_copy(dir.path());
    let (rows, _) = contents(&open(crashed.path()));
    assert_eq!(rows, vec![(1, b"small".to_vec()), (2, big)]);
}
