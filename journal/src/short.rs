//! The `journalctl`-like text outputs: `short` (time, classification, severity, message on
//! one line), `cat` (the message only) and `verbose` (every field of the record and its
//! writer's context, one per line).
//!
//! The message is the payload as text. Payloads come from devices: control characters
//! (newlines included) are escaped so one record is always one line and no payload can
//! forge another record or a terminal escape; bytes that are not UTF-8 show as `\xNN`.

use std::io::{self, Write};

use super::output::Hex;
use super::record::Rec;
use super::when::{ZonedFmt, ZONED_LEN};

/// Which text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextForm {
    /// `TIME CLASSIFICATION SEVERITY: MESSAGE`.
    Short,
    /// `MESSAGE`.
    Cat,
    /// Every field, one per line, records separated by a blank line.
    Verbose,
}

/// Renders records as `short`, `cat` or `verbose` text.
#[derive(Debug)]
pub struct ShortText {
    form: TextForm,
    time: ZonedFmt,
    line: Vec<u8>,
}

impl ShortText {
    /// A renderer of `form` with times formatted by `time`.
    pub fn new(form: TextForm, time: ZonedFmt) -> Self {
        ShortText {
            form,
            time,
            line: Vec::new(),
        }
    }

    /// Writes one record.
    pub fn write(&mut self, out: &mut impl Write, r: &Rec<'_>) -> io::Result<()> {
        self.line.clear();
        match self.form {
            TextForm::Short => self.short(r),
            TextForm::Cat => {
                write_message(&mut self.line, r.payload);
                self.line.push(b'\n');
            }
            TextForm::Verbose => self.verbose(r)?,
        }
        out.write_all(&self.line)
    }

    fn push_time(&mut self, ms: i64) {
        match self.time.format(ms) {
            Some(t) => self.line.extend_from_slice(t.as_bytes()),
            None => {
                let raw = format!("@{ms}");
                self.line.extend_from_slice(raw.as_bytes());
                let pad = ZONED_LEN.saturating_sub(raw.len());
                self.line.resize(self.line.len() + pad, b' ');
            }
        }
    }

    fn short(&mut self, r: &Rec<'_>) {
        self.push_time(r.meta.wall_ms);
        let l = &mut self.line;
        l.push(b' ');
        l.extend_from_slice(r.meta.classification.as_str().as_bytes());
        l.push(b' ');
        l.extend_from_slice(r.meta.severity.name().as_bytes());
        l.extend_from_slice(b": ");
        write_message(l, r.payload);
        l.push(b'\n');
    }

    fn verbose(&mut self, r: &Rec<'_>) -> io::Result<()> {
        self.push_time(r.meta.wall_ms);
        let l = &mut self.line;
        writeln!(l, " [{}]", r.id())?;
        let c = r.context;
        let m = &r.meta;
        writeln!(l, "    CLASSIFICATION={}", m.classification.as_str())?;
        writeln!(
            l,
            "    SEVERITY={} ({})",
            m.severity.get(),
            m.severity.name()
        )?;
        writeln!(l, "    RECORD_ID={}", r.id())?;
        match &m.event_id {
            Some(e) => writeln!(l, "    EVENT_ID={}", Hex(e.as_bytes()))?,
            None => writeln!(l, "    EVENT_ID=-")?,
        }
        writeln!(l, "    WALL_MS={}", m.wall_ms)?;
        writeln!(l, "    BOOT_MS={}", m.boot_ms)?;
        writeln!(l, "    BOOT_ID={}", Hex(&c.boot_id))?;
        if let Some(hold) = m.hold_until_wall_ms {
            writeln!(l, "    HOLD_UNTIL_MS={hold}")?;
        }
        writeln!(l, "    SEGMENT={}", r.position.segment)?;
        writeln!(l, "    OFFSET={}", r.position.offset)?;
        writeln!(l, "    SIZE={}", r.payload.len())?;
        for (key, value) in [
            ("MACHINE_ID", &c.machine_id),
            ("ARCH", &c.arch),
            ("HOST_TYPE", &c.host_type),
            ("BUILD", &c.build),
            ("SYSTEM_NAME", &c.system_name),
            ("KERNEL_VERSION", &c.kernel_version),
            ("BOARD_NAME", &c.board_name),
            ("CPU_MODEL", &c.cpu_model),
            ("BIOS_VERSION", &c.bios_version),
        ] {
            write!(l, "    {key}=")?;
            write_message(l, value.as_bytes());
            l.push(b'\n');
        }
        for (k, v) in &c.extra {
            l.extend_from_slice(b"    EXTRA_");
            write_message(l, k.as_bytes());
            l.push(b'=');
            write_message(l, v.as_bytes());
            l.push(b'\n');
        }
        l.extend_from_slice(b"    PAYLOAD=");
        write_message(l, r.payload);
        l.extend_from_slice(b"\n\n");
        Ok(())
    }
}

