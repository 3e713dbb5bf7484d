//! Tail-page slots: how a v2 segment survives media without powersafe overwrite.
//!
//! A sync that leaves the end of data inside a page leaves acknowledged frames in a page the
//! next append rewrites. An SD card may tear that rewrite or fill the whole page with garbage.
//! So every sync first copies that page's acknowledged prefix into one of two slots at the end
//! of the segment — the slot *not* holding the newest copy — and one `fdatasync` makes frames
//! and copy durable together. A torn later write can then damage only: the page it rewrites
//! (restored from the newest valid copy by recovery), pages holding nothing acknowledged, and
//! the older slot. Keep in step with FORMAT.md, "Trailer: tail-page copies and seals".
//!
//! Slot (8 KiB, two per segment at `segment_bytes - 16384` and `segment_bytes - 8192`; **do
//! not reorder fields**):
//!
//! ```text
//! offset  size  field
//! 0       8     magic         b"EDGECAPT"
//! 8       8     generation    u64 >= 1, +1 per copy; slot = generation % 2
//! 16      8     page_offset   u64, multiple of 4096 inside the data region
//! 24      8     proven_seq    u64, the log's durable seq when the copy was written
//! 32      4     copied_bytes  u32, 1..=4096: bytes page_offset..page_offset+copied_bytes
//! 36      4     crc32         over bytes 0..36 ++ the copied bytes
//! 40      n     the copied bytes
//! ```
//!
//! A seal (written at rotation, after the segment's last sync, into the next slot):
//!
//! ```text
//! offset  size  field
//! 0       8     magic         b"EDGECAPZ"
//! 8       8     generation    u64, one past the newest copy; slot = generation % 2
//! 16      8     last_seq      u64, seq of the last frame
//! 24      8     end_offset    u64, one past the last frame
//! 32      4     reserved      0
//! 36      4     crc32         over bytes 0..36
//! ```
//!
//! Only a seal whose generation is the highest in the trailer counts: a later copy (a sync
//! racing the rotation, or appends after a seal that was not trusted) makes it stale.

use std::sync::atomic::Ordering;

use crate::limits::{PAGE_BYTES, SEGMENT_TRAILER_BYTES, TAIL_SLOT_HEADER_BYTES};
use crate::scan::Window;
use crate::segment::{Segment, FORMAT_VERSION};

/// Magic bytes of a tail-page slot.
pub const TAIL_MAGIC: [u8; 8] = *b"EDGECAPT";
/// Magic bytes of a seal.
pub const SEAL_MAGIC: [u8; 8] = *b"EDGECAPZ";
const SEAL_BYTES: usize = 40;

/// A valid seal: the segment was complete and durable up to `end_offset` when it was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    pub generation: u64,
    pub last_seq: u64,
    pub end_offset: u64,
}
/// Size of one slot: 8 KiB (its header and up to 4096 copied bytes).
pub const TAIL_SLOT_BYTES: u64 = SEGMENT_TRAILER_BYTES / 2;

/// A valid slot as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TailSlot {
    pub generation: u64,
    pub page_offset: u64,
    pub proven_seq: u64,
    pub bytes: Vec<u8>,
}

/// File offset of the slot that copy `generation` goes to.
pub fn slot_offset(segment_bytes: u64, generation: u64) -> u64 {
    segment_bytes - SEGMENT_TRAILER_BYTES + (generation % 2) * TAIL_SLOT_BYTES
}

/// The slot bytes for a copy of `bytes`, the prefix of the page at `page_offset`.
pub fn encode_slot(generation: u64, page_offset: u64, proven_seq: u64, bytes: &[u8]) -> Vec<u8> {
    assert!(generation >= 1 && page_offset % PAGE_BYTES == 0);
    assert!(!bytes.is_empty() && bytes.len() as u64 <= PAGE_BYTES);
    let mut out = Vec::with_capacity(TAIL_SLOT_HEADER_BYTES as usize + bytes.len());
    out.extend_from_slice(&TAIL_MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&page_offset.to_le_bytes());
    out.extend_from_slice(&proven_seq.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[0..36]);
    hasher.update(bytes);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

fn decode_slot(window: &mut Window<'_>, at: u64, slot: u64, data: (u64, u64)) -> Option<TailSlot> {
    let header = window
        .bytes(at, TAIL_SLOT_HEADER_BYTES as usize)
        .ok()?
        .to_vec();
    if header[0..8] != TAIL_MAGIC {
        return None;
    }
    let field = |from: usize| u64::from_le_bytes(header[from..from + 8].try_into().unwrap());
    let (generation, page_offset, proven_seq) = (field(8), field(16), field(24));
    let copied = u32::from_le_bytes(header[32..36].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[36..40].try_into().unwrap());
    // Checked before the CRC (which needs `copied` bytes): nothing here may overflow.
    let plausible = (1..=crate::limits::GENERATION_MAX).contains(&generation)
        && proven_seq <= crate::limits::SEQ_MAX
        && generation % 2 == slot
        && page_offset % PAGE_BYTES == 0
        && page_offset >= data.0
        && (1..=PAGE_BYTES).contains(&copied)
        && page_offset
            .checked_add(copied)
            .is_some_and(|end| end <= data.1);
    if !plausible {
        return None;
    }
    let bytes = window
        .bytes(at + TAIL_SLOT_HEADER_BYTES, copied as usize)
        .ok()?
        .to_vec();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..36]);
    hasher.update(&bytes);
    (hasher.finalize() == crc).then_some(TailSlot {
        generation,
        page_offset,
        proven_seq,
        bytes,
    })
}

