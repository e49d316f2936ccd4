//! Rendering records as text lines and JSON objects, without allocating per record.
//!
//! Text: one line per record (time, classification, severity, record id, event id, machine
//! id, payload size), with the payload on the following line(s) when asked for, indented by
//! four spaces. JSON: one object per line; the payload is `payload` (UTF-8 text) or
//! `payload_hex` (anything else), never both.
//!
//! Each renderer builds a record in a reused buffer and hands it to the output in one write.

use std::fmt::{self, Display};
use std::io::{self, Write};

use records::Context;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::record::Rec;
use super::timefmt::{self, TimeFmt};

/// Width of the classification column (telemctl's); longer ones push the line right.
const CLASS_WIDTH: usize = 30;
/// Width of the id columns (32 hex characters).
const ID_WIDTH: usize = 32;

/// Whether `e` (anywhere in its chain) is a closed pipe on output.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Lowercase hex of a byte slice, written straight into the formatter.
pub struct Hex<'a>(pub &'a [u8]);

impl Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        for chunk in self.0.chunks(64) {
            let out = buf.get_mut(..chunk.len() * 2).ok_or(fmt::Error)?;
            hex::encode_to_slice(chunk, out).map_err(|_| fmt::Error)?;
            f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// The column headings (`-V`).
pub fn write_text_headings(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<CLASS_WIDTH$} {:>3} {:<ID_WIDTH$} {:<ID_WIDTH$} {:<ID_WIDTH$} {:>6}",
        "Time", "Classification", "Sev", "Record ID", "Event ID", "Machine ID", "Size"
    )
}

/// Renders records as text lines.
#[derive(Debug, Default)]
pub struct Text {
    line: Vec<u8>,
    time: TimeFmt,
    payload: bool,
}

impl Text {
    /// A renderer; `payload` adds each record's payload under its line.
    pub fn new(payload: bool) -> Self {
        Text {
            payload,
            ..Text::default()
        }
    }

    /// Writes one record.
    pub fn write(&mut self, out: &mut impl Write, r: &Rec<'_>) -> io::Result<()> {
        let l = &mut self.line;
        l.clear();
        match self.time.format(r.meta.wall_ms) {
            Some(t) => l.extend_from_slice(t.as_bytes()),
            None => push_padded(l, format!("@{}", r.meta.wall_ms).as_bytes(), timefmt::LEN),
        }
        l.push(b' ');
        push_padded(l, r.meta.classification.as_str().as_bytes(), CLASS_WIDTH);
        l.extend_from_slice(b"   ");
        l.push(b'0' + r.meta.severity.get());
        l.push(b' ');
        push_hex16(l, r.id().as_bytes());
        l.push(b' ');
        match &r.meta.event_id {
            Some(e) => push_hex16(l, e.as_bytes()),
            None => push_padded(l, b"-", ID_WIDTH),
        }
        l.push(b' ');
        let machine = r.context.machine_id.as_bytes();
        if machine.iter().all(u8::is_ascii_graphic) {
            push_padded(l, machine, ID_WIDTH);
        } else {
            // A context is data from disk: never let it carry a newline or an escape.
            let start = l.len();
            write_escaped(l, &r.context.machine_id)?;
            let n = l.len() - start;
            l.resize(l.len() + ID_WIDTH.saturating_sub(n), b' ');
        }
        l.push(b' ');
        push_number(l, r.payload.len() as u64, 6);
        l.push(b'\n');
        if self.payload {
            write_payload_text(l, r.payload)?;
        }
        out.write_all(l)
    }
}

fn push_padded(l: &mut Vec<u8>, s: &[u8], width: usize) {
    l.extend_from_slice(s);
    l.resize(l.len() + width.saturating_sub(s.len()), b' ');
}

fn push_hex16(l: &mut Vec<u8>, b: &[u8; 16]) {
    let mut buf = [0u8; 32];
    if hex::encode_to_slice(b, &mut buf).is_ok() {
        l.extend_from_slice(&buf);
    }
}

/// `v` in decimal, right-aligned in `width` columns.
fn push_number(l: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = buf.get(start..).unwrap_or_default();
    l.resize(l.len() + width.saturating_sub(digits.len()), b' ');
    l.extend_from_slice(digits);
}

