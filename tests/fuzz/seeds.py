#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/TARGET/NAME).

The binary seeds follow storage/FORMAT.md byte for byte (CRC-32 as zlib computes it, the same as
crc32fast; postcard for the events) and the input layouts of tests/fuzz/src/lib.rs and of each
target's doc comment. Run it again after changing either: python3 tests/fuzz/seeds.py
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

# src/lib.rs, file_flags and cursor_flags
SHAPED, FIX_HEADER, FIX_FRAMES, FIX_TRAILER, V1 = 0x01, 0x02, 0x04, 0x08, 0x10
CURSOR_V2, CURSOR_V1, CURSOR_FIX = 0x01, 0x02, 0x04
# control byte of segment_recovery
CURSOR_FOLLOWS, REPAIR = 0x04, 0x08
QUARANTINE_LAST, CUT_LAST, TEMP_LAST = 0x10, 0x20, 0x30

SEGMENT = 24 * 1024  # a SHAPED segment without extra pages
DATA_START = 4096
WALL_MS = 1_764_763_200_000  # 2025-12-03T12:00:00Z
BOOT = bytes(range(16))


def crc(data):
    return zlib.crc32(data) & 0xFFFFFFFF


# ---- postcard (1.x): varints, zigzag, strings, and the Event of storage/src/event.rs ----


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zigzag(n):
    return ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF


def string(text):
    data = text.encode()
    return varint(len(data)) + data


def value(v):
    """A storage Value: None, bool, int, float, str, list, or a list of (key, value) pairs
    wrapped in a dict (members keep their order)."""
    if v is None:
        return varint(0)
    if isinstance(v, bool):
        return varint(1) + bytes([v])
    if isinstance(v, int):
        if -(2**63) <= v < 2**63:
            return varint(2) + varint(zigzag(v))
        return varint(3) + varint(v)
    if isinstance(v, float):
        return varint(4) + struct.pack("<d", v)
    if isinstance(v, str):
        return varint(5) + string(v)
    if isinstance(v, list):
        return varint(6) + varint(len(v)) + b"".join(value(x) for x in v)
    if isinstance(v, dict):
        return varint(7) + varint(len(v)) + b"".join(string(k) + value(x) for k, x in v.items())
    raise TypeError(v)


SENSOR, COMMAND, SYSTEM = 0, 1, 2


def event(seq, kind, source, val, mono_ms=1234, synced=True):
    return (
        varint(seq)
        + varint(zigzag(WALL_MS + seq))
        + varint(mono_ms)
        + BOOT
        + bytes([int(synced)])
        + varint(kind)
        + string(source)
        + value(val)
    )


def events(first, count):
    """`count` events from seq `first`: sensors, a command, and a clock step (the last)."""
    out = []
    for seq in range(first, first + count):
        if seq == first + count - 1 and count > 1:
            val = {"event": "clock_step", "offset_ms": 1500}
            out.append((seq, event(seq, SYSTEM, "edgecap", val, mono_ms=5000)))
        elif seq % 2:
            out.append((seq, event(seq, SENSOR, "temp0", 21.5 + seq)))
        else:
            out.append((seq, event(seq, COMMAND, "valve", {"open": True, "n": [1, None]})))
    return out


# ---- storage/FORMAT.md ----


def frame(seq, payload, good_crc=True):
    n = len(payload)
    check = crc(struct.pack("<I", n) + struct.pack("<Q", seq) + payload) if good_crc else 0
    out = struct.pack("<IIQ", n, check, seq) + payload
    return out + bytes(-len(out) % 8)


def frames(first, count, good_crc=True):
    return b"".join(frame(seq, p, good_crc) for seq, p in events(first, count))


def segment_header(first_seq, segment_bytes, version=2):
    head = b"EDGECAPS" + struct.pack("<IIQQq", version, 64, first_seq, segment_bytes, WALL_MS)
    head += bytes(20)
    return head + struct.pack("<I", crc(head))


def tail_copy(generation, page_offset, proven_seq, data, good_crc=True):
    head = b"EDGECAPT" + struct.pack("<QQQI", generation, page_offset, proven_seq, len(data))
    check = crc(head + data) if good_crc else 0
    return head + struct.pack("<I", check) + data


def seal(generation, last_seq, end_offset):
    body = b"EDGECAPZ" + struct.pack("<QQQ", generation, last_seq, end_offset) + bytes(4)
    return body + struct.pack("<I", crc(body))


def cursor_slot(generation, seq, good_crc=True):
    body = b"EDGECAPC" + struct.pack("<QQ", generation, seq)
    return body + struct.pack("<I", crc(body) if good_crc else 0)