fn decode_seal(window: &mut Window<'_>, at: u64, slot: u64) -> Option<Seal> {
    let bytes = window.bytes(at, SEAL_BYTES).ok()?.to_vec();
    let field = |from: usize| u64::from_le_bytes(bytes[from..from + 8].try_into().unwrap());
    let crc = u32::from_le_bytes(bytes[36..40].try_into().unwrap());
    let valid = bytes[0..8] == SEAL_MAGIC
        && field(8) % 2 == slot
        && field(8) <= crate::limits::GENERATION_MAX
        && crc32fast::hash(&bytes[0..36]) == crc;
    valid.then(|| Seal {
        generation: field(8),
        last_seq: field(16),
        end_offset: field(24),
    })
}

/// What a v2 segment's trailer holds, read once per open (FORMAT.md, "Trailer").
#[derive(Debug, Clone, Default)]
pub(crate) struct Trailer {
    /// Valid tail-page copies, oldest generation first.
    pub slots: Vec<TailSlot>,
    /// The seal, when it is the newest record of the trailer and could describe the segment.
    pub seal: Option<Seal>,
    /// Highest seq of any CRC-valid frame in each slot's copy area (slot 0, slot 1), **valid
    /// slot or not**: a copy torn by a crash may still hold whole frames, and their seqs were
    /// handed out.
    pub slot_highest: [Option<u64>; 2],
}

impl Trailer {
    /// Highest seq of any CRC-valid frame in either copy area.
    pub fn highest_seq(&self) -> Option<u64> {
        self.slot_highest.into_iter().flatten().max()
    }
}

/// File offset of the copied bytes of `slot` (0 or 1), right after its header.
pub(crate) fn copy_area(segment_bytes: u64, slot: u64) -> u64 {
    slot_offset(segment_bytes, slot) + TAIL_SLOT_HEADER_BYTES
}

/// Reads the trailer of a v2 segment with data region `data`: one `pread` of its 16 KiB
/// (the window holds it), decoded as copies, seal and raw frames.
pub(crate) fn read_trailer(
    window: &mut Window<'_>,
    segment_bytes: u64,
    data: (u64, u64),
) -> Trailer {
    let slots = read_slots(window, segment_bytes, data);
    let newest_copy = slots.last().map_or(0, |s| s.generation);
    let seal = (0..2)
        .filter_map(|slot| decode_seal(window, slot_offset(segment_bytes, slot), slot))
        .max_by_key(|seal| seal.generation)
        .filter(|seal| {
            seal.generation > newest_copy
                && seal.end_offset >= data.0
                && seal.end_offset <= data.1
                && seal.last_seq <= crate::limits::SEQ_MAX
        });
    let slot_highest = [0, 1].map(|slot| {
        let from = copy_area(segment_bytes, slot);
        let to = from + PAGE_BYTES;
        crate::scan::valid_frames_in(window, from, to, to).highest
    });
    Trailer {
        slots,
        seal,
        slot_highest,
    }
}

/// Seals a segment whose every frame is durable: the caller holds the slot lock and syncs. From then on recovery may
/// take its end from the seal instead of scanning it (FORMAT.md, "Trailer: tail-page copies and seals").
pub(crate) fn write_seal(segment: &Segment) -> std::io::Result<()> {
    if segment.version != FORMAT_VERSION {
        return Ok(());
    }
    let generation = segment.tail_generation.load(Ordering::Acquire) + 1;
    let bytes = encode_seal(generation, segment.last_seq(), segment.end_offset());
    segment
        .file
        .write_at(slot_offset(segment.file.len(), generation), &bytes)?;
    segment.tail_generation.store(generation, Ordering::Release);
    Ok(())
}

