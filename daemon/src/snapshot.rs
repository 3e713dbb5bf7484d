//! Snapshots of the projection, so `edgecap state` on a long log does not replay from seq 1.
//!
//! Files `snapshots/{seq:020}.snap` in the data directory, written by the daemon every
//! [`SNAPSHOT_EVERY_EVENTS`] events (temp file, fsync, rename, directory fsync); the newest
//! [`SNAPSHOTS_KEPT`] are kept. A snapshot that fails its check is skipped (and reported) and
//! the next older one, or seq 1, is used: snapshots are an optimisation, never the truth.
//!
//! Layout (**do not reorder fields**):
//! ```text
//! offset  size  field
//! 0       8     magic            b"EDGECAPP"
//! 8       4     version          u32 LE = 1
//! 12      4     payload_bytes    u32 LE
//! 16      8     seq              u64 LE, last event folded into the state
//! 24      4     crc32            over bytes 0..24 ++ payload
//! 28      n     payload          postcard-encoded `project::State`
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::project::State;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"EDGECAPP";
pub const SNAPSHOT_VERSION: u32 = 1;
pub use crate::limits::{SNAPSHOTS_KEPT, SNAPSHOT_BYTES_MAX, SNAPSHOT_EVERY_EVENTS};
const HEADER_BYTES: usize = 28;

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Encodes a snapshot file.
pub fn encode(state: &State) -> Vec<u8> {
    let payload = postcard::to_stdvec(state).expect("in-memory state encodes");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&state.seq.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..24]);
    crc.update(&payload);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes and checks a snapshot file.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    if bytes.len() < HEADER_BYTES || bytes[..8] != SNAPSHOT_MAGIC {
        return Err("not a snapshot (bad magic or too short)".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let payload_bytes = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    if payload_bytes > SNAPSHOT_BYTES_MAX || HEADER_BYTES + payload_bytes != bytes.len() {
        return Err(format!("impossible payload length {payload_bytes}"));
    }
    let seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..24]);
    hasher.update(&bytes[HEADER_BYTES..]);
    if hasher.finalize() != crc {
        return Err("CRC mismatch".into());
    }
    let state: State =
        postcard::from_bytes(&bytes[HEADER_BYTES..]).map_err(|e| format!("payload: {e}"))?;
    if state.seq != seq {
        return Err(format!(
            "payload seq {} differs from header {seq}",
            state.seq
        ));
    }
    Ok(state)
}

/// Writes a snapshot durably and prunes old ones.
pub fn write(data_dir: &Path, state: &State) -> io::Result<PathBuf> {
    let dir = snapshot_dir(data_dir);
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{:020}.snap", state.seq));
    let temp = dir.join(format!("{:020}.snap.{}.tmp", state.seq, std::process::id()));
    let mut file = File::create(&temp)?;
    file.write_all(&encode(state))?;
    file.sync_all()?;
    fs::rename(&temp, &path)?;
    File::open(&dir)?.sync_all()?;
    let mut seqs = list(&dir);
    seqs.sort_unstable();
    let excess = seqs.len().saturating_sub(SNAPSHOTS_KEPT);
    for seq in &seqs[..excess] {
        let _ = fs::remove_file(dir.join(format!("{seq:020}.snap")));
    }
    Ok(path)
}

fn list(dir: &Path) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".snap")?.parse().ok()
        })
        .collect()
}

/// The newest valid snapshot with `seq <= max_seq`, and a message for each one skipped.
pub fn load_newest(data_dir: &Path, max_seq: u64) -> (Option<State>, Vec<String>) {
    let dir = snapshot_dir(data_dir);
    let mut seqs: Vec<u64> = list(&dir).into_iter().filter(|&s| s <= max_seq).collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    let mut problems = Vec::new();
    for seq in seqs {
        let path = dir.join(format!("{seq:020}.snap"));
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode(&b))
        {
            Ok(state) => return (Some(state), problems),
            Err(e) => problems.push(format!("snapshot {} skipped: {e}", path.display())),
        }
    }
    (None, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_detected() {
        let state = State {
            seq: 42,
            events: 7,
            ..State::default()
        };
        let bytes = encode(&state);
        assert_eq!(decode(&bytes).unwrap(), state);
        for i in [0, 9, 17, 25, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn newest_valid_snapshot_is_used_and_corrupt_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [10, 20, 30] {
            let state = State {
                seq,
                ..State::default()
            };
            write(dir.path(), &state).unwrap();
        }
        let newest = snapshot_dir(dir.path()).join(format!("{:020}.snap", 30));
        fs::write(&newest, b"EDGECAPPgarbage").unwrap();
        let (state, problems) = load_newest(dir.path(), u64::MAX);
        assert_eq!(state.unwrap().seq, 20);
        assert_eq!(problems.len(), 1);
        let (state, _) = load_newest(dir.path(), 15);
        assert_eq!(state.unwrap().seq, 10);
        write(
            dir.path(),
            &State {
                seq: 40,
                ..State::default()
            },
        )
        .unwrap();
        assert_eq!(list(&snapshot_dir(dir.path())).len(), SNAPSHOTS_KEPT);
    }
}
