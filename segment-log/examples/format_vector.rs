//! Prints the FORMAT.md test vector (a segment header and two frames) as hex.
use segment_log::format::{encode_frame, FrameKind, SegmentHeader};
use segment_log::LogId;

fn dump(name: &str, b: &[u8]) {
    println!("{name}:");
    for (i, chunk) in b.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
        println!("{:04x}: {}", i * 16, hex.join(" "));
    }
}

fn main() {
    let h = SegmentHeader {
        version: 1,
        segment: 1,
        capacity: 65536,
        created_wall_ns: 1_700_000_000_000_000_000,
        created_boot_ns: 5_000_000_000,
        boot_id: *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
        log_id: LogId::from_private([0; 32]).public(),
    };
    let mut hb = h.encode().to_vec();
    // The vector shows the counter after the two frames below were appended.
    hb[128..136].copy_from_slice(&(256u64 + 24 + 32).to_le_bytes());
    dump("header", &hb);
    dump(
        "frame at 256",
        &encode_frame(1, 256, FrameKind::Preamble, b"ctx-v1"),
    );
    dump(
        "frame at 280",
        &encode_frame(1, 280, FrameKind::Record, b"hello, seglog"),
    );
}
