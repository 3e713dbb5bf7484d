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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::limits::SECTOR_BYTES;
use crate::medium::{Medium, MediumFile};

#[derive(Debug, Default)]
struct FileImage {
    live: Vec<u8>,
    durable: Vec<u8>,
    dirty_sectors: BTreeSet<u64>,
    /// Set at a crash: this image belongs to a dead "boot".
    dead: bool,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Arc<Mutex<FileImage>>>,
}

/// The simulated medium. Cheap to clone; clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct SimMedium {
    state: Arc<Mutex<State>>,
    fail_syncs: Arc<AtomicBool>,
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

/// What a crash did, for test diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashStats {
    pub sectors_kept_new: u64,
    pub sectors_kept_old: u64,
    pub sectors_torn: u64,
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

    /// A power cut: every dirty sector of every file independently keeps its new bytes, its
    /// old bytes, or a torn mix, chosen by `seed`. Handles opened before are dead afterwards.
    pub fn crash(&self, seed: u64) -> CrashStats {
        let mut rng = SplitMix64::new(seed);
        let mut stats = CrashStats::default();
        let mut state = self.state.lock().unwrap();
        let names: Vec<String> = state.files.keys().cloned().collect();
        for name in names {
            let old = state.files.get(&name).cloned().expect("listed");
            let mut image = old.lock().unwrap();
            let mut durable = image.durable.clone();
            for &sector in &image.dirty_sectors {
                let start = (sector * SECTOR_BYTES) as usize;
                let end = (start + SECTOR_BYTES as usize).min(image.live.len());
                match rng.below(3) {
                    0 => {
                        durable[start..end].copy_from_slice(&image.live[start..end]);
                        stats.sectors_kept_new += 1;
                    }
                    1 => stats.sectors_kept_old += 1,
                    _ => {
                        let cut = start + rng.below((end - start) as u64) as usize;
                        durable[start..cut].copy_from_slice(&image.live[start..cut]);
                        stats.sectors_torn += 1;
                    }
                }
            }
            image.dead = true;
            let fresh = FileImage {
                live: durable.clone(),
                durable,
                dirty_sectors: BTreeSet::new(),
                dead: false,
            };
            drop(image);
            state.files.insert(name, Arc::new(Mutex::new(fresh)));
        }
        stats
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
        }))
    }

    fn create(&self, name: &str, len: u64, head: &[u8]) -> io::Result<Box<dyn MediumFile>> {
        let mut bytes = vec![0u8; len as usize];
        bytes[..head.len()].copy_from_slice(head);
        self.set_file_bytes(name, bytes);
        self.open(name, true)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let image = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_string()))?;
        state.files.insert(to.to_string(), image);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_string()))
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
        buf.copy_from_slice(&image.live[start..end]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut image = self.image.lock().unwrap();
        if image.dead {
            return Err(dead());
        }
        let start = offset as usize;
        let end = start + data.len();
        if end > image.live.len() {
            return Err(io::Error::other("write past preallocated end"));
        }
        image.live[start..end].copy_from_slice(data);
        if !data.is_empty() {
            let first = offset / SECTOR_BYTES;
            let last = (end as u64 - 1) / SECTOR_BYTES;
            image.dirty_sectors.extend(first..=last);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated fdatasync failure (EIO)"));
        }
        let mut image = self.image.lock().unwrap();
        if image.dead {
            return Err(dead());
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
