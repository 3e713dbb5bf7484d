//! A simulated medium for power-cut tests.
//!
//! Every file keeps two images: `live` (what reads see) and `durable` (what survives a power
//! cut). A write changes `live` and marks its 512-byte sectors dirty; `sync` copies the file's
//! live bytes to durable. [`SimMedium::crash`] models a power cut: for every dirty sector it
//! keeps, by a seeded choice, the new bytes, the old bytes, or a torn mix (a prefix of the new
//! bytes over the old ones, the "powersafe overwrite" model of FORMAT.md); then live = durable.
//! Handles opened before the crash are cut off: their writes go nowhere.
//!
//! Directory operations are atomic and durable, as the real medium makes them with a directory
//! fsync.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::limits::{PAGE_BYTES, SECTOR_BYTES};
use crate::medium::{Medium, MediumFile};

#[derive(Debug, Default)]
struct FileImage {
    live: Vec<u8>,
    durable: Vec<u8>,
    dirty_sectors: BTreeSet<u64>,
    /// Set at a crash: this image belongs to a dead "boot".
    dead: bool,
    /// Byte ranges whose reads fail with EIO (a bad sector).
    unreadable: Vec<(usize, usize)>,
    /// Byte ranges whose writes fail with EIO (a worn-out block).
    unwritable: Vec<(usize, usize)>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Arc<Mutex<FileImage>>>,
    /// Directory entries as they were before a create, rename or remove that the power cut
    /// interrupted before its directory fsync: the crash keeps the change or reverts it.
    pending_dir: Vec<(String, Option<Arc<Mutex<FileImage>>>)>,
}

impl State {
    /// Changes the entry `name` inside an interrupted directory operation, remembering what
    /// it was so `crash` can revert it.
    fn change_pending(&mut self, name: &str, image: Option<Arc<Mutex<FileImage>>>) {
        let before = self.files.get(name).cloned();
        self.pending_dir.push((name.to_string(), before));
        match image {
            Some(image) => self.files.insert(name.to_string(), image),
            None => self.files.remove(name),
        };
    }
}

/// The simulated medium. Cheap to clone; clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct SimMedium {
    state: Arc<Mutex<State>>,
    fail_syncs: Arc<AtomicBool>,
    /// Medium calls left before the power fails inside one (negative: no crash planned).
    countdown: Arc<AtomicI64>,
}

/// A tiny deterministic generator (SplitMix64) so the crate needs no `rand` dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }
}

/// True when `start..end` touches one of `ranges`.
fn overlaps(ranges: &[(usize, usize)], start: usize, end: usize) -> bool {
    ranges.iter().any(|&(a, b)| a < end && start < b)
}

/// Counts one call: Ok(true) when the power fails inside this call, Err when it already has.
fn tick(countdown: &AtomicI64) -> io::Result<bool> {
    let left = countdown.load(Ordering::SeqCst);
    if left < 0 {
        return Err(io::Error::other("simulated power cut: the medium is gone"));
    }
    if left == 0 {
        return Ok(false);
    }
    let now = countdown.fetch_sub(1, Ordering::SeqCst) - 1;
    if now == 0 {
        countdown.store(-1, Ordering::SeqCst);
        return Ok(true);
    }
    Ok(false)
}

/// What one page of a crashed file keeps on the medium.
fn resolve_page(
    image: &FileImage,
    durable: &mut [u8],
    page: u64,
    rng: &mut SplitMix64,
    stats: &mut CrashStats,
) {
    let start = (page * PAGE_BYTES) as usize;
    let end = (start + PAGE_BYTES as usize).min(image.live.len());
    match rng.below(8) {
        0..=2 => {
            durable[start..end].copy_from_slice(&image.live[start..end]);
            stats.sectors_kept_new += 1;
        }
        3..=4 => stats.sectors_kept_old += 1,
        5..=6 => {
            // Powersafe tear: each dirty sector old, new, or a prefix of new over old.
            for sector in (start as u64 / SECTOR_BYTES)..(end as u64).div_ceil(SECTOR_BYTES) {
                if !image.dirty_sectors.contains(&sector) {
                    continue;
                }
                let (a, b) = (
                    (sector * SECTOR_BYTES) as usize,
                    (((sector + 1) * SECTOR_BYTES) as usize).min(end),
                );
                let cut = a + rng.below((b - a + 1) as u64) as usize;
                durable[a..cut].copy_from_slice(&image.live[a..cut]);
            }
            stats.sectors_torn += 1;
        }
        _ => {
            // Garbage over the whole page, bytes the write did not change included.
            for byte in &mut durable[start..end] {
                *byte = rng.next_u64() as u8;
            }
            stats.pages_garbage += 1;
        }
    }
}

