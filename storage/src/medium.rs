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
}

/// One file of a [`Medium`].
pub trait MediumFile: Send + Sync + std::fmt::Debug {
    /// Length of the file in bytes (fixed for the life of the handle).
    fn len(&self) -> u64;
    /// True when the file has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`. Not durable until [`MediumFile::sync`] returns `Ok`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`). After an error nothing is known about
    /// unsynced bytes: callers must stop writing (the log poisons itself).
    fn sync(&self) -> io::Result<()>;
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
        let temp_name = format!("{name}.tmp");
        let temp_path = self.path(&temp_name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp_path)?;
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
        fs::rename(&temp_path, self.path(name))?;
        self.sync_dir()?;
        Ok(Box::new(FsFile::new(file)?))
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
}

/// A real file: written with `pwrite`, synced with `fdatasync`, read through a shared map.
#[derive(Debug)]
struct FsFile {
    file: File,
    map: Option<Mmap>,
    len: u64,
}

impl FsFile {
    fn new(file: File) -> io::Result<FsFile> {
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only. The file may change underneath it (the writer
            // pwrites, recovery zeroes); readers copy bytes out and check every CRC before
            // trusting them, and in-process readers only read ranges that are durable and
            // never written again.
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(FsFile { file, map, len })
    }
}

impl MediumFile for FsFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match (&self.map, end) {
            (Some(map), Some(end)) if end <= self.len => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                buf.copy_from_slice(&map[start..start + buf.len()]);
                Ok(())
            }
            _ if buf.is_empty() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past end {}",
                    buf.len(),
                    self.len
                ),
            )),
        }
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
