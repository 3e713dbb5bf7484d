//! The log: single writer, many readers, group commit, retention, cursors.
//!
//! Durability: `append` encodes a frame into the write-behind buffer and returns its seq; the
//! event is *appended* but not durable. The buffer reaches the file in one pwrite before every
//! sync and rotation (and on `flush`); only then are its frames noted in the segment.
//! `sync_through(seq)` returns once a sync covers `seq`. Group commit: the first caller that
//! finds no sync running leads one (flush, snapshot the highest appended seq, sync the active
//! segment once); everyone who appended before that snapshot is covered, and the others wait on
//! a condvar until a sync covers them or it is their turn to lead.
//! Rotation syncs the old segment before creating the next one, so a later segment always
//! implies its predecessors are durable, and only the active segment ever holds unsynced bytes.
//!
//! Readers see only durable records (`seq <= durable_seq()`), so nothing non-durable can be
//! forwarded. A failed sync or write poisons the writer (see [`Error::Poisoned`]).
//!
//! Retention: segments are kept as history until the disk budget needs room. Then the oldest
//! segment is released if every cursor is past it; otherwise `on_full` decides: `DropOldest`
//! removes it anyway and counts its unconsumed records in `dropped_events` (seqs are never
//! reused), `Reject` refuses the append with [`Error::Full`].

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::cursor::{encode_slot, valid_cursor_name, Cursor, CURSOR_FILE_BYTES, CURSOR_SUFFIX};
use crate::error::{Error, IoContext, Result};
use crate::event::Event;
use crate::limits::{
    CURSORS_MAX, DISK_BYTES_MAX_DEFAULT, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, PAGE_BYTES,
    RECORD_PAYLOAD_BYTES_MAX_DEFAULT, RECORD_PAYLOAD_BYTES_MAX_FORMAT, SEGMENTS_IN_BUDGET_MIN,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_DATA_START,
    SEGMENT_TRAILER_BYTES, UNSYNCED_BYTES_MAX, WRITE_BUFFER_BYTES,
};
use crate::medium::{FsMedium, Medium};
use crate::record::{encode_frame, frame_bytes};
use crate::recovery::{is_log_file, recover, Progress, RecoveryReport, SeqRange};
use crate::scan::{read_frame, resync, FrameRead, Window};
use crate::segment::{segment_name, Segment, SegmentHeader};

/// Name of the writer's lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// What to do when the disk budget is full and the oldest segment is still needed by a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Remove the oldest segment anyway; count its unconsumed events as dropped.
    DropOldest,
    /// Refuse new events with [`Error::Full`] until a cursor moves on.
    Reject,
}

/// Options of [`Log::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Budget for all segment files together.
    pub disk_bytes_max: u64,
    pub on_full: OnFull,
    /// Largest encoded event.
    pub record_bytes_max: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            disk_bytes_max: DISK_BYTES_MAX_DEFAULT,
            on_full: OnFull::DropOldest,
            record_bytes_max: RECORD_PAYLOAD_BYTES_MAX_DEFAULT,
        }
    }
}