def cut_header(first_seq, offset, kept):
    head = b"EDGECAPX" + struct.pack("<QQQQq", first_seq, offset, len(kept), len(kept), WALL_MS)
    head += struct.pack("<I", crc(kept)) + bytes(8)
    return head + struct.pack("<I", crc(head))


# ---- the segment_recovery layout (src/lib.rs) ----


def file_record(flags, seq, body, tail=b""):
    out = bytes([flags, seq]) + struct.pack("<H", len(body)) + body
    if flags & SHAPED:
        out += struct.pack("<H", len(tail)) + tail
    return out


def shaped(first_seq, count, tail=b"", flags=SHAPED, seq=None, good_crc=True):
    body = segment_header(first_seq, SEGMENT) + frames(first_seq, count, good_crc)
    return file_record(flags, first_seq if seq is None else seq, body, tail)


def both_slots(slot0, slot1):
    """A tail whose halves land in trailer slots 0 and 1."""
    size = max(len(slot0), len(slot1))
    return slot0.ljust(size, b"\0") + slot1.ljust(size, b"\0")


def cursor_record(flags, data):
    return bytes([flags]) + struct.pack("<H", len(data)) + data


def segment_recovery():
    seeds = {"empty": b""}
    seeds["v2-three-events"] = bytes([0]) + shaped(1, 3)
    seeds["v2-cursor"] = (
        bytes([CURSOR_FOLLOWS])
        + shaped(1, 3)
        + cursor_record(CURSOR_V2, cursor_slot(0, 2) + cursor_slot(1, 2))
    )
    # Two segments, repaired: the first sealed (rotation), the second with a tail-page copy.
    first = frames(1, 2)
    sealed = both_slots(seal(2, 2, DATA_START + len(first)), b"")
    second = frames(3, 2)
    copied = both_slots(b"", tail_copy(1, DATA_START, 2, second))
    seeds["two-segments-sealed-repair"] = (
        bytes([0x01 | REPAIR]) + shaped(1, 2, sealed) + shaped(3, 2, copied, seq=2)
    )
    # A torn tail: the third frame's CRC is wrong; the repair cuts it into a cut file.
    good = frames(1, 2)
    torn = bytearray(segment_header(1, SEGMENT) + good + frames(3, 1))
    torn[64 + len(good) + 16] ^= 0xFF  # the first payload byte of the third frame
    seeds["torn-tail-repair"] = bytes([REPAIR]) + file_record(SHAPED, 1, bytes(torn))
    # A v1 segment: header at 0, frames from 64 to the end of the file.
    v1_frames = frames(1, 3)
    v1 = segment_header(1, 64 + len(v1_frames), version=1) + v1_frames
    seeds["v1-segment"] = bytes([0]) + file_record(V1, 1, v1)
    # Every CRC left to the harness, so mutations of the payloads keep them valid.
    fixed = bytes(64) + frames(1, 3, good_crc=False)
    fixed_tail = both_slots(b"", tail_copy(1, DATA_START, 1, frames(1, 1), good_crc=False))
    seeds["fix-flags"] = bytes([0]) + file_record(
        SHAPED | FIX_HEADER | FIX_FRAMES | FIX_TRAILER, 1, fixed, fixed_tail
    )
    # Files recovery scans only for seqs: a quarantined segment, a cut file; a temp file.
    quarantined = bytes(64) + frames(3, 2)
    seeds["with-quarantine"] = (
        bytes([0x01 | QUARANTINE_LAST]) + shaped(1, 2) + file_record(FIX_FRAMES, 2, quarantined)
    )
    kept = frames(3, 1)
    cut = cut_header(1, DATA_START + len(first), kept) + kept
    seeds["with-cut-file"] = bytes([0x01 | CUT_LAST]) + shaped(1, 2) + file_record(FIX_FRAMES, 0, cut)
    seeds["with-temp-file-repair"] = (
        bytes([0x01 | TEMP_LAST | REPAIR]) + shaped(1, 2) + file_record(0, 2, bytes(64))
    )
    return seeds


def frame_decode():
    return {
        "frame": frame(1, events(1, 1)[0][1]),
        "payload": events(2, 2)[1][1],
        "segment-header": segment_header(1, SEGMENT),
        "segment-name": b"00000000000000000001.seg",
    }


def cursor_file():
    real = bytearray(8192)
    real[0:28] = cursor_slot(6, 41)
    real[4096 : 4096 + 28] = cursor_slot(7, 42)
    return {
        "v2-both-valid": bytes([CURSOR_V2]) + cursor_slot(4, 9) + cursor_slot(5, 10),
        "v2-one-torn": bytes([CURSOR_V2]) + cursor_slot(4, 9) + bytes(range(100, 128)),
        "v1-file": bytes([CURSOR_V1]) + cursor_slot(0, 3) + cursor_slot(1, 3),
        "fix-crc": bytes([CURSOR_V2 | CURSOR_FIX])
        + cursor_slot(2, 5, good_crc=False)
        + cursor_slot(3, 6, good_crc=False),
        "raw-file": bytes([0]) + bytes(real),
    }


