//! Every bound of the storage crate, in one place.
//!
//! Each constant says its value, why, and what it costs. Relationships between them are checked
//! at compile time below, so a change that breaks one fails the build instead of a device.

/// Size of a device sector as the power-loss model sees it: 512 bytes. Writes are assumed to
/// persist (or tear) per sector; see `FORMAT.md`, "Assumptions about the medium".
pub const SECTOR_BYTES: u64 = 512;

/// Segment header size: 64 bytes, fixed by the format (FORMAT.md).
pub const SEGMENT_HEADER_BYTES: u64 = 64;

/// The unit a non-powersafe medium may tear or fill with garbage when power fails mid-write:
/// one 4 KiB page (SD cards and eMMC write whole pages or more). Format v2 keeps every
/// acknowledged byte out of any page a later write touches (FORMAT.md, "Trailer: tail-page copies and seals").
pub const PAGE_BYTES: u64 = 4096;

/// Where frames start in a v2 segment: 4096, so the header has page 0 to itself and no append
/// ever rewrites the page holding it. Costs 4 KiB per segment (0.02 % of a default segment).
pub const SEGMENT_DATA_START: u64 = PAGE_BYTES;

/// Where frames start in a v1 segment (read only): right after the header.
pub const SEGMENT_DATA_START_V1: u64 = SEGMENT_HEADER_BYTES;

/// Tail-page slots at the end of every v2 segment: two, of two pages each (a slot holds its
/// header and up to 4096 copied bytes). Each sync copies the page the next append will rewrite
/// into the slot not holding the newest copy (FORMAT.md).
pub const TAIL_SLOTS: u64 = 2;

/// Bytes reserved at the end of a v2 segment for the tail-page slots: 16 KiB (0.1 % of a
/// default segment).
pub const SEGMENT_TRAILER_BYTES: u64 = TAIL_SLOTS * 2 * PAGE_BYTES;

/// Header of one tail-page slot: magic 8, generation 8, page offset 8, proven seq 8, copied
/// bytes 4, crc 4 = 40 bytes.
pub const TAIL_SLOT_HEADER_BYTES: u64 = 40;

/// Largest payload any reader accepts, whatever the append limit was: 1 MiB. The append limit
/// (`record_bytes_max`) may be lowered between runs; frames written under a higher one must
/// still read (FORMAT.md, "Record frame"). Bounds what a corrupt length field can make a
/// reader allocate.
pub const RECORD_PAYLOAD_BYTES_MAX_FORMAT: usize = 1024 * 1024;

/// Most bytes one recovery keeps of what it cuts, in a `*.cut` side file: 1 MiB. A torn tail is
/// at most the bytes appended since the last sync; anything longer keeps its first 1 MiB.
pub const CUT_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Most `*.cut` side files kept in a data directory: 8; the oldest is removed first.
pub const CUT_FILES_MAX: usize = 8;

/// Record frame header: length (4), CRC (4), seq (8) = 16 bytes.
pub const FRAME_HEADER_BYTES: u64 = 16;

/// Frames start on 8-byte boundaries so the header's `u64` never straddles a boundary and a
/// scan can resynchronise cheaply. Costs at most 7 bytes of padding per record.
pub const FRAME_ALIGN_BYTES: u64 = 8;

/// Default segment size: 16 MiB. Big enough that rotation (create + zero-fill + two fsyncs) is
/// rare (about once per 100k small events), small enough that retention frees space in useful
/// steps on a 512 MiB budget and that zero-filling a new segment takes well under a second even
/// on a slow SD card.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;

/// Smallest allowed segment: 24 KiB (a header page, one data page, two tail-page slots). Only
/// tests go this low (constant rotation); a device would waste its time creating files.
pub const SEGMENT_BYTES_MIN: u64 = SEGMENT_DATA_START + PAGE_BYTES + SEGMENT_TRAILER_BYTES;

/// Largest allowed segment: 1 GiB. Each segment is mapped whole; on 32-bit ARM the address
/// space (3 GiB) is the real limit, so this keeps a budget's worth of maps well inside it.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Default disk budget for all segments: 512 MiB (32 default segments), a modest share of an
/// 8–32 GB SD card.
pub const DISK_BYTES_MAX_DEFAULT: u64 = 512 * 1024 * 1024;

/// Fewest segments a budget must hold: 2, so the active segment can rotate while the oldest is
/// released.
pub const SEGMENTS_IN_BUDGET_MIN: u64 = 2;

