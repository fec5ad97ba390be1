//! # mev-store: the storage engine and the durable outbox
//!
//! - [`wal`]: redb behind a redo log; every store of mev (the adapter's and
//!   the broker's) opens its database through [`wal::Db`], and no other crate
//!   depends on redb.
//! - [`outbox`]: the durable outbox both the adapter and the broker publish
//!   from: its table protocol and its pipelined drain, generic over what an
//!   entry is ([`outbox::Schema`]).
//! - [`engine`]: the engine's types the stores declare and read their tables
//!   with, and its errors (redb's, re-exported).

pub mod outbox;
pub mod wal;

/// Table definitions, the read side of tables, and the engine's errors.
pub mod engine {
    pub use redb::{
        CommitError, DatabaseError, Error, Key, ReadOnlyTable, ReadTransaction, ReadableTable,
        ReadableTableMetadata, SetDurabilityError, StorageError, TableDefinition, TableError,
        TransactionError, Value,
    };
}
