//! Typed errors of the storage crate.
//!
//! Operating errors (bad bytes on disk, I/O failures, bad input) are values of [`Error`];
//! broken internal invariants are `assert!`s. The enum is `#[non_exhaustive]` so new failure
//! kinds can be added without breaking callers.

use std::io;
use std::path::PathBuf;

/// Everything the log can report to its caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A previous sync (fdatasync) or write failed. The writer refuses all further writes until
    /// the log is reopened, because after a failed sync the kernel may have dropped dirty pages
    /// and we can no longer say what is on the medium (PostgreSQL's "fsyncgate").
    #[error("log writer is poisoned by an earlier I/O failure ({0}); reopen the log")]
    Poisoned(String),
    /// The encoded event is larger than the configured record limit.
    #[error("event too large: {bytes} bytes encoded, limit is {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
    /// A field of the event is out of bounds (named).
    #[error("invalid event field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The disk budget is exhausted and the policy is `reject`.
    #[error("disk budget of {disk_bytes_max} bytes is full and on_full = \"reject\": oldest unforwarded segment starts at seq {oldest_seq}")]
    Full {
        disk_bytes_max: u64,
        oldest_seq: u64,
    },
    /// The file system holding the log has no room for a new segment (ENOSPC), below the
    /// disk budget, and the policy is `reject` (or there is nothing older to drop).
    #[error("the file system holding the log is full: no room for a new {segment_bytes}-byte segment (on_full = \"{policy}\"); free space or lower storage.max_disk")]
    NoSpace {
        segment_bytes: u64,
        policy: &'static str,
    },
    /// Another process holds the writer lock on the directory.
    #[error("data directory {0} is locked by another writer")]
    Locked(PathBuf),
    /// The path is not an edgecap data directory.
    #[error("{0} is not an edgecap data directory")]
    NotADataDir(PathBuf),
    /// The options passed to `open` are inconsistent.
    #[error("invalid log option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// The log was opened read-only.
    #[error("log is open read-only")]
    ReadOnly,
    /// Bytes on the medium failed their check (CRC, length, sequence) where data was expected.
    #[error("corrupt record in segment {segment} at offset {offset} (expected seq {expected_seq}): {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        expected_seq: u64,
        reason: String,
    },
    /// A cursor name is not `[a-z0-9_-]{1,32}`.
    #[error("invalid cursor name {0:?}")]
    InvalidCursorName(String),
    /// A cursor was moved past the last appended event.
    #[error("cursor {name} cannot move to seq {seq}: last durable seq is {durable_seq}")]
    CursorAhead {
        name: String,
        seq: u64,
        durable_seq: u64,
    },
    /// The log has handed out every seq up to `SEQ_MAX` (limits.rs); nothing more can be stored.
    #[error("the log has used every seq up to {0}")]
    SeqsExhausted(u64),
}

/// Result alias of the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