/// The payload under its record line: each line of UTF-8 text indented by four spaces,
/// control characters other than tab escaped (so a payload cannot forge record lines or
/// terminal escapes); anything that is not UTF-8 as one `hex:` line.
pub fn write_payload_text(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            let text = text.strip_suffix('\n').unwrap_or(text);
            for line in text.split('\n') {
                out.write_all(b"    ")?;
                write_escaped(out, line)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Err(_) => writeln!(out, "    hex: {}", Hex(payload)),
    }
}

/// Whether `b` holds a byte that can be (part of) a control character other than tab: C0
/// controls, DEL, or 0xC2 (the only lead byte of C1 controls, U+0080..=U+009F, though also
/// of harmless characters such as `°`). Branch-free per 32-byte block, so it vectorizes.
fn may_need_escape(b: &[u8]) -> bool {
    b.chunks(32).any(|block| {
        block.iter().fold(false, |hit, &c| {
            hit | ((c < 0x20) & (c != b'\t')) | (c == 0x7f) | (c == 0xc2)
        })
    })
}

/// Writes `s`, escaping control characters (except tab) as `\r`, `\x1b`, `\u{85}`...
fn write_escaped(out: &mut impl Write, s: &str) -> io::Result<()> {
    if !may_need_escape(s.as_bytes()) {
        return out.write_all(s.as_bytes());
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_control() && c != '\t' {
            out.write_all(s.get(start..i).unwrap_or_default().as_bytes())?;
            match c {
                '\r' => out.write_all(b"\\r")?,
                c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32)?,
                c => write!(out, "\\u{{{:x}}}", c as u32)?,
            }
            start = i + c.len_utf8();
        }
    }
    out.write_all(s.get(start..).unwrap_or_default().as_bytes())
}

/// What a JSON record line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonShape {
    /// Include the payload (`payload` or `payload_hex`).
    pub payload: bool,
    /// Include the whole writer context (OS, kernel, hardware...), as `export` does.
    pub context: bool,
}

/// Renders records as single-line JSON objects.
#[derive(Debug)]
pub struct Json {
    shape: JsonShape,
    time: TimeFmt,
    line: Vec<u8>,
    /// The last context rendered (its serial and JSON): records of one writer share it, and
    /// escaping its strings for every record would cost more than the record itself.
    context: Option<(u64, Vec<u8>)>,
}

impl Json {
    /// A renderer of `shape`.
    pub fn new(shape: JsonShape) -> Self {
        Json {
            shape,
            time: TimeFmt::default(),
            line: Vec::new(),
            context: None,
        }
    }

    /// Writes one record as a JSON object and a newline.
    pub fn write(&mut self, out: &mut impl Write, r: &Rec<'_>) -> io::Result<()> {
        self.line.clear();
        let rec = JsonRecord {
            r,
            id: *r.id().as_bytes(),
            time: self.time.format(r.meta.wall_ms),
            payload: self.shape.payload,
        };
        serde_json::to_writer(&mut self.line, &rec).map_err(io::Error::from)?;
        if self.shape.context {
            let ctx = match &mut self.context {
                Some((serial, json)) if *serial == r.context_serial => json,
                cache => {
                    let json =
                        serde_json::to_vec(&JsonContext(r.context)).map_err(io::Error::from)?;
                    &mut cache.insert((r.context_serial, json)).1
                }
            };
            // The object ends in `}`: reopen it for one more member.
            if self.line.last() == Some(&b'}') {
                self.line.pop();
                self.line.extend_from_slice(b",\"context\":");
                self.line.extend_from_slice(ctx);
                self.line.push(b'}');
            }
        }
        self.line.push(b'\n');
        out.write_all(&self.line)
    }
}

struct JsonRecord<'a, 'b> {
    r: &'a Rec<'b>,
    id: [u8; 16],
    time: Option<&'a str>,
    payload: bool,
}

/// 16 bytes as 32 hex characters on the stack.
struct HexStr([u8; 32]);

