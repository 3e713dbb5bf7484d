//! The I/O seam: the only place the log touches the operating system.
//!
//! The log sees a directory as a [`Medium`] (list, create, open, rename, remove, lock) and each
//! file as a [`MediumFile`] (read, write, sync). [`FsMedium`] is the real one: files are written
//! with `pwrite` and made durable with `fdatasync`, and read through a read-only shared memory
//! map (`memmap2`). [`crate::SimMedium`] is the simulated one used by the power-cut tests: it
//! keeps live and durable bytes apart and, at a crash, keeps any subset of unsynced sectors.
//!
//! Why `pwrite` + `fdatasync` and not stores into a writable map + `msync`: measured on this
//! project's reference ext4, one dirty 4 KiB page costs p50 255–280 µs through `msync` against
//! 49–60 µs through `pwrite` + `fdatasync` (FORMAT.md has our own figures from
//! `cargo bench -p edgecap-storage`). A failed `pwrite` is also an error value, where a store
//! into a map past a hole is a SIGBUS. Readers still read the map: Linux has one page cache, so
//! the map sees every `pwrite` at once.
//!
//! Directory operations (`create`, `rename`, `remove`) are durable when they return: the real
//! medium fsyncs the directory after each. The simulated medium models them as atomic and
//! durable for the same reason.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::limits::ZERO_CHUNK_BYTES;

/// A directory of files, as the log needs it.
pub trait Medium: Send + Sync + std::fmt::Debug {
    /// Names of the files in the directory (no sub-directories), any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file. `writable` asks for write access.
    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn MediumFile>>;
    /// Creates `name` atomically: a temporary file of `len` bytes, zero-filled with its blocks
    /// really allocated, `head` written at offset 0, synced, renamed to `name`, and the
    /// directory synced. Either the whole file exists afterwards, or none.
    fn create(&self, name: &str, len: u64, head: &[u8]) -> io::Result<Box<dyn MediumFile>>;
    /// Renames a file and makes the rename durable.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file and makes the removal durable.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Takes the exclusive writer lock on the directory, held until the medium is dropped.
    fn lock_exclusive(&self) -> io::Result<bool>;
    /// Human-readable location, for messages.
    fn location(&self) -> PathBuf;
    /// Why the file system under this medium breaks an assumption of the format, if it does
    /// (FORMAT.md, "Assumptions about the medium").
    fn filesystem_warning(&self) -> Option<String> {
        None
    }
}

/// One file of a [`Medium`].
pub trait MediumFile: Send + Sync + std::fmt::Debug {
    /// Length of the file in bytes (fixed for the life of the handle).
    fn len(&self) -> u64;
    /// True when the file has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `buf.len()` bytes at `offset` into `buf` (hot path: the real medium reads its map).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Like `read_at`, but an unreadable sector is an error value, never a SIGBUS: the real
    /// medium uses `pread`. Recovery and `verify` read only through this.
    fn read_uncached(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_at(offset, buf)
    }
    /// Writes `data` at `offset`. Not durable until [`MediumFile::sync`] returns `Ok`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`). After an error nothing is known about
    /// unsynced bytes: callers must stop writing (the log poisons itself).
    fn sync(&self) -> io::Result<()>;
    /// Hot reads of this file use `pread` too, never a map: for files whose bytes this boot
    /// has not read, so a bad sector is an error value rather than SIGBUS.
    fn forbid_map(&self) {}
}

/// The real medium: a directory on a Linux file system.
#[derive(Debug)]
pub struct FsMedium {
    dir: PathBuf,
    lock: std::sync::Mutex<Option<File>>,
}

impl FsMedium {
    /// A medium over `dir`, which must exist.
    pub fn new(dir: &Path) -> FsMedium {
        FsMedium {
            dir: dir.to_path_buf(),
            lock: std::sync::Mutex::new(None),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// `create` itself: a zero-filled temp file with `head`, synced, renamed into place.
    fn create_at(
        &self,
        temp_path: &Path,
        name: &str,
        len: u64,
        head: &[u8],
    ) -> io::Result<Box<dyn MediumFile>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(temp_path)?;
        // Write real zeros rather than ftruncate/fallocate: every block is allocated and
        // initialised now, so later writes never hit ENOSPC and fdatasync never has to convert
        // unwritten extents (which would cost a journal commit per sync).
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut remaining = len;
        while remaining > 0 {
            let step = remaining.min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all(&zeros[..step])?;
            remaining -= step as u64;
        }
        file.write_all_at(head, 0)?;
        file.sync_all()?;
        fs::rename(temp_path, self.path(name))?;
        self.sync_dir()?;
        Ok(Box::new(FsFile::new(file)?))
    }
}

impl Medium for FsMedium {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<Box<dyn MediumFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(self.path(name))?;
        Ok(Box::new(FsFile::new(file)?))
    }

    fn create(&self, name: &str, len: u64, head: &[u8]) -> io::Result<Box<dyn MediumFile>> {
        assert!(head.len() as u64 <= len);
        let temp_path = self.path(&format!("{name}.tmp"));
        let created = self.create_at(&temp_path, name, len, head);
        if created.is_err() {
            // A half-written temp file (ENOSPC) must not hold on to the space it took.
            let _ = fs::remove_file(&temp_path);
        }
        created
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))?;
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))?;
        self.sync_dir()
    }

    fn lock_exclusive(&self) -> io::Result<bool> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path(crate::log::LOCK_FILE_NAME))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            return Err(err);
        }
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(true)
    }

    fn location(&self) -> PathBuf {
        self.dir.clone()
    }

    fn filesystem_warning(&self) -> Option<String> {
        filesystem_warning(&self.dir)
    }
}