impl LogOptions {
    /// Checks the options against each other and the limits; the error names the option.
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, reason: String| Err(Error::InvalidOption { option, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return invalid(
                "segment_bytes",
                format!(
                    "{} bytes is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        if self.segment_bytes % PAGE_BYTES != 0 {
            return invalid(
                "segment_bytes",
                format!("{} is not a multiple of {PAGE_BYTES}", self.segment_bytes),
            );
        }
        if self.disk_bytes_max < SEGMENTS_IN_BUDGET_MIN * self.segment_bytes {
            return invalid(
                "disk_bytes_max",
                format!(
                    "{} bytes holds fewer than {SEGMENTS_IN_BUDGET_MIN} segments of {}",
                    self.disk_bytes_max, self.segment_bytes
                ),
            );
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_PAYLOAD_BYTES_MAX_FORMAT {
            return invalid(
                "record_bytes_max",
                format!(
                    "{} is outside 1..={RECORD_PAYLOAD_BYTES_MAX_FORMAT}",
                    self.record_bytes_max
                ),
            );
        }
        let needed =
            SEGMENT_DATA_START + frame_bytes(self.record_bytes_max) + SEGMENT_TRAILER_BYTES;
        if needed > self.segment_bytes {
            let needed = needed.div_ceil(PAGE_BYTES) * PAGE_BYTES;
            return invalid(
                "record_bytes_max",
                format!(
                    "a record of up to {} bytes needs segments of at least {needed} bytes, not {}",
                    self.record_bytes_max, self.segment_bytes
                ),
            );
        }
        Ok(())
    }
}

/// A drop of unconsumed events by the `DropOldest` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropRecord {
    /// Seqs removed before every cursor had passed them.
    pub range: SeqRange,
}

/// A snapshot of the log's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    pub appended_seq: u64,
    pub durable_seq: u64,
    /// Oldest seq still stored (`appended_seq + 1` when nothing is).
    pub first_seq: u64,
    pub segments: usize,
    pub disk_bytes: u64,
    pub dropped_events: u64,
    /// Syncs (fdatasync) issued for appends; fewer than appends when group commit works.
    pub syncs: u64,
    pub poisoned: Option<String>,
}

#[derive(Debug)]
struct Writer {
    next_seq: u64,
    /// Reused encode buffer, `record_bytes_max` long: no allocation per append.
    payload: Vec<u8>,
    /// Frames of the active segment appended but not yet written (write-behind): they start
    /// at file offset `pending_offset`, which is the segment's `end_offset()`. Bounded by
    /// `WRITE_BUFFER_BYTES` (or one frame, when a frame is larger); see `flush_pending`.
    pending: Vec<u8>,
    pending_offset: u64,
    /// (seq, offset, end) of each buffered frame: noted in the segment only once written, so
    /// readers, resyncs and tail copies never look at bytes that are not in the file yet.
    pending_frames: Vec<(u64, u64, u64)>,
}

impl Writer {
    /// Where the next frame of `segment` (the active one) goes.
    fn next_offset(&self, segment: &Segment) -> u64 {
        if self.pending.is_empty() {
            segment.end_offset()
        } else {
            self.pending_offset + self.pending.len() as u64
        }
    }
}

#[derive(Debug)]
struct Shared {
    medium: Arc<dyn Medium>,
    options: LogOptions,
    read_only: bool,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// True while one appender (the leader) runs a sync for everyone: the others wait on
    /// `sync_done` instead of queueing on a lock, so a newcomer cannot barge in and sync its
    /// one event while a crowd waits (group commit that does group).
    sync_leader: Mutex<bool>,
    sync_done: Condvar,
    appended_seq: AtomicU64,
    durable_seq: AtomicU64,
    durable_changed: Condvar,
    durable_mutex: Mutex<()>,
    poisoned: Mutex<Option<String>>,
    cursors: Mutex<BTreeMap<String, Cursor>>,
    dropped_events: AtomicU64,
    syncs: AtomicU64,
    drops: Mutex<Vec<DropRecord>>,
}

impl Drop for Shared {
    /// Buffered frames reach the file (not the disk) when the last handle goes, as they did
    /// when every append was its own write: dropping a log without a sync keeps them across a
    /// process exit, not across a power cut.
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(|e| e.into_inner());
        let poisoned = self.poisoned.get_mut().unwrap_or_else(|e| e.into_inner());
        if self.read_only || poisoned.is_some() || writer.pending.is_empty() {
            return;
        }
        let segments = self.segments.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(active) = segments.last() {
            let _ = active.file.write_at(writer.pending_offset, &writer.pending);
        }
    }
}

/// Ends a sync leadership however the sync ends (error or panic included) and wakes the
/// waiters: a leader that vanished would leave them waiting forever.
struct SyncLead<'a>(&'a Shared);

impl Drop for SyncLead<'_> {
    fn drop(&mut self) {
        *lock(&self.0.sync_leader) = false;
        self.0.sync_done.notify_all();
    }
}

