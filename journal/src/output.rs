//! Rendering records as JSON objects, without allocating per record (the text forms are in
//! [`super::short`]).
//!
//! JSON: one object per line (or pretty-printed); the payload is `payload` (UTF-8 text) or
//! `payload_hex` (anything else), never both. The renderer builds a record in a reused
//! buffer and hands it to the output in one write.

use std::fmt::{self, Display};
use std::io::{self, Write};

use records::Context;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::record::Rec;
use super::timefmt::TimeFmt;

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

/// What a JSON record line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonShape {
    /// Include the payload (`payload` or `payload_hex`).
    pub payload: bool,
    /// Include the whole writer context (OS, kernel, hardware...), as `export` does.
    pub context: bool,
    /// Indented over several lines (`-o json-pretty`) instead of one line per record.
    pub pretty: bool,
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
        if self.shape.pretty {
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"  ");
            let mut ser = serde_json::Serializer::with_formatter(&mut self.line, fmt);
            rec.serialize(&mut ser).map_err(io::Error::from)?;
        } else {
            serde_json::to_writer(&mut self.line, &rec).map_err(io::Error::from)?;
        }
        if self.shape.context && !self.shape.pretty {
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
            pretty: false,
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
            pretty: false,
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
            pretty: false,
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