def ingest_line():
    long_value = "x" * 120
    stream = (
        '{"source":"a","value":1}\r\n'
        '{"op":"status"}\n'
        "\n"
        '{"source":"b","value":"' + long_value + '"}\n'
        '{"source":"c","value":[1,2.5,null]}'
    )
    return {
        "minimal": b'{"source":"t","value":1}',
        "full": b'{"source":"temp0","kind":"sensor","ts":"2026-11-26T12:00:00.123Z",'
        b'"value":{"c":21.5,"ok":true,"tags":["a","b"],"n":null,"big":18446744073709551615}}',
        "command-ts-ms": b'{"source":"valve.1","kind":"command","value":"open","ts":1764763200000}',
        "status": b'{"op":"status"}',
        "state": b'{"op":"state"}',
        "follow": b'{"op":"follow","from":5,"kind":"sensor","source":"temp0"}',
        "empty-source": b'{"source":"","value":1}',
        "stream": stream.encode(),
    }


def config():
    example = """device_id = "pi-0042"                 # required; [A-Za-z0-9_-]{1,64}

[storage]
dir = "/var/lib/edgecap"              # required
segment_size = "16MiB"                # each segment is preallocated to this size
max_disk = "512MiB"                   # budget for all segments
on_full = "drop_oldest"               # or "reject"
sync = "always"
sync_interval_ms = 50

[ingest]
socket = "/run/edgecap/ingest.sock"
socket_mode = "0660"
max_event_bytes = 4096                # one request line, JSON included
max_clients = 64

[upstream]                            # absent: capture only, nothing forwarded
host = "127.0.0.1"
port = 1883
client_id = "pi-0042"                 # default: device_id
topic_prefix = "edgecap"
keep_alive_secs = 30
max_inflight = 64

[retry]
initial_backoff_ms = 200
max_backoff_ms = 30000

[breaker]
failure_threshold = 5
open_secs = 30
"""
    minimal = """device_id = "pi-0042"
[storage]
dir = "/tmp/x"
segment_size = "1MiB"
max_disk = "8MiB"
"""
    small = """device_id = "d"
storage = { dir = "d", segment_size = "24 KiB", max_disk = 49152, on_full = "reject", sync = "interval" }
ingest.max_event_bytes = "2KB"
"""
    password = """device_id = "pi-0042"
[storage]
dir = "/var/lib/edgecap"
[upstream]
host = "broker.example"
username = "pi"
password_file = "/dev/null"
tls = { ca = "/nonexistent/ca.pem" }
"""
    system_ca = """device_id = "pi-0042"
[storage]
dir = "/var/lib/edgecap"
[upstream]
host = "broker.example"
topic_prefix = "fleet/site-1"
tls = {}
"""
    return {
        "interface-example.toml": example.encode(),
        "minimal.toml": minimal.encode(),
        "small-inline.toml": small.encode(),
        "password-and-ca.toml": password.encode(),
        "tls-system-bundle.toml": system_ca.encode(),
    }


def upstream_command():
    topic = b"edgecap/pi-0042/commands/valve"
    payload = b'{"open":true}'

    def command(flags, topic, payload, memory=None):
        out = bytes([flags, len(topic)]) + topic
        if memory is not None:
            out += struct.pack("<H", len(memory)) + memory
        return out + payload

    # The memory file's body (src: forward/commands.rs, `encode`): postcard of the
    # (topic, crc32, len) entries; the harness appends its CRC (flag bit 4).
    entry = string(topic.decode()) + varint(crc(payload)) + varint(len(payload))
    memory = varint(1) + entry
    return {
        "json": command(0x00, topic, payload),
        "text-retained": command(0x01, b"edgecap/pi-0042/commands/reboot", b"now"),
        "empty-source": command(0x00, b"edgecap/pi-0042/commands/", b"x"),
        "over-64-bytes": command(0x02, topic, b'{"pad":"' + b"p" * 80 + b'"}'),
        "retained-remembered": command(0x01 | 0x08 | 0x10, topic, payload, memory),
    }


def main():
    for target, seeds in [
        ("segment_recovery", segment_recovery()),
        ("frame_decode", frame_decode()),
        ("cursor_file", cursor_file()),
        ("ingest_line", ingest_line()),
        ("config", config()),
        ("upstream_command", upstream_command()),
    ]:
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