/// The segment log. Cheap to clone: clones share one log.
#[derive(Debug, Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Opens (creating it if missing) the data directory `dir` for writing: takes the writer
    /// lock, runs recovery, and returns the log with what recovery found.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(Log, RecoveryReport)> {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        Log::open_with_medium(Arc::new(FsMedium::new(dir)), options)
    }

    /// Opens `dir` read-only: nothing on disk is changed, no lock is taken, and the report says
    /// what recovery *would* do. Safe while a writer runs.
    pub fn open_read_only(
        dir: &Path,
        options: LogOptions,
        progress: Progress<'_>,
    ) -> Result<(Log, RecoveryReport)> {
        let medium = FsMedium::new(dir);
        let names = medium
            .list()
            .map_err(|_| Error::NotADataDir(dir.to_path_buf()))?;
        if !names.iter().any(|n| is_log_file(n)) {
            return Err(Error::NotADataDir(dir.to_path_buf()));
        }
        Log::open_inner(Arc::new(medium), options, true, progress)
    }

    /// Opens any medium read-only (the simulated one in tests): the report says what recovery
    /// would do; nothing is changed.
    pub fn open_read_only_with_medium(
        medium: Arc<dyn Medium>,
        options: LogOptions,
    ) -> Result<(Log, RecoveryReport)> {
        Log::open_inner(medium, options, true, &mut |_, _| {})
    }

    /// Opens for writing over any medium (the simulated one in tests).
    pub fn open_with_medium(
        medium: Arc<dyn Medium>,
        options: LogOptions,
    ) -> Result<(Log, RecoveryReport)> {
        Log::open_inner(medium, options, false, &mut |_, _| {})
    }

    fn open_inner(
        medium: Arc<dyn Medium>,
        options: LogOptions,
        read_only: bool,
        progress: Progress<'_>,
    ) -> Result<(Log, RecoveryReport)> {
        options.validate()?;
        if !read_only
            && !medium
                .lock_exclusive()
                .context(|| format!("locking {}", medium.location().display()))?
        {
            return Err(Error::Locked(medium.location()));
        }
        let recovered = recover(&*medium, &options, !read_only, progress)?;
        let mut segments = recovered.segments;
        let next_seq = recovered.next_seq;
        let last_seq = next_seq - 1;
        let needs_segment = recovered.needs_new_segment
            || segments.last().is_none_or(|s| s.last_seq() + 1 != next_seq);
        if !read_only && needs_segment {
            segments.push(Arc::new(create_segment(&*medium, &options, next_seq)?));
        }
        let durable = segments.last().map(|s| s.last_seq()).unwrap_or(last_seq);
        // What recovery left is durable (it synced every repair): the unsynced bound counts
        // from there.
        for segment in &segments {
            segment
                .synced_end
                .store(segment.end_offset(), Ordering::Release);
        }
        let shared = Shared {
            medium,
            read_only,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                next_seq,
                payload: vec![0; options.record_bytes_max],
                pending: Vec::with_capacity(
                    WRITE_BUFFER_BYTES.max(frame_bytes(options.record_bytes_max) as usize),
                ),
                pending_offset: 0,
                pending_frames: Vec::new(),
            }),
            options,
            sync_leader: Mutex::new(false),
            sync_done: Condvar::new(),
            appended_seq: AtomicU64::new(durable),
            durable_seq: AtomicU64::new(durable),
            durable_changed: Condvar::new(),
            durable_mutex: Mutex::new(()),
            poisoned: Mutex::new(None),
            cursors: Mutex::new(recovered.cursors),
            dropped_events: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            drops: Mutex::new(Vec::new()),
        };
        Ok((
            Log {
                shared: Arc::new(shared),
            },
            recovered.report,
        ))
    }

    /// Appends `event` (its `seq` is overwritten) and returns the seq it got. The event is not
    /// durable until [`Log::sync_through`] covers it.
    pub fn append(&self, mut event: Event) -> Result<u64> {
        if self.shared.read_only {
            return Err(Error::ReadOnly);
        }
        // A sync in between makes room under the unsynced bound; other appenders would have
        // to write 4 MiB between it and the next attempt to take that room again.
        for _ in 0..APPEND_ATTEMPTS_MAX {
            if let Some(seq) = self.try_append(&mut event)? {
                return Ok(seq);
            }
            self.sync()?;
        }
        Err(Error::Io {
            context: "appending".into(),
            source: std::io::Error::other(format!(
                "{APPEND_ATTEMPTS_MAX} syncs in a row did not make room under the unsynced bound"
            )),
        })
    }

    /// One attempt at [`Log::append`]: `None` when writing the buffered frames out first would
    /// go past [`UNSYNCED_BYTES_MAX`] and the caller must sync first (not under the writer
    /// lock: the sync leader takes it).
    fn try_append(&self, event: &mut Event) -> Result<Option<u64>> {
        let shared = &*self.shared;
        let mut writer = lock(&shared.writer);
        self.check_poison()?;
        let seq = writer.next_seq;
        if seq > crate::limits::SEQ_MAX {
            return Err(Error::SeqsExhausted(crate::limits::SEQ_MAX));
        }
        event.seq = seq;
        let limit = shared.options.record_bytes_max;
        let payload_bytes = match postcard::to_slice(&event, &mut writer.payload) {
            Ok(encoded) => encoded.len(),
            Err(postcard::Error::SerializeBufferFull) => {
                let bytes = postcard::to_stdvec(&event).map(|v| v.len()).unwrap_or(0);
                return Err(Error::RecordTooLarge { bytes, limit });
            }
            Err(e) => panic!("postcard cannot fail on an in-memory event: {e}"),
        };
        let frame_len = frame_bytes(payload_bytes);
        let mut active = self.active_segment();
        if writer.next_offset(&active) + frame_len > active.data_end {
            self.rotate(&mut writer)?;
            active = self.active_segment();
        }
        if writer.pending.len() as u64 + frame_len > WRITE_BUFFER_BYTES as u64 {
            if over_unsynced_bound(&writer, &active) {
                return Ok(None);
            }
            self.flush_pending(&mut writer, &active)?;
        }
        let offset = writer.next_offset(&active);
        assert!(active.appendable() && offset + frame_len <= active.data_end);
        if writer.pending.is_empty() {
            writer.pending_offset = offset;
        }
        let Writer {
            payload, pending, ..
        } = &mut *writer;
        encode_frame(seq, &payload[..payload_bytes], pending);
        assert_eq!(
            pending.len() as u64,
            offset + frame_len - writer.pending_offset
        );
        writer
            .pending_frames
            .push((seq, offset, offset + frame_len));
        shared.appended_seq.store(seq, Ordering::Release);
        writer.next_seq = seq + 1;
        Ok(Some(seq))
    }

    /// Returns once every event up to `seq` is durable (group commit: one sync serves every
    /// appender waiting at the time). The first caller that finds no sync running leads one,
    /// covering everything appended when it starts; the others wait for it, and each sync
    /// that ends wakes them all: those covered return, one of the rest leads the next sync.
    pub fn sync_through(&self, seq: u64) -> Result<()> {
        let shared = &*self.shared;
        if shared.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let mut leader = lock(&shared.sync_leader);
        loop {
            if shared.durable_seq.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            self.check_poison()?;
            if !*leader {
                break;
            }
            leader = shared
                .sync_done
                .wait(leader)
                .unwrap_or_else(|e| e.into_inner());
        }
        *leader = true;
        drop(leader);
        let _lead = SyncLead(shared);
        self.lead_sync(seq)
    }

    /// Writes the buffered frames (one `pwrite`) to the active segment `segment`; they are in
    /// the page cache afterwards, not durable. A failure poisons the writer.
    fn flush_pending(&self, writer: &mut Writer, segment: &Segment) -> Result<()> {
        if writer.pending.is_empty() {
            return Ok(());
        }
        assert_eq!(
            writer.pending_offset,
            segment.end_offset(),
            "buffered frames start where the segment's written frames end"
        );
        if let Err(e) = segment
            .file
            .write_at(writer.pending_offset, &writer.pending)
        {
            let message = format!("write to {} failed: {e}", segment.name);
            self.poison(message.clone());
            return Err(Error::Poisoned(message));
        }
        for &(seq, offset, end) in &writer.pending_frames {
            segment.note_frame(seq, offset, end);
        }
        writer.pending.clear();
        writer.pending_frames.clear();
        Ok(())
    }

    /// Writes every appended frame to its file (the page cache), without a sync: what a
    /// process kill, unlike a power cut, cannot take back. The daemon calls it before it
    /// answers under `sync = "interval"`.
    pub fn flush(&self) -> Result<()> {
        if self.shared.read_only {
            return Ok(());
        }
        let mut writer = lock(&self.shared.writer);
        self.check_poison()?;
        let active = self.active_segment();
        if over_unsynced_bound(&writer, &active) {
            drop(writer);
            return self.sync().map(|_| ());
        }
        self.flush_pending(&mut writer, &active)
    }

    /// The leader's sync: everything appended so far.
    fn lead_sync(&self, seq: u64) -> Result<()> {
        let shared = &*self.shared;
        let (target, active, end) = {
            let mut writer = lock(&shared.writer);
            let active = self.active_segment();
            self.flush_pending(&mut writer, &active)?;
            let end = active.end_offset();
            (shared.appended_seq.load(Ordering::Acquire), active, end)
        };
        assert!(seq <= target, "sync_through({seq}) past appended {target}");
        self.sync_segment(&active, end)?;
        self.set_durable(target);
        Ok(())
    }

    /// Copies the tail page (the acked prefix the next append will rewrite) into the segment's
    /// other tail-page slot, then fdatasyncs: frames and copy become durable together. A
    /// failure poisons the writer.
    fn sync_segment(&self, segment: &Segment, end: u64) -> Result<()> {
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        // Copy and fdatasync under one slot lock: a rotation racing this sync must not write a
        // second copy over the newest durable one while this copy is still unsynced.
        let _slots = segment.lock_slots();
        let result = crate::tail::write_copy(segment, end, self.durable_seq())
            .and_then(|()| segment.file.sync());
        if let Err(e) = result {
            let message = format!("fdatasync of {} failed: {e}", segment.name);
            self.poison(message.clone());
            return Err(Error::Poisoned(message));
        }
        segment.synced_end.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Makes everything appended so far durable; returns the durable seq.
    pub fn sync(&self) -> Result<u64> {
        let appended = self.appended_seq();
        self.sync_through(appended)?;
        Ok(self.durable_seq())
    }

    /// Highest seq appended (durable or not).
    pub fn appended_seq(&self) -> u64 {
        self.shared.appended_seq.load(Ordering::Acquire)
    }

    /// Highest seq known durable. Readers see nothing past it.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Waits until `durable_seq() >= seq` or `timeout` passes; returns whether it happened.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.shared.durable_mutex);
        loop {
            if self.durable_seq() >= seq {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .shared
                .durable_changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A reader positioned at the first stored event with seq >= `from`.
    pub fn reader(&self, from: u64) -> Reader {
        Reader {
            shared: self.shared.clone(),
            next_seq: from.max(1),
            position: None,
        }
    }

    /// The value of cursor `name`, if it exists.
    pub fn cursor(&self, name: &str) -> Option<u64> {
        lock(&self.shared.cursors).get(name).map(|c| c.seq)
    }

    /// All cursors and their values.
    pub fn cursors(&self) -> Vec<(String, u64)> {
        lock(&self.shared.cursors)
            .iter()
            .map(|(name, c)| (name.clone(), c.seq))
            .collect()
    }

    /// Durably moves (or creates) cursor `name` to `seq`. A failed sync poisons the log.
    pub fn set_cursor(&self, name: &str, seq: u64) -> Result<()> {
        let shared = &*self.shared;
        if shared.read_only {
            return Err(Error::ReadOnly);
        }
        if !valid_cursor_name(name) {
            return Err(Error::InvalidCursorName(name.to_string()));
        }
        self.check_poison()?;
        // A cursor is proof of durability to recovery (FORMAT.md): never past the durable seq.
        let durable_seq = self.durable_seq();
        if seq > durable_seq {
            return Err(Error::CursorAhead {
                name: name.to_string(),
                seq,
                durable_seq,
            });
        }
        let mut cursors = lock(&shared.cursors);
        if let Some(cursor) = cursors.get_mut(name) {
            if cursor.seq == seq {
                return Ok(());
            }
            if let Err(e) = cursor.store(seq) {
                let message = format!("cursor {name} update failed: {e}");
                self.poison(message.clone());
                return Err(Error::Poisoned(message));
            }
            return Ok(());
        }
        if cursors.len() >= CURSORS_MAX {
            return Err(Error::InvalidCursorName(format!(
                "{name}: at most {CURSORS_MAX} cursors"
            )));
        }
        let file_name = format!("{name}{CURSOR_SUFFIX}");
        // Both slots valid from the start (generations 0 and 1), so a fresh file reads clean.
        let mut head = encode_slot(0, seq).to_vec();
        head.extend_from_slice(&encode_slot(1, seq));
        let file = shared
            .medium
            .create(&file_name, CURSOR_FILE_BYTES, &head)
            .context(|| format!("creating {file_name}"))?;
        cursors.insert(
            name.to_string(),
            Cursor {
                file,
                generation: 1,
                seq,
            },
        );
        Ok(())
    }

    /// Counters for status reports.
    pub fn stats(&self) -> LogStats {
        // The writer before the segments (the order `append` takes them in); buffered frames
        // are not noted in any segment yet, but they are stored events.
        let (appended_seq, first_buffered) = {
            let writer = lock(&self.shared.writer);
            (
                self.appended_seq(),
                writer.pending_frames.first().map(|f| f.0),
            )
        };
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        LogStats {
            appended_seq,
            durable_seq: self.durable_seq(),
            first_seq: segments
                .iter()
                .find(|s| s.record_count() > 0)
                .map(|s| s.first_seq)
                .or(first_buffered)
                .unwrap_or(appended_seq + 1),
            segments: segments.len(),
            disk_bytes: segments.iter().map(|s| s.file.len()).sum(),
            dropped_events: self.shared.dropped_events.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            poisoned: lock(&self.shared.poisoned).clone(),
        }
    }

    /// Takes the drops made since the last call (for the daemon's `system` events).
    pub fn take_drops(&self) -> Vec<DropRecord> {
        std::mem::take(&mut *lock(&self.shared.drops))
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.shared.options
    }

    fn active_segment(&self) -> Arc<Segment> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .expect("a writable log always has an active segment")
    }

    /// Why the log is poisoned (a failed write or sync), if it is: every later append fails
    /// until the log is reopened.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.shared.poisoned).clone()
    }

    fn check_poison(&self) -> Result<()> {
        match &*lock(&self.shared.poisoned) {
            Some(message) => Err(Error::Poisoned(message.clone())),
            None => Ok(()),
        }
    }

    fn poison(&self, message: String) {
        lock(&self.shared.poisoned).get_or_insert(message);
    }

    fn set_durable(&self, seq: u64) {
        self.shared.durable_seq.fetch_max(seq, Ordering::AcqRel);
        let _guard = lock(&self.shared.durable_mutex);
        self.shared.durable_changed.notify_all();
    }

    /// Seals the active segment (sync) and starts the next one, making room first.
    fn rotate(&self, writer: &mut Writer) -> Result<()> {
        let shared = &*self.shared;
        let active = self.active_segment();
        self.flush_pending(writer, &active)?;
        self.sync_segment(&active, active.end_offset())?;
        self.set_durable(shared.appended_seq.load(Ordering::Acquire));
        // Every frame is durable now: the seal lets later opens skip scanning this segment.
        let sealed = {
            let _slots = active.lock_slots();
            crate::tail::write_seal(&active).and_then(|()| active.file.sync())
        };
        if let Err(e) = sealed {
            let message = format!("sealing {} failed: {e}", active.name);
            self.poison(message.clone());
            return Err(Error::Poisoned(message));
        }
        self.make_room()?;
        let segment = self.create_segment_making_space(writer.next_seq)?;
        shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(segment));
        Ok(())
    }

    /// Releases or drops the oldest segments until one more fits the budget.
    fn make_room(&self) -> Result<()> {
        let shared = &*self.shared;
        loop {
            let oldest = {
                let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
                let used: u64 = segments.iter().map(|s| s.file.len()).sum();
                if used + shared.options.segment_bytes <= shared.options.disk_bytes_max
                    || segments.len() < 2
                {
                    return Ok(());
                }
                segments[0].clone()
            };
            self.remove_oldest(oldest)?;
        }
    }

    /// Creates the next segment. When the file system itself is full (ENOSPC below the
    /// budget: a small SD card, another program's files), `drop_oldest` drops the oldest
    /// segment and tries again, and `reject` refuses with [`Error::NoSpace`]; either way the
    /// log stays usable and the next append tries again once there is room.
    fn create_segment_making_space(&self, first_seq: u64) -> Result<Segment> {
        let shared = &*self.shared;
        loop {
            let error = match create_segment(&*shared.medium, &shared.options, first_seq) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::StorageFull => {
                    source
                }
                other => return other,
            };
            let oldest = {
                let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner());
                (segments.len() >= 2).then(|| segments[0].clone())
            };
            let policy = match shared.options.on_full {
                OnFull::DropOldest => "drop_oldest",
                OnFull::Reject => "reject",
            };
            match (shared.options.on_full, oldest) {
                (OnFull::DropOldest, Some(oldest)) => self.remove_oldest(oldest)?,
                _ => {
                    let _ = error;
                    return Err(Error::NoSpace {
                        segment_bytes: shared.options.segment_bytes,
                        policy,
                    });
                }
            }
        }
    }

    /// Removes the oldest segment: a release when every cursor is past it, else (only under
    /// `drop_oldest`; `reject` refuses with [`Error::Full`]) a drop of the events no cursor
    /// has passed, recorded for [`Log::take_drops`].
    fn remove_oldest(&self, oldest: Arc<Segment>) -> Result<()> {
        let shared = &*self.shared;
        let floor = lock(&shared.cursors)
            .values()
            .map(|c| c.seq)
            .min()
            .unwrap_or(0);
        let last = oldest.last_seq();
        if last > floor {
            match shared.options.on_full {
                OnFull::Reject => {
                    return Err(Error::Full {
                        disk_bytes_max: shared.options.disk_bytes_max,
                        oldest_seq: oldest.first_seq,
                    })
                }
                OnFull::DropOldest => {
                    let from = floor.max(oldest.first_seq - 1) + 1;
                    shared
                        .dropped_events
                        .fetch_add(last + 1 - from, Ordering::Relaxed);
                    lock(&shared.drops).push(DropRecord {
                        range: SeqRange { from, to: last },
                    });
                }
            }
        }
        shared
            .medium
            .remove(&oldest.name)
            .context(|| format!("removing {}", oldest.name))?;
        shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !Arc::ptr_eq(s, &oldest));
        Ok(())
    }
}