impl HexStr {
    fn new(b: &[u8; 16]) -> Self {
        let mut out = [b'0'; 32];
        // Cannot fail: the output is exactly twice the input.
        let _ = hex::encode_to_slice(b, &mut out);
        HexStr(out)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Serializes a `Display` as a JSON string without an intermediate `String`.
struct Str<T: Display>(T);

impl<T: Display> Serialize for Str<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl Serialize for JsonRecord<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.r;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("record_id", HexStr::new(&self.id).as_str())?;
        m.serialize_entry("segment", &r.position.segment)?;
        m.serialize_entry("offset", &r.position.offset)?;
        m.serialize_entry("time", &self.time)?;
        m.serialize_entry("wall_ms", &r.meta.wall_ms)?;
        m.serialize_entry("boot_ms", &r.meta.boot_ms)?;
        m.serialize_entry("classification", r.meta.classification.as_str())?;
        m.serialize_entry("severity", &r.meta.severity.get())?;
        match &r.meta.event_id {
            Some(e) => m.serialize_entry("event_id", HexStr::new(e.as_bytes()).as_str())?,
            None => m.serialize_entry("event_id", &())?,
        }
        m.serialize_entry("machine_id", &r.context.machine_id)?;
        m.serialize_entry("boot_id", HexStr::new(&r.context.boot_id).as_str())?;
        if let Some(hold) = r.meta.hold_until_wall_ms {
            m.serialize_entry("hold_until_ms", &hold)?;
        }
        m.serialize_entry("size", &r.payload.len())?;
        if self.payload {
            match std::str::from_utf8(r.payload) {
                Ok(text) => m.serialize_entry("payload", text)?,
                Err(_) => m.serialize_entry("payload_hex", &Str(Hex(r.payload)))?,
            }
        }
        m.end()
    }
}

/// The writer context facts that `export` carries with every record.
struct JsonContext<'a>(&'a Context);

impl Serialize for JsonContext<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("arch", &c.arch)?;
        m.serialize_entry("host_type", &c.host_type)?;
        m.serialize_entry("build", &c.build)?;
        m.serialize_entry("system_name", &c.system_name)?;
        m.serialize_entry("kernel_version", &c.kernel_version)?;
        m.serialize_entry("board_name", &c.board_name)?;
        m.serialize_entry("cpu_model", &c.cpu_model)?;
        m.serialize_entry("bios_version", &c.bios_version)?;
        m.serialize_entry("record_format_version", &c.record_format_version)?;
        m.serialize_entry("writer_slot", &c.slot)?;
        m.serialize_entry("context_generation", &c.generation)?;
        m.serialize_entry("extra", &ExtraMap(&c.extra))?;
        m.end()
    }
}

struct ExtraMap<'a>(&'a [(String, String)]);

