//! Rendering records as text lines and JSON objects, without allocating per record.
//!
//! Text: one line per record (time, classification, severity, record id, event id, machine
//! id, payload size), with the payload on the following line(s) when asked for, indented by
//! four spaces. JSON: one object per line; the payload is `payload` (UTF-8 text) or
//! `payload_hex` (anything else), never both.

use std::fmt::{self, Display, Write as _};
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use recorder::record::{Context, RecordView};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Width of the classification column (telemctl's); longer ones push the line right.
const CLASS_WIDTH: usize = 30;

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

/// A wall-clock time in milliseconds since the epoch, as RFC 3339 UTC with milliseconds.
/// Times humantime cannot show (before 1970 or after 9999) print as `@<ms>`.
#[derive(Clone, Copy)]
pub struct Time(pub i64);

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can show.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

impl Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match u64::try_from(self.0) {
            Ok(ms) if self.0 <= MAX_RFC3339_MS => {
                let t = UNIX_EPOCH + Duration::from_millis(ms);
                write!(f, "{}", humantime::format_rfc3339_millis(t))
            }
            _ => write!(f, "@{}", self.0),
        }
    }
}

/// Milliseconds since the epoch of `t` (negative before 1970).
pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The column headings (`-V`).
pub fn write_text_headings(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<CLASS_WIDTH$} {:>3} {:<32} {:<32} {:<32} {:>6}",
        "Time", "Classification", "Sev", "Record ID", "Event ID", "Machine ID", "Size"
    )
}

/// One record as a text line, plus its payload lines when `payload` is set.
pub fn write_text(out: &mut impl Write, r: &RecordView<'_>, payload: bool) -> io::Result<()> {
    let event = r.meta.event_id.map(|e| *e.as_bytes());
    let event: &dyn Display = match &event {
        Some(b) => &Hex(b),
        None => &"-",
    };
    writeln!(
        out,
        "{} {:<CLASS_WIDTH$} {:>3} {} {:<32} {:<32} {:>6}",
        Time(r.meta.wall_ms),
        r.meta.classification.as_str(),
        r.meta.severity.get(),
        Hex(r.id.as_bytes()),
        Pad(event, 32),
        r.context.machine_id,
        r.payload.len(),
    )?;
    if payload {
        write_payload_text(out, r.payload)?;
    }
    Ok(())
}

/// Pads a `Display` to `width` columns (`{:<32}` only pads `str`-like values that honour
/// the formatter's width; this works for any `Display`).
struct Pad<'a>(&'a dyn Display, usize);

impl Display for Pad<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counter = Counter { f, n: 0 };
        write!(counter, "{}", self.0)?;
        let n = counter.n;
        for _ in n..self.1 {
            f.write_char(' ')?;
        }
        Ok(())
    }
}

struct Counter<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    n: usize,
}

impl fmt::Write for Counter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.n += s.chars().count();
        self.f.write_str(s)
    }
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

/// Writes `s`, escaping control characters (except tab) as `\r`, `\x1b`, `\u{85}`...
fn write_escaped(out: &mut impl Write, s: &str) -> io::Result<()> {
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

/// One record as a single-line JSON object followed by a newline.
pub fn write_json(out: &mut impl Write, r: &RecordView<'_>, shape: JsonShape) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonRecord { r, shape }).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

struct JsonRecord<'a, 'b> {
    r: &'a RecordView<'b>,
    shape: JsonShape,
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
        m.serialize_entry("record_id", &Str(Hex(r.id.as_bytes())))?;
        m.serialize_entry("segment", &r.position.segment)?;
        m.serialize_entry("offset", &r.position.offset)?;
        m.serialize_entry("time", &Str(Time(r.meta.wall_ms)))?;
        m.serialize_entry("wall_ms", &r.meta.wall_ms)?;
        m.serialize_entry("boot_ms", &r.meta.boot_ms)?;
        m.serialize_entry("classification", r.meta.classification.as_str())?;
        m.serialize_entry("severity", &r.meta.severity.get())?;
        match &r.meta.event_id {
            Some(e) => m.serialize_entry("event_id", &Str(Hex(e.as_bytes())))?,
            None => m.serialize_entry("event_id", &())?,
        }
        m.serialize_entry("machine_id", &r.context.machine_id)?;
        m.serialize_entry("boot_id", &Str(Hex(&r.context.boot_id)))?;
        if let Some(hold) = r.meta.hold_until_wall_ms {
            m.serialize_entry("hold_until_ms", &hold)?;
        }
        m.serialize_entry("size", &r.payload.len())?;
        if self.shape.context {
            m.serialize_entry("context", &JsonContext(&r.context))?;
        }
        if self.shape.payload {
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
    use super::*;

    #[test]
    fn hex_matches_the_hex_crate_across_chunk_boundaries() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        assert_eq!(Hex(&bytes).to_string(), hex::encode(&bytes));
        assert_eq!(Hex(&[]).to_string(), "");
    }

    #[test]
    fn time_prints_rfc3339_millis_and_survives_out_of_range_values() {
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Time(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(Time(-5).to_string(), "@-5");
        assert_eq!(Time(i64::MAX).to_string(), format!("@{}", i64::MAX));
        assert_eq!(Time(MAX_RFC3339_MS).to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn system_time_ms_round_trips_before_and_after_the_epoch() {
        assert_eq!(
            system_time_ms(UNIX_EPOCH + Duration::from_millis(1234)),
            1234
        );
        assert_eq!(
            system_time_ms(UNIX_EPOCH - Duration::from_millis(1234)),
            -1234
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
    }

    #[test]
    fn binary_payload_prints_as_one_hex_line() {
        let mut out = Vec::new();
        write_payload_text(&mut out, &[0xff, 0x00, 0x10]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "    hex: ff0010\n");
    }

    #[test]
    fn pad_counts_characters_of_any_display() {
        assert_eq!(Pad(&Hex(&[0xab]), 5).to_string(), "ab   ");
        assert_eq!(Pad(&"-", 3).to_string(), "-  ");
        assert_eq!(Pad(&"toolong", 3).to_string(), "toolong");
    }

    #[test]
    fn broken_pipe_is_found_through_context() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing output");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