/// Whether writing the buffered frames to `active` now would put bytes more than
/// [`UNSYNCED_BYTES_MAX`] past its end at the last completed sync (then the writer syncs
/// first). Leader and rotation flushes skip the check: a sync follows each at once, at most
/// one of each can be outstanding on a segment, and the window a repairing open reads allows
/// for both (`UNSYNCED_WINDOW_BYTES`).
/// Attempts of one append, each after a sync, before it gives up (see [`Log::append`]).
const APPEND_ATTEMPTS_MAX: usize = 64;

fn over_unsynced_bound(writer: &Writer, active: &Segment) -> bool {
    let written_end = writer.pending_offset + writer.pending.len() as u64;
    !writer.pending.is_empty()
        && written_end > active.synced_end.load(Ordering::Acquire) + UNSYNCED_BYTES_MAX
}

fn create_segment(medium: &dyn Medium, options: &LogOptions, first_seq: u64) -> Result<Segment> {
    let name = segment_name(first_seq);
    let created_wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let header = SegmentHeader::new_v2(first_seq, options.segment_bytes, created_wall_ms);
    let file = medium
        .create(&name, options.segment_bytes, &header.encode())
        .context(|| format!("creating segment {name}"))?;
    Ok(Segment::new(name, &header, file))
}

/// Iterates durable events in seq order, verifying every CRC. Seqs that are not stored
/// (dropped, lost to damage) are skipped; a record that fails its check is returned as an
/// `Err` once and the reader moves on to the next segment.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    next_seq: u64,
    position: Option<(Arc<Segment>, u64)>,
}

