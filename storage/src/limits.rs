//! Every bound of the storage crate, in one place.
//!
//! Each constant says its value, why, and what it costs. Relationships between them are checked
//! at compile time below, so a change that breaks one fails the build instead of a device.

/// Size of a device sector as the power-loss model sees it: 512 bytes. Writes are assumed to
/// persist (or tear) per sector; see `FORMAT.md`, "Assumptions about the medium".
pub const SECTOR_BYTES: u64 = 512;

/// Segment header size: 64 bytes, fixed by the format (FORMAT.md). Data starts right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 64;

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

/// Smallest allowed segment: 4 KiB. Only tests go this low (constant rotation); a device would
/// waste its time creating files.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;

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

/// Cursor file: two slots of one sector each, so a torn update can damage only one slot.
pub const CURSOR_SLOT_BYTES: u64 = SECTOR_BYTES;

/// Chunk used to zero-fill segments and torn tails: 64 KiB, a bounded buffer.
pub const ZERO_CHUNK_BYTES: usize = 64 * 1024;

/// Most cursors one log holds: 16. Each is a 1 KiB file and each costs a sync when it moves.
pub const CURSORS_MAX: usize = 16;

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