/// The bytes of a seal, for the slot `generation % 2`.
pub fn encode_seal(generation: u64, last_seq: u64, end_offset: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SEAL_BYTES);
    bytes.extend_from_slice(&SEAL_MAGIC);
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&last_seq.to_le_bytes());
    bytes.extend_from_slice(&end_offset.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The valid slots of a v2 segment with data region `data`, oldest generation first.
pub(crate) fn read_slots(
    window: &mut Window<'_>,
    segment_bytes: u64,
    data: (u64, u64),
) -> Vec<TailSlot> {
    let mut slots: Vec<TailSlot> = (0..2)
        .filter_map(|slot| decode_slot(window, slot_offset(segment_bytes, slot), slot, data))
        .collect();
    slots.sort_by_key(|s| s.generation);
    slots
}

/// Writes the copy of the page holding `end` (its bytes before `end`) to the slot not holding
/// the newest copy; the caller syncs. Nothing to copy when `end` is on a page boundary.
pub(crate) fn write_copy(segment: &Segment, end: u64, proven_seq: u64) -> std::io::Result<()> {
    let page = end - end % PAGE_BYTES;
    if page == end {
        return Ok(());
    }
    copy_page(segment, page, end, proven_seq)
}

/// Writes a copy of `page..end` (at most one whole page) to the slot not holding the newest
/// copy. The caller holds [`Segment::lock_slots`] across this write *and* its sync, so no
/// other copy can replace the newest durable one before this one is durable.
pub(crate) fn copy_page(
    segment: &Segment,
    page: u64,
    end: u64,
    proven_seq: u64,
) -> std::io::Result<()> {
    if segment.version != FORMAT_VERSION {
        return Ok(());
    }
    assert!(page % PAGE_BYTES == 0 && page < end && end - page <= PAGE_BYTES);
    let mut bytes = vec![0u8; (end - page) as usize];
    // pread: a copy must never fault on a bad sector, and needs no map.
    segment.file.read_uncached(page, &mut bytes)?;
    let generation = segment.tail_generation.load(Ordering::Acquire) + 1;
    let slot = encode_slot(generation, page, proven_seq, &bytes);
    segment
        .file
        .write_at(slot_offset(segment.file.len(), generation), &slot)?;
    segment.tail_generation.store(generation, Ordering::Release);
    Ok(())
}

/// After recovery changed the tail (a cut, a restore, rewritten bytes): each slot in turn, the
/// older first, gets a copy of the current tail page (or zeros when the end is on a page
/// boundary), **each followed by its own sync**, so no older copy can ever be put back over
/// later appends and the newest valid copy is never rewritten in the same sync as the page it
/// protects or as the other slot. The caller has synced everything else first.
pub(crate) fn refresh_copies(segment: &Segment, end: u64, proven_seq: u64) -> std::io::Result<()> {
    if segment.version != FORMAT_VERSION {
        return Ok(());
    }
    for _ in 0..2 {
        if end % PAGE_BYTES == 0 {
            let generation = segment.tail_generation.load(Ordering::Acquire) + 1;
            let zeros = vec![0u8; TAIL_SLOT_BYTES as usize];
            segment
                .file
                .write_at(slot_offset(segment.file.len(), generation), &zeros)?;
            segment.tail_generation.store(generation, Ordering::Release);
        } else {
            write_copy(segment, end, proven_seq)?;
        }
        segment.file.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medium::Medium;
    use crate::sim::SimMedium;

    #[test]
    fn slots_round_trip_and_a_flipped_byte_invalidates_one() {
        let len = 64 * 1024;
        let medium = SimMedium::new();
        let mut file = vec![0u8; len as usize];
        let a = encode_slot(3, 8192, 40, b"abc");
        let b = encode_slot(4, 12288, 41, b"defg");
        let at_a = slot_offset(len, 3) as usize;
        let at_b = slot_offset(len, 4) as usize;
        file[at_a..at_a + a.len()].copy_from_slice(&a);
        file[at_b..at_b + b.len()].copy_from_slice(&b);
        medium.set_file_bytes("s", file.clone());
        let f = medium.open("s", false).unwrap();
        let slots = read_slots(&mut Window::uncached(&*f), len, (4096, len - 16384));
        assert_eq!(
            slots.iter().map(|s| s.generation).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(slots[1].bytes, b"defg");
        file[at_b + 41] ^= 1;
        medium.set_file_bytes("s", file);
        let f = medium.open("s", false).unwrap();
        let slots = read_slots(&mut Window::uncached(&*f), len, (4096, len - 16384));
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].proven_seq, 40);
    }
}
