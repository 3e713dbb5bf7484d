//! Cursors: named, persisted positions in the log ("forwarded through seq N").
//!
//! A cursor file `{name}.cursor` is 8192 bytes: two slots of one 4 KiB page each (format v2;
//! v1 files of 1024 bytes with 512-byte slots are still read and rewritten as v2 on repair).
//! An update writes the slot *not* holding the current value, with the next generation, and
//! syncs. A torn or garbage write can damage only the page being written, so the other slot
//! still holds the previous value. Reading takes the valid slot with the higher generation.
//!
//! Slot layout (**do not reorder fields**):
//!
//! ```text
//! offset  size  field
//! 0       8     magic       b"EDGECAPC"
//! 8       8     generation  u64 LE, increases by one per update; slot = generation % 2
//! 16      8     seq         u64 LE, the cursor value
//! 24      4     crc32       over bytes 0..24
//! 28      4068  zero (484 in a v1 file)
//! ```

pub use crate::limits::CURSOR_SLOT_BYTES;
use crate::limits::{CURSOR_NAME_BYTES_MAX, CURSOR_SLOT_BYTES_V1};
use crate::medium::MediumFile;

/// Magic bytes of a cursor slot.
pub const CURSOR_MAGIC: [u8; 8] = *b"EDGECAPC";
/// Suffix of cursor files.
pub const CURSOR_SUFFIX: &str = ".cursor";
/// Length of a cursor file: two slots.
pub const CURSOR_FILE_BYTES: u64 = 2 * CURSOR_SLOT_BYTES;
/// Length of a v1 cursor file (two 512-byte slots): still read, rewritten as v2 on repair.
pub const CURSOR_FILE_BYTES_V1: u64 = 2 * CURSOR_SLOT_BYTES_V1;

/// Slot size of a cursor file of `len` bytes: 512 for a v1 file, else 4096.
pub fn slot_bytes_for(len: u64) -> u64 {
    if len == CURSOR_FILE_BYTES_V1 {
        CURSOR_SLOT_BYTES_V1
    } else {
        CURSOR_SLOT_BYTES
    }
}

/// Checks a cursor name: `[a-z0-9_-]{1,32}`.
pub fn valid_cursor_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= CURSOR_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The bytes of one slot.
pub fn encode_slot(generation: u64, seq: u64) -> [u8; CURSOR_SLOT_BYTES as usize] {
    let mut out = [0u8; CURSOR_SLOT_BYTES as usize];
    out[0..8].copy_from_slice(&CURSOR_MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[0..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// (generation, seq) of a valid slot, or `None`.
pub fn decode_slot(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < 28 || bytes[0..8] != CURSOR_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    if crc != crc32fast::hash(&bytes[0..24]) {
        return None;
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    // 0 is a valid cursor (nothing consumed); past SEQ_MAX it is damage, and so is a generation
    // past GENERATION_MAX (the next store adds one to it).
    (seq <= crate::limits::SEQ_MAX && generation <= crate::limits::GENERATION_MAX)
        .then_some((generation, seq))
}

/// What reading a cursor file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorRead {
    /// (generation, seq) of the newest valid slot, if any slot is valid.
    pub value: Option<(u64, u64)>,
    /// How many of the two slots failed their check (a torn or never-written slot).
    pub bad_slots: u8,
    /// Slot size found (512: a v1 file).
    pub slot_bytes: u64,
}

/// Reads both slots of a cursor file.
pub fn read_cursor(file: &dyn MediumFile) -> std::io::Result<CursorRead> {
    let mut bad_slots = 0;
    let mut best: Option<(u64, u64)> = None;
    let slot_bytes = slot_bytes_for(file.len());
    for slot in 0..2u64 {
        let mut bytes = [0u8; 28];
        if file.len() < (slot + 1) * slot_bytes {
            bad_slots += 1;
            continue;
        }
        if file.read_uncached(slot * slot_bytes, &mut bytes).is_err() {
            bad_slots += 1;
            continue;
        }
        match decode_slot(&bytes) {
            // A slot must sit where its generation says; otherwise it is not trusted.
            Some((generation, seq)) if generation % 2 == slot => {
                if best.is_none_or(|(g, _)| generation > g) {
                    best = Some((generation, seq));
                }
            }
            _ => bad_slots += 1,
        }
    }
    Ok(CursorRead {
        value: best,
        bad_slots,
        slot_bytes,
    })
}

/// An open cursor: its file and its current value.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub file: Box<dyn MediumFile>,
    pub generation: u64,
    pub seq: u64,
}

impl Cursor {
    /// Durably moves the cursor to `seq`: writes the other slot, then syncs.
    pub fn store(&mut self, seq: u64) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let slot = generation % 2;
        self.file.write_at(
            slot * CURSOR_SLOT_BYTES,
            &encode_slot(generation, seq)[..28],
        )?;
        self.file.sync()?;
        self.generation = generation;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trip_and_crc() {
        let slot = encode_slot(5, 77);
        assert_eq!(decode_slot(&slot), Some((5, 77)));
        let mut bad = slot;
        bad[17] ^= 1;
        assert_eq!(decode_slot(&bad), None);
    }

    #[test]
    fn names() {
        assert!(valid_cursor_name("forward"));
        assert!(!valid_cursor_name(""));
        assert!(!valid_cursor_name("Forward"));
        assert!(!valid_cursor_name(&"a".repeat(33)));
    }
}