impl Serialize for ExtraMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture;
    use super::*;
    use segment_log::Position;

    const AT: Position = Position {
        segment: 3,
        offset: 4096,
    };

    #[test]
    fn hex_matches_the_hex_crate_across_chunk_boundaries() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        assert_eq!(Hex(&bytes).to_string(), hex::encode(&bytes));
        assert_eq!(Hex(&[]).to_string(), "");
    }

    #[test]
    fn text_lines_line_up_with_the_headings() {
        let ctx = fixture::context();
        let r = fixture::rec(
            &ctx,
            AT,
            "org.seglog/hello/world",
            2,
            1_700_000_000_123,
            None,
            b"hello",
        );
        let mut out = Vec::new();
        write_text_headings(&mut out).unwrap();
        Text::new(false).write(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{text}");
        for heading in [
            "Classification",
            "Sev",
            "Record ID",
            "Event ID",
            "Machine ID",
        ] {
            let col = lines[0].find(heading).unwrap();
            let above = lines[1].as_bytes()[col - 1];
            assert_eq!(above, b' ', "column {heading} starts after a space: {text}");
        }
        let expected = format!(
            "2023-11-14T22:13:20.123Z {:<30}   2 {} {:<32} {} {:>6}",
            "org.seglog/hello/world",
            r.id(),
            "-",
            "m".repeat(32),
            5
        );
        assert_eq!(lines[1], expected);
    }

    #[test]
    fn a_machine_id_with_control_characters_cannot_break_the_line() {
        let mut ctx = fixture::context();
        ctx.machine_id = "evil\nline".into();
        let r = fixture::rec(&ctx, AT, "a/b/c", 1, 0, Some([0xee; 16]), b"");
        let mut out = Vec::new();
        Text::new(false).write(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("evil\\x0aline") && text.contains(&"ee".repeat(16)),
            "{text}"
        );
    }

    #[test]
    fn times_outside_rfc3339_print_raw_and_keep_the_columns() {
        let ctx = fixture::context();
        let r = fixture::rec(&ctx, AT, "a/b/c", 1, -1, None, b"");
        let mut out = Vec::new();
        Text::new(false).write(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("{:<24} a/b/c", "@-1")), "{text}");
    }

    #[test]
    fn numbers_are_right_aligned() {
        let mut l = Vec::new();
        push_number(&mut l, 0, 6);
        push_number(&mut l, 1_234_567, 6);
        push_number(&mut l, u64::MAX, 3);
        assert_eq!(
            String::from_utf8(l).unwrap(),
            format!("     01234567{}", u64::MAX)
        );
    }

    #[test]
    fn payload_text_is_indented_and_control_characters_are_escaped() {
        let mut out = Vec::new();
        write_payload_text(&mut out, b"line one\nline\ttwo\x1b[31m\r\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "    line one\n    line\ttwo\\x1b[31m\\r\n"
        );
        let mut out = Vec::new();
        write_payload_text(&mut out, "caf\u{e9} \u{85}".as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "    caf\u{e9} \\u{85}\n");
        let mut out = Vec::new();
        write_payload_text(&mut out, "21\u{b0}C\tok\u{7f}".as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "    21\u{b0}C\tok\\x7f\n");
    }

    #[test]
    fn the_escape_check_finds_every_control_character_in_any_block() {
        for pos in [0usize, 31, 32, 33, 95] {
            for bad in [0x00u8, 0x1b, b'\n', 0x7f, 0xc2] {
                let mut b = vec![b'a'; 96];
                b[pos] = bad;
                assert!(may_need_escape(&b), "byte {bad:#x} at {pos}");
            }
        }
        assert!(!may_need_escape(b"plain\ttext with spaces and \xc3\xa9"));
        assert!(!may_need_escape(b""));
    }

    #[test]
    fn binary_payload_prints_as_one_hex_line() {
        let mut out = Vec::new();
        write_payload_text(&mut out, &[0xff, 0x00, 0x10]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "    hex: ff0010\n");
    }

    #[test]
    fn json_objects_hold_every_field_and_the_payload_in_one_of_two_forms() {
        let ctx = fixture::context();
        let text = fixture::rec(
            &ctx,
            AT,
            "a/b/c",
            4,
            1_700_000_000_000,
            Some([1; 16]),
            b"hi \"x\"",
        );
        let binary = fixture::rec(&ctx, AT, "a/b/c", 4, -7, None, &[0xff]);
        let mut json = Json::new(JsonShape {
            payload: true,
            context: true,
        });
        let mut out = Vec::new();
        json.write(&mut out, &text).unwrap();
        json.write(&mut out, &binary).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let v = &lines[0];
        assert_eq!(v["record_id"], text.id().to_string());
        assert_eq!(v["segment"], 3);
        assert_eq!(v["offset"], 4096);
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["boot_ms"], 42);
        assert_eq!(v["severity"], 4);
        assert_eq!(v["event_id"], "01".repeat(16));
        assert_eq!(v["boot_id"], "b0".repeat(16));
        assert_eq!(v["payload"], "hi \"x\"");
        assert_eq!(v["context"]["kernel_version"], "6.1");
        assert!(
            lines[1]["time"].is_null(),
            "a time before 1970 has no RFC 3339 form"
        );
        assert_eq!(lines[1]["wall_ms"], -7);
        assert_eq!(lines[1]["payload_hex"], "ff");
        assert!(lines[1].get("payload").is_none());
        let mut lean = Json::new(JsonShape {
            payload: false,
            context: false,
        });
        let mut out = Vec::new();
        lean.write(&mut out, &text).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            v.get("payload").is_none() && v.get("context").is_none(),
            "{v}"
        );
    }

    #[test]
    fn each_record_carries_its_own_context_across_context_changes() {
        let (mut a, mut b) = (fixture::context(), fixture::context());
        a.kernel_version = "kernel-a".into();
        b.kernel_version = "kernel-b".into();
        let mut json = Json::new(JsonShape {
            payload: false,
            context: true,
        });
        let mut out = Vec::new();
        for (ctx, serial) in [(&a, 1), (&a, 1), (&b, 2), (&a, 3)] {
            let mut r = fixture::rec(ctx, AT, "a/b/c", 1, 0, None, b"");
            r.context_serial = serial;
            json.write(&mut out, &r).unwrap();
        }
        let kernels: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| v["context"]["kernel_version"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kernels, ["kernel-a", "kernel-a", "kernel-b", "kernel-a"]);
    }

    #[test]
    fn broken_pipe_is_found_through_context() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing output");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