/// What a crash did, for test diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashStats {
    pub sectors_kept_new: u64,
    pub sectors_kept_old: u64,
    pub sectors_torn: u64,
    pub pages_garbage: u64,
    /// Directory operations interrupted by the cut and lost (0 or 1 per crash).
    pub dir_ops_lost: u64,
}

impl SimMedium {
    /// An empty medium.
    pub fn new() -> SimMedium {
        SimMedium::default()
    }

    /// Makes every later `sync` fail (and succeed again with `false`).
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// Cuts the power inside the `calls`-th medium call from now (1 = the next one): a
    /// write lands (dirty) and then fails; a sync fails undone; a create, rename or remove
    /// takes effect but fails before its directory fsync, so the crash keeps or loses the
    /// directory entry. Every call after it fails, until [`SimMedium::crash`] resolves what
    /// reached the medium.
    pub fn crash_after(&self, calls: u64) {
        assert!(calls >= 1);
        self.countdown.store(calls as i64, Ordering::SeqCst);
    }

    /// True once a planned in-call crash has happened (and `crash` has not yet run).
    pub fn has_crashed(&self) -> bool {
        self.countdown.load(Ordering::SeqCst) < 0
    }

    /// A power cut: every 4 KiB page holding a dirty sector keeps its new bytes, its old bytes,
    /// a per-sector torn mix, or garbage over the whole page, chosen by `seed`. Handles opened
    /// before are dead afterwards.
    pub fn crash(&self, seed: u64) -> CrashStats {
        let mut rng = SplitMix64::new(seed);
        let mut stats = CrashStats::default();
        let mut state = self.state.lock().unwrap();
        self.countdown.store(0, Ordering::SeqCst);
        if rng.below(2) == 0 {
            // The interrupted directory operation never reached the medium: undo it.
            while let Some((name, before)) = state.pending_dir.pop() {
                match before {
                    Some(image) => state.files.insert(name, image),
                    None => state.files.remove(&name),
                };
                stats.dir_ops_lost += 1;
            }
        }
        state.pending_dir.clear();
        let names: Vec<String> = state.files.keys().cloned().collect();
        for name in names {
            let old = state.files.get(&name).cloned().expect("listed");
            let mut image = old.lock().unwrap();
            let mut durable = image.durable.clone();
            let pages: BTreeSet<u64> = image
                .dirty_sectors
                .iter()
                .map(|s| s * SECTOR_BYTES / PAGE_BYTES)
                .collect();
            for page in pages {
                resolve_page(&image, &mut durable, page, &mut rng, &mut stats);
            }
            image.dead = true;
            let fresh = FileImage {
                live: durable.clone(),
                durable,
                dirty_sectors: BTreeSet::new(),
                dead: false,
                // A bad sector stays bad across a power cut.
                unreadable: image.unreadable.clone(),
                unwritable: image.unwritable.clone(),
            };
            drop(image);
            state.files.insert(name, Arc::new(Mutex::new(fresh)));
        }
        stats
    }

    /// Counts one medium call against a planned crash: `Err` once the power is out.
    fn tick(&self) -> io::Result<bool> {
        tick(&self.countdown)
    }

    /// The live bytes of a file, for tests that corrupt or inspect it.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.state.lock().unwrap();
        let image = state.files.get(name)?.lock().unwrap();
        Some(image.live.clone())
    }

    /// Replaces a file's bytes, live and durable (a test's "disk editor").
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        let image = FileImage {
            live: bytes.clone(),
            durable: bytes,
            ..FileImage::default()
        };
        state
            .files
            .insert(name.to_string(), Arc::new(Mutex::new(image)));
    }

    /// Makes reads of `from..to` in `name` fail with EIO from now on, as a bad sector does
    /// (the real medium's map would raise SIGBUS there; `read_uncached` gets the error).
    pub fn make_unreadable(&self, name: &str, from: u64, to: u64) {
        self.with_image(name, |image| {
            image.unreadable.push((from as usize, to as usize))
        });
    }

    /// Makes writes touching `from..to` in `name` fail with EIO from now on (a block the
    /// medium can no longer program).
    pub fn make_unwritable(&self, name: &str, from: u64, to: u64) {
        self.with_image(name, |image| {
            image.unwritable.push((from as usize, to as usize))
        });
    }

    fn with_image(&self, name: &str, change: impl FnOnce(&mut FileImage)) {
        let state = self.state.lock().unwrap();
        if let Some(image) = state.files.get(name) {
            change(&mut image.lock().unwrap());
        }
    }

    /// Names of all files.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().unwrap().files.keys().cloned().collect()
    }
}

