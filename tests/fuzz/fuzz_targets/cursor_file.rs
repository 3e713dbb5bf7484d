//! A cursor file of fuzzer bytes (`u8 flags`, then the bytes; src/lib.rs): its slot decoder,
//! the reader recovery uses (`cursor::read_cursor`), and a read-only open of a data directory
//! holding only that cursor, as `edgecap log verify` would. Never a panic; and the open reports
//! the value the reader found (0 when both slots are bad).
#![no_main]

use edgecap_fuzz::{cursor_file, verify_and_dump, write_cursor, Input, MemFile, CURSOR_NAME};
use edgecap_storage::cursor::{decode_slot, read_cursor, slot_bytes_for};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let bytes = cursor_file(flags, input.rest());
    let _ = decode_slot(&bytes);
    let len = bytes.len() as u64;
    let read = read_cursor(&MemFile(bytes.clone())).expect("reads inside the file cannot fail");
    assert_eq!(read.slot_bytes, slot_bytes_for(len));
    assert!(read.bad_slots <= 2);
    assert_eq!(read.value.is_none(), read.bad_slots == 2, "{read:?}");
    if let Some((generation, seq)) = read.value {
        // The value comes from a valid slot, sitting where its generation says.
        let at = (generation % 2 * read.slot_bytes) as usize;
        assert_eq!(decode_slot(&bytes[at..]), Some((generation, seq)));
    }
    let dir = tempfile::tempdir().expect("creating a temp dir");
    write_cursor(dir.path(), &bytes);
    if let Some(report) = verify_and_dump(dir.path(), len) {
        let expected = read.value.map_or(0, |(_, seq)| seq);
        assert!(
            report
                .cursors
                .iter()
                .any(|c| c.name == CURSOR_NAME && c.seq == expected),
            "cursor file read as {read:?}, open reported {:?}",
            report.cursors
        );
    }
});