/// `statfs` magic numbers of file systems that do not overwrite in place (copy-on-write or
/// log-structured): a preallocated file can still hit ENOSPC on an overwrite, and `fdatasync`
/// must commit metadata for every write.
const NOT_IN_PLACE: [(i64, &str); 3] = [
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
];

fn filesystem_warning(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct we pass; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // `f_type` is i32 on 32-bit glibc: through u32 first, so magics above 0x7fffffff (btrfs,
    // f2fs) keep their value instead of turning negative.
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as u32 as i64;
    warning_for(kind, dir)
}

/// The warning for a data directory on a file system of `statfs` type `kind`, if any.
fn warning_for(kind: i64, dir: &Path) -> Option<String> {
    NOT_IN_PLACE.iter().find(|(magic, _)| *magic == kind).map(|(_, name)| {
        format!(
            "{} is on {name}, which does not overwrite in place: preallocation does not \
             rule out ENOSPC and every sync commits metadata; use ext4 or xfs for the data directory",
            dir.display()
        )
    })
}

/// Address space the real medium may map at once: 1 GiB on 32-bit targets (a 3 GiB user
/// address space), 64 GiB on 64-bit ones. Files opened past it are read with `pread`.
pub const MAP_BYTES_BUDGET: u64 = if cfg!(target_pointer_width = "32") {
    1 << 30
} else {
    64 << 30
};

static MAPPED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static MAP_BUDGET: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(MAP_BYTES_BUDGET);

/// Lowers (or restores) the process-wide map budget; files mapped already stay mapped. For
/// tests that prove a log larger than the budget opens and reads.
pub fn set_map_budget(bytes: u64) {
    MAP_BUDGET.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Bytes currently mapped by the real medium (for tests and status).
pub fn mapped_bytes() -> u64 {
    MAPPED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A real file: written with `pwrite`, synced with `fdatasync`, read through a shared map made
/// on the first hot read (recovery reads with `pread` and maps nothing), while the process-wide
/// map budget allows; past it, hot reads use `pread` too.
#[derive(Debug)]
struct FsFile {
    file: File,
    map: std::sync::OnceLock<Option<Mmap>>,
    len: u64,
}

impl FsFile {
    fn new(file: File) -> io::Result<FsFile> {
        let len = file.metadata()?.len();
        Ok(FsFile {
            file,
            map: std::sync::OnceLock::new(),
            len,
        })
    }

    fn map(&self) -> Option<&Mmap> {
        self.map
            .get_or_init(|| {
                use std::sync::atomic::Ordering;
                if self.len == 0 {
                    return None;
                }
                let before = MAPPED_BYTES.fetch_add(self.len, Ordering::AcqRel);
                if before + self.len > MAP_BUDGET.load(Ordering::Relaxed) {
                    MAPPED_BYTES.fetch_sub(self.len, Ordering::AcqRel);
                    return None;
                }
                // SAFETY: the map is read-only. The file may change underneath it (the writer
                // pwrites, recovery zeroes); readers copy bytes out and check every CRC before
                // trusting them, and in-process readers only read ranges that are durable and
                // never written again.
                match unsafe { Mmap::map(&self.file) } {
                    Ok(map) => Some(map),
                    Err(_) => {
                        MAPPED_BYTES.fetch_sub(self.len, Ordering::AcqRel);
                        None
                    }
                }
            })
            .as_ref()
    }

    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {offset} past end {}", self.len),
            )),
        }
    }
}

impl Drop for FsFile {
    fn drop(&mut self) {
        if let Some(Some(_)) = self.map.get() {
            MAPPED_BYTES.fetch_sub(self.len, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

impl MediumFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check_range(offset, buf.len())?;
        match self.map() {
            Some(map) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                buf.copy_from_slice(&map[start..start + buf.len()]);
                Ok(())
            }
            None => self.file.read_exact_at(buf, offset),
        }
    }

    fn read_uncached(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check_range(offset, buf.len())?;
        self.file.read_exact_at(buf, offset)
    }

    fn forbid_map(&self) {
        // Recovery calls this before any hot read, so nothing is mapped yet and this takes.
        let _ = self.map.set(None);
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::other("write offset overflow"))?;
        if end > self.len {
            return Err(io::Error::other(format!(
                "write of {} bytes at {offset} past preallocated end {}",
                data.len(),
                self.len
            )));
        }
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A file with no bytes that refuses every write: a placeholder while a handle is moved.
#[derive(Debug)]
pub(crate) struct NoFile;

impl MediumFile for NoFile {
    fn len(&self) -> u64 {
        0
    }

    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<()> {
        Err(io::Error::other("no file"))
    }

    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::other("no file"))
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Finding 10: on a file system that does not overwrite in place the format's ENOSPC and
    // metadata assumptions fail; open must say so.
    #[test]
    fn copy_on_write_file_systems_get_a_warning_and_ext4_does_not() {
        let dir = Path::new("/var/lib/edgecap");
        for (magic, name) in NOT_IN_PLACE {
            let warning = warning_for(magic, dir).expect("a warning");
            assert!(warning.contains(name) && warning.contains("/var/lib/edgecap"));
        }
        assert_eq!(warning_for(0xEF53, dir), None, "ext4");
        assert_eq!(warning_for(0x5846_5342, dir), None, "xfs");
        assert_eq!(warning_for(0x0102_1994, dir), None, "tmpfs");
    }
}