/// Default largest encoded event (postcard payload of one record): 64 KiB. The daemon's wire
/// limit (`max_event_bytes`, default 4 KiB of JSON) sits far below it; this bound exists so a
/// corrupt length field can never make a reader allocate more than this.
pub const RECORD_PAYLOAD_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Longest `source` name, in bytes: 64 (INTERFACE.md). Stored as a `heapless::String`.
pub const SOURCE_BYTES_MAX: usize = 64;

/// Longest cursor name, in bytes: 32.
pub const CURSOR_NAME_BYTES_MAX: usize = 32;

/// Cursor file: two slots of one page each, so a torn (even garbage) write of the page being
/// updated cannot damage the other slot. v1 files used 512-byte slots (`CURSOR_SLOT_BYTES_V1`).
pub const CURSOR_SLOT_BYTES: u64 = PAGE_BYTES;

/// Slot size of a v1 cursor file (1024 bytes long), still read; rewritten as v2 on repair.
pub const CURSOR_SLOT_BYTES_V1: u64 = SECTOR_BYTES;

/// Chunk used to zero-fill segments and torn tails: 64 KiB, a bounded buffer.
pub const ZERO_CHUNK_BYTES: usize = 64 * 1024;

/// Appended frames kept in memory before one `pwrite` puts them in the page cache: 64 KiB
/// (512 frames of 128 bytes). A batch of appends then costs one write call instead of one per
/// event (the issue 11 benchmark: the per-event `pwrite` was most of an append at batch 256).
/// Flushed before every sync, rotation and [`crate::Log::flush`]; never more than this plus
/// one frame is held, and nothing in it is durable or readable yet, so a crash loses only
/// bytes nobody was told were stored.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Most bytes the log writes past the end of data at the last completed sync of a segment,
/// before it syncs again: 4 MiB. An append (or `Log::flush`) whose write would go further
/// syncs first; a sync leader's flush and a rotation's flush, each synced at once, add at most
/// one buffer and one frame each (a rotation may flush while a leader's sync is still
/// running). So after a power cut, stale bytes can lie only in [`UNSYNCED_WINDOW_BYTES`]
/// past the recovered end, and a repairing open reads no further for them: open time does not
/// grow with a segment's zero-filled rest (FORMAT.md, "Segment header").
pub const UNSYNCED_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// How far past the recovered end of data a repairing open looks for stale bytes in a segment
/// whose header promises the bound: [`UNSYNCED_BYTES_MAX`] plus two unchecked flushes (a
/// leader's and a rotation's: each one write buffer and one frame of the format's largest
/// size) and a page.
pub const UNSYNCED_WINDOW_BYTES: u64 = UNSYNCED_BYTES_MAX
    + 2 * (WRITE_BUFFER_BYTES as u64 + FRAME_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX_FORMAT as u64)
    + PAGE_BYTES;

/// Most cursors one log holds: 16. Each is a 1 KiB file and each costs a sync when it moves.
pub const CURSORS_MAX: usize = 16;

/// The highest seq any log can reach (2^62: 146,000 years at a million events a second). A seq
/// above it read from disk (a frame, a cursor, a seal, a proof, a file name), CRC or not, is
/// damage: trusting it would push the next seq past `u64::MAX`.
pub const SEQ_MAX: u64 = 1 << 62;

/// The highest generation of a tail slot, seal or cursor slot (each write adds one): past it,
/// as for [`SEQ_MAX`], the slot is damage, so `generation + 1` never overflows.
pub const GENERATION_MAX: u64 = 1 << 62;

/// A seq a log can hold: `1..=SEQ_MAX`.
pub fn plausible_seq(seq: u64) -> bool {
    (1..=SEQ_MAX).contains(&seq)
}

const _: () = assert!(SEGMENT_HEADER_BYTES % FRAME_ALIGN_BYTES == 0);
const _: () = assert!(FRAME_HEADER_BYTES % FRAME_ALIGN_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_MIN % SECTOR_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_DEFAULT % SECTOR_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(DISK_BYTES_MAX_DEFAULT >= SEGMENTS_IN_BUDGET_MIN * SEGMENT_BYTES_DEFAULT);
// A default segment holds at least one record of the default maximum size.
const _: () = assert!(
    SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX_DEFAULT as u64
        <= SEGMENT_BYTES_DEFAULT
);
const _: () = assert!(ZERO_CHUNK_BYTES as u64 % SECTOR_BYTES == 0);
const _: () = assert!(WRITE_BUFFER_BYTES as u64 >= PAGE_BYTES);
const _: () = assert!(SEGMENT_DATA_START % PAGE_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_MIN % PAGE_BYTES == 0);
const _: () = assert!(TAIL_SLOT_HEADER_BYTES % FRAME_ALIGN_BYTES == 0);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX_DEFAULT <= RECORD_PAYLOAD_BYTES_MAX_FORMAT);