impl Reader {
    /// The seq the next call looks for.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Locates `next_seq`: the segment holding it and the offset of its frame. Jumps seqs that
    /// are not stored (released, dropped, holes left by damage).
    fn locate(&mut self) -> Option<(Arc<Segment>, u64)> {
        'seek: loop {
            if let Some((segment, offset)) = &self.position {
                let inside =
                    segment.first_seq <= self.next_seq && self.next_seq <= segment.last_seq();
                if inside && segment.hole_at(self.next_seq).is_none() {
                    return Some((segment.clone(), *offset));
                }
            }
            let segments = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let index = segments.partition_point(|s| s.first_seq <= self.next_seq);
            if index == 0 {
                // Before the oldest stored segment: those seqs were released or dropped.
                self.next_seq = segments.first()?.first_seq;
                continue;
            }
            let segment = segments[index - 1].clone();
            if self.next_seq > segment.last_seq() {
                self.next_seq = segments.get(index)?.first_seq;
                self.position = None;
                continue;
            }
            drop(segments);
            if let Some(hole) = segment.hole_at(self.next_seq) {
                self.next_seq = hole.to + 1;
                self.position = None;
                continue;
            }
            let (mut seq, mut offset) = segment.seek_point(self.next_seq);
            let mut window = Window::hot(&*segment.file);
            while seq < self.next_seq {
                match read_frame(&mut window, offset, segment.data_end, seq) {
                    FrameRead::Frame { next_offset, .. } => {
                        offset = next_offset;
                        seq += 1;
                    }
                    _ => {
                        // Unreadable before the seq asked for: mark the hole for every reader
                        // (no error: nobody asked for these seqs) and seek again, never
                        // returning a record before the one asked for.
                        let wanted = self.next_seq;
                        self.skip_damage(&segment, offset, seq);
                        self.next_seq = self.next_seq.max(wanted);
                        self.position = None;
                        continue 'seek;
                    }
                }
            }
            self.position = Some((segment.clone(), offset));
            return Some((segment, offset));
        }
    }

    /// After a bad frame of `seq` at `offset`: finds the next good frame in the segment, marks
    /// the seqs between as a hole (so every reader jumps them), and moves there.
    fn skip_damage(&mut self, segment: &Arc<Segment>, offset: u64, seq: u64) -> SeqRange {
        let last = segment.last_seq();
        let mut window = Window::hot(&*segment.file);
        let found = (seq < last)
            .then(|| {
                resync(
                    &mut window,
                    offset + FRAME_ALIGN_BYTES,
                    segment.end_offset(),
                    seq + 1..=last,
                )
            })
            .flatten();
        match found {
            Some(found) => {
                let lost = SeqRange {
                    from: seq,
                    to: found.seq - 1,
                };
                segment.note_read_damage(lost, Some(found.offset));
                self.position = Some((segment.clone(), found.offset));
                self.next_seq = found.seq;
                lost
            }
            None => {
                let lost = SeqRange {
                    from: seq,
                    to: last.max(seq),
                };
                segment.note_read_damage(lost, None);
                self.position = None;
                self.next_seq = lost.to + 1;
                lost
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        // Every seq it could serve is past the durable one: stop before scanning towards it.
        if self.next_seq > self.shared.durable_seq.load(Ordering::Acquire) {
            return None;
        }
        let (segment, offset) = self.locate()?;
        // Durability is checked after locate: it may have jumped a gap to a later seq.
        let seq = self.next_seq;
        if seq > self.shared.durable_seq.load(Ordering::Acquire) {
            return None;
        }
        let mut window = Window::hot(&*segment.file);
        let reason = match read_frame(&mut window, offset, segment.data_end, seq) {
            FrameRead::Frame {
                payload,
                next_offset,
            } => match postcard::from_bytes::<Event>(&payload) {
                Ok(event) if event.seq == seq => {
                    assert!(payload.len() as u64 + FRAME_HEADER_BYTES <= next_offset - offset);
                    self.position = Some((segment.clone(), next_offset));
                    self.next_seq = seq + 1;
                    return Some(Ok(event));
                }
                Ok(event) => format!("payload seq {} in frame {seq}", event.seq),
                Err(e) => format!("payload does not decode: {e}"),
            },
            FrameRead::End => "unexpected end of data".into(),
            FrameRead::Bad(reason) => reason,
        };
        let lost = self.skip_damage(&segment, offset, seq);
        Some(Err(Error::Corrupt {
            segment: segment.name.clone(),
            offset,
            expected_seq: seq,
            reason: format!("{reason}; seqs {}..={} unreadable", lost.from, lost.to),
        }))
    }
}
