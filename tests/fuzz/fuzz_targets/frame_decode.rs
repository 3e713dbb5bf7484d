//! The decoders a scan runs on the bytes of a segment, fed directly: the segment header, the
//! segment file name, the frame header and CRC, and the postcard payload (`Event`) with the
//! JSON `log dump` prints for it. None may panic or allocate without bound, and what decodes
//! must encode back to the same bytes.
#![no_main]

use edgecap_storage::limits::FRAME_HEADER_BYTES;
use edgecap_storage::record::{decode_header, encode_frame, frame_bytes, frame_crc};
use edgecap_storage::segment::{parse_segment_name, segment_name, SegmentHeader};
use edgecap_storage::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SegmentHeader::decode(data) {
        let _ = header.data_range();
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }
    if let Some(first_seq) = parse_segment_name(&String::from_utf8_lossy(data)) {
        assert_eq!(
            parse_segment_name(&segment_name(first_seq)),
            Some(first_seq)
        );
    }
    let header_bytes = FRAME_HEADER_BYTES as usize;
    if data.len() >= header_bytes {
        let (payload_bytes, crc, seq) = decode_header(&data[..header_bytes]);
        let _ = frame_bytes(payload_bytes as usize);
        let payload = &data[header_bytes..];
        if payload_bytes > 0 && payload_bytes as usize <= payload.len() {
            let payload = &payload[..payload_bytes as usize];
            if frame_crc(payload_bytes, seq, payload) == crc {
                // A frame the scanner accepts: the encoder writes the same header.
                let mut frame = Vec::new();
                encode_frame(seq, payload, &mut frame);
                assert_eq!(frame[..header_bytes], data[..header_bytes]);
                check_payload(payload);
            }
        }
    }
    // The payload decoder on the raw bytes, as a reader decodes a CRC-valid frame's payload.
    check_payload(data);
});

fn check_payload(payload: &[u8]) {
    let Ok(event) = postcard::from_bytes::<Event>(payload) else {
        return;
    };
    // Compared as bytes: a float payload may be NaN, which is not equal to itself.
    let bytes = postcard::to_stdvec(&event).expect("a decoded event encodes");
    let again: Event = postcard::from_bytes(&bytes).expect("an encoded event decodes");
    assert_eq!(postcard::to_stdvec(&again).expect("encodes"), bytes);
    let _ = edgecap::json::event_json(&event, None).to_string();
}
