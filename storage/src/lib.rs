//! edgecap-storage: a CRC-checked, memory-mapped segment log that survives power loss.
//!
//! This crate knows nothing of tokio, MQTT or JSON. The on-disk format is documented byte by
//! byte in `storage/FORMAT.md` and again in the module docs of the files that write it
//! (`segment.rs`, `record.rs`, `cursor.rs`).
//!
//! ```no_run
//! use edgecap_storage::{Event, Kind, Log, LogOptions, Value};
//! let (log, report) = Log::open("/var/lib/edgecap".as_ref(), LogOptions::default())?;
//! assert!(report.is_clean() || !report.problems().is_empty());
//! let seq = log.append(Event::new(Kind::Sensor, "temp0", Value::Float(21.5))?)?;
//! log.sync_through(seq)?; // durable from here on
//! for event in log.reader(1) {
//!     println!("{:?}", event?);
//! }
//! # Ok::<(), edgecap_storage::Error>(())
//! ```

pub mod cursor;
mod error;
mod event;
pub mod limits;
mod log;
pub mod medium;
pub mod record;
mod recovery;
mod scan;
pub mod segment;
mod sim;
pub mod tail;

pub use error::{Error, Result};
pub use event::{source_from_str, Event, Kind, Source, Value};
pub use log::{DropRecord, Log, LogOptions, LogStats, OnFull, Reader, LOCK_FILE_NAME};
pub use recovery::{
    CursorReport, DamageReport, Progress, QuarantineReport, RecoveryReport, SeqRange, TailCut,
    TailRestore, CUT_MAGIC, CUT_SUFFIX, FLOOR_FILE,
};
pub use sim::{CrashStats, SimMedium, SplitMix64};