/// Appends `payload` as one line of text: a final newline dropped, control characters other
/// than tab escaped (`\n`, `\r`, `\x1b`, `\u{85}`), bytes that are not UTF-8 as `\xNN`.
pub fn write_message(l: &mut Vec<u8>, payload: &[u8]) {
    let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
    for chunk in payload.utf8_chunks() {
        let text = chunk.valid();
        if !text.chars().any(|c| c.is_control() && c != '\t') {
            l.extend_from_slice(text.as_bytes());
        } else {
            for c in text.chars() {
                match c {
                    '\n' => l.extend_from_slice(b"\\n"),
                    '\r' => l.extend_from_slice(b"\\r"),
                    '\t' => l.push(b'\t'),
                    c if c.is_control() && (c as u32) < 0x80 => {
                        let _ = write!(l, "\\x{:02x}", c as u32);
                    }
                    c if c.is_control() => {
                        let _ = write!(l, "\\u{{{:x}}}", c as u32);
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        l.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(l, "\\x{b:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture;
    use super::super::when::Zone;
    use super::*;
    use segment_log::Position;

    const AT: Position = Position {
        segment: 3,
        offset: 4096,
    };

    fn render(form: TextForm, payload: &[u8]) -> String {
        let ctx = fixture::context();
        let r = fixture::rec(
            &ctx,
            AT,
            "org.seglog/hello/world",
            3,
            1_700_000_000_123,
            None,
            payload,
        );
        let mut out = Vec::new();
        ShortText::new(form, ZonedFmt::new(Zone::utc()))
            .write(&mut out, &r)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn short_is_time_class_severity_and_message_on_one_line() {
        assert_eq!(
            render(TextForm::Short, b"disk almost full\n"),
            "2023-11-14T22:13:20.123Z org.seglog/hello/world high: disk almost full\n"
        );
    }

    #[test]
    fn cat_is_the_message_alone() {
        assert_eq!(render(TextForm::Cat, b"hello"), "hello\n");
    }

    #[test]
    fn newlines_escapes_and_binary_never_break_the_line() {
        let text = render(
            TextForm::Cat,
            b"one\ntwo\r\x1b[31m\tx\xff\xfe\xc3\xa9\xc2\x85",
        );
        assert_eq!(text, "one\\ntwo\\r\\x1b[31m\tx\\xff\\xfe\u{e9}\\u{85}\n");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn verbose_shows_every_header_field_and_escapes_context_strings() {
        let mut ctx = fixture::context();
        ctx.build = "evil\nBUILD=forged".into();
        let r = fixture::rec(&ctx, AT, "a/b/c", 4, 0, Some([0xee; 16]), b"p");
        let mut out = Vec::new();
        ShortText::new(TextForm::Verbose, ZonedFmt::new(Zone::utc()))
            .write(&mut out, &r)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for field in [
            "CLASSIFICATION=a/b/c",
            "SEVERITY=4 (critical)",
            &format!("RECORD_ID={}", r.id()),
            &format!("EVENT_ID={}", "ee".repeat(16)),
            &format!("BOOT_ID={}", "b0".repeat(16)),
            "SEGMENT=3",
            "OFFSET=4096",
            "KERNEL_VERSION=6.1",
            "PAYLOAD=p",
            "BUILD=evil\\nBUILD=forged",
        ] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        assert_eq!(text.matches("BUILD=").count(), 2, "{text}");
    }
}