impl Medium for SimMedium {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn open(&self, name: &str, _writable: bool) -> io::Result<Box<dyn MediumFile>> {
        let state = self.state.lock().unwrap();
        let image = state
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_string()))?;
        Ok(Box::new(SimFile {
            image,
            fail_syncs: self.fail_syncs.clone(),
            countdown: self.countdown.clone(),
        }))
    }

    fn create(&self, name: &str, len: u64, head: &[u8]) -> io::Result<Box<dyn MediumFile>> {
        let crash_now = self.tick()?;
        let mut bytes = vec![0u8; len as usize];
        bytes[..head.len()].copy_from_slice(head);
        if crash_now {
            // The file was written and synced; its rename may or may not be durable.
            let image = FileImage {
                live: bytes.clone(),
                durable: bytes,
                ..FileImage::default()
            };
            let mut state = self.state.lock().unwrap();
            state.change_pending(name, Some(Arc::new(Mutex::new(image))));
            return Err(io::Error::other("simulated power cut during create"));
        }
        self.set_file_bytes(name, bytes);
        self.open(name, true)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let crash_now = self.tick()?;
        let mut state = self.state.lock().unwrap();
        let image = state
            .files
            .get(from)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_string()))?;
        if crash_now {
            state.change_pending(from, None);
            state.change_pending(to, Some(image));
            return Err(io::Error::other("simulated power cut during rename"));
        }
        state.files.remove(from);
        state.files.insert(to.to_string(), image);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let crash_now = self.tick()?;
        let mut state = self.state.lock().unwrap();
        if !state.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::NotFound, name.to_string()));
        }
        if crash_now {
            state.change_pending(name, None);
            return Err(io::Error::other("simulated power cut during remove"));
        }
        state.files.remove(name);
        Ok(())
    }

    fn lock_exclusive(&self) -> io::Result<bool> {
        Ok(true)
    }

    fn location(&self) -> PathBuf {
        PathBuf::from("<simulated medium>")
    }
}

#[derive(Debug)]
struct SimFile {
    image: Arc<Mutex<FileImage>>,
    fail_syncs: Arc<AtomicBool>,
    countdown: Arc<AtomicI64>,
}

fn dead() -> io::Error {
    io::Error::other("simulated medium: handle from before a crash")
}

impl MediumFile for SimFile {
    fn len(&self) -> u64 {
        self.image.lock().unwrap().live.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let image = self.image.lock().unwrap();
        let start = offset as usize;
        let end = start + buf.len();
        if end > image.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        if overlaps(&image.unreadable, start, end) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf.copy_from_slice(&image.live[start..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let crash_now = tick(&self.countdown)?;
        let mut image = self.image.lock().unwrap();
        if image.dead {
            return Err(dead());
        }
        let start = offset as usize;
        let end = start + data.len();
        if end > image.live.len() {
            return Err(io::Error::other("write past preallocated end"));
        }
        if overlaps(&image.unwritable, start, end) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        image.live[start..end].copy_from_slice(data);
        if !data.is_empty() {
            let first = offset / SECTOR_BYTES;
            let last = (end as u64 - 1) / SECTOR_BYTES;
            image.dirty_sectors.extend(first..=last);
        }
        if crash_now {
            return Err(io::Error::other("simulated power cut during write"));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if tick(&self.countdown)? {
            return Err(io::Error::other("simulated power cut during sync"));
        }
        let mut image = self.image.lock().unwrap();
        if image.dead {
            return Err(dead());
        }
        if self.fail_syncs.load(Ordering::SeqCst) {
            // Linux after a writeback error: the pages are clean again, the medium never got
            // them, and the next fdatasync has nothing to write.
            image.dirty_sectors.clear();
            return Err(io::Error::other("simulated fdatasync failure (EIO)"));
        }
        let FileImage {
            live,
            durable,
            dirty_sectors,
            ..
        } = &mut *image;
        for &sector in dirty_sectors.iter() {
            let start = (sector * SECTOR_BYTES) as usize;
            let end = (start + SECTOR_BYTES as usize).min(live.len());
            durable[start..end].copy_from_slice(&live[start..end]);
        }
        dirty_sectors.clear();
        Ok(())
    }
}
