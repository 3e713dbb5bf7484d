//! The ingest socket's request parsing: the input as one request line
//! (`ingest::parse_request`), then as a stream split by the bounded line reader
//! (`ingest::read_line_bounded`, checked against a model of it) with each line parsed. A line
//! is an event, a control request or an error reply, never a panic; an accepted event encodes
//! for the log, reads back byte for byte, keeps its JSON value exactly and encodes upstream.
#![no_main]

use std::sync::OnceLock;

use edgecap::forward::{encode_upstream, publish_bytes};
use edgecap::ingest::{parse_request, read_line_bounded, valid_source, Line, Request};
use edgecap::json::to_json;
use edgecap_storage::{Event, Kind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use tokio::io::BufReader;

/// Line bound of the stream pass: small, so long lines are met without huge inputs.
const LINE_MAX: usize = 100;
/// Read buffer of the stream pass: small, so lines arrive in pieces.
const BUFFER_BYTES: usize = 7;

fuzz_target!(|data: &[u8]| {
    check_request(data);
    for line in read_lines(data).into_iter().flatten() {
        check_request(&line);
    }
});

/// The lines of `data` as `read_line_bounded` returns them (`None`: a line over the bound),
/// checked against what it promises.
fn read_lines(data: &[u8]) -> Vec<Option<Vec<u8>>> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    });
    let got = runtime.block_on(async {
        let mut reader = BufReader::with_capacity(BUFFER_BYTES, data);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            let line = read_line_bounded(&mut reader, &mut buf, LINE_MAX)
                .await
                .expect("reading memory cannot fail");
            match line {
                Line::Eof => break,
                Line::Complete => lines.push((Some(buf.clone()), buf.len())),
                Line::TooLong(n) => lines.push((None, n)),
            }
            assert!(
                lines.len() <= data.len() + 1,
                "the line reader does not advance"
            );
        }
        lines
    });
    assert_eq!(got, model(data), "read_line_bounded on {data:?}");
    got.into_iter().map(|(line, _)| line).collect()
}

/// What `read_line_bounded` promises: lines end at `\n`, which is removed with one `\r`
/// before it; a last line without `\n` is returned as it is; a line of more than the bound
/// (counted before the `\r` is removed) is reported with its length and not returned.
fn model(data: &[u8]) -> Vec<(Option<Vec<u8>>, usize)> {
    let mut pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = pieces.pop().unwrap_or_default();
    let mut lines: Vec<_> = pieces
        .into_iter()
        .map(|raw| {
            if raw.len() > LINE_MAX {
                (None, raw.len())
            } else {
                let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                (Some(line.to_vec()), line.len())
            }
        })
        .collect();
    if !last.is_empty() {
        if last.len() > LINE_MAX {
            lines.push((None, last.len()));
        } else {
            lines.push((Some(last.to_vec()), last.len()));
        }
    }
    lines
}

fn check_request(line: &[u8]) {
    match parse_request(line) {
        Err(message) => {
            assert!(!message.is_empty());
            let _ = serde_json::json!({"ok": false, "error": message}).to_string();
        }
        Ok(Request::Append(event)) => check_event(line, &event),
        Ok(Request::Follow(follow)) => {
            if let Some(source) = &follow.source {
                assert!(valid_source(source), "follow source {source:?}");
            }
        }
        Ok(Request::Status | Request::State) => {}
    }
}

fn check_event(line: &[u8], event: &Event) {
    assert!(valid_source(&event.source), "source {:?}", event.source);
    assert!(matches!(event.kind, Kind::Sensor | Kind::Command));
    // What the writer stores: postcard, read back byte for byte.
    let bytes = postcard::to_stdvec(event).expect("an accepted event encodes");
    let back: Event = postcard::from_bytes(&bytes).expect("an accepted event decodes");
    assert_eq!(postcard::to_stdvec(&back).expect("encodes"), bytes);
    // json.rs: lossless, so the stored value prints as the JSON value that came in.
    let json: Json = serde_json::from_slice(line).expect("parse_request accepted it as JSON");
    assert_eq!(to_json(&event.value), json["value"]);
    // What the forwarder publishes.
    let (topic, payload) = encode_upstream(event, "pi-0042", "edgecap");
    let _ = publish_bytes(&topic, &payload);
    serde_json::from_str::<Json>(&payload).expect("the upstream payload is JSON");
}
