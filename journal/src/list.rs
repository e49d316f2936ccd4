//! `seglog journal [list]`: records one per line like `journalctl` (or JSON, or every field),
//! filtered, optionally only the last N, optionally following the live log; through a pager
//! on a terminal.
//!
//! Memory stays constant whatever the log size: records stream from the reader straight into
//! a buffered stdout; `-n N` keeps only the rendered lines of the last N matches in a ring of
//! reused buffers.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::filter::{Filter, FilterArgs};
use super::output::{Json, JsonShape};
use super::pager::Sink;
use super::record::Rec;
use super::short::{ShortText, TextForm};
use super::source::{Item, Source};
use super::timefmt::system_time_ms;
pub use super::warnings::Warnings;
use super::when::ZonedFmt;
use super::ReadArgs;

/// How records are shown (`-o`), as in `journalctl -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputMode {
    /// Time, classification, severity and the message (the payload as text), one line each.
    #[default]
    Short,
    /// The message only.
    Cat,
    /// One JSON object per line, with the payload.
    Json,
    /// JSON objects indented over several lines, with the payload.
    JsonPretty,
    /// Every field of the record and its writer's context, one per line.
    Verbose,
}

/// List records.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show only the last N matching records (10 when N is left out; with --follow: then
    /// keep following).
    #[arg(
        short = 'n',
        long = "lines",
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "10"
    )]
    pub lines: Option<usize>,
    /// Output form: short (time, classification, severity, message), cat (the message),
    /// json (one object per line, with the payload), json-pretty, verbose (every field).
    #[arg(short = 'o', long, value_name = "MODE", value_enum, default_value_t)]
    pub output: OutputMode,
    /// The same as `-o json` (kept for older scripts).
    #[arg(long, hide = true)]
    pub json: bool,
    /// Accepted for older scripts and ignored: the message is on every line now, and JSON
    /// always carries the payload.
    #[arg(short = 'i', long, hide = true)]
    pub include_payload: bool,
    /// Keep running and print records as they are written (like `journalctl -f`). Past the
    /// first 10 warnings, skipped data is summarised on stderr every 10 s or 1000 skips.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Write straight to standard output, without a pager (there is none anyway when the
    /// output is not a terminal, and none with --follow).
    #[arg(long)]
    pub no_pager: bool,
    /// How often --follow looks for new records.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = super::parse_duration)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub read: ReadArgs,
}

impl ListArgs {
    fn mode(&self) -> OutputMode {
        if self.json {
            OutputMode::Json
        } else {
            self.output
        }
    }
}

/// Output buffer: large enough that a write syscall carries hundreds of lines.
const OUT_BUF: usize = 256 << 10;

/// Runs `seglog journal list`.
pub fn run(args: ListArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let zone = args.filter.zone();
    let filter = args
        .filter
        .clone()
        .into_filter(system_time_ms(SystemTime::now()))?;
    let mut src = Source::open(dir, &args.read)?;
    if !args.follow {
        // Without --follow, list what was there at the start, even if writers outpace us.
        src.stop_at_current_end()?;
    }
    let mode = args.mode();
    let render = match mode {
        OutputMode::Json | OutputMode::JsonPretty => Render::Json(Json::new(JsonShape {
            payload: true,
            context: false,
            pretty: mode == OutputMode::JsonPretty,
        })),
        OutputMode::Short => Render::Text(ShortText::new(TextForm::Short, ZonedFmt::new(zone))),
        OutputMode::Cat => Render::Text(ShortText::new(TextForm::Cat, ZonedFmt::new(zone))),
        OutputMode::Verbose => Render::Text(ShortText::new(TextForm::Verbose, ZonedFmt::new(zone))),
    };
    let mut lister = Lister {
        args: &args,
        filter,
        render,
        warnings: Warnings::default(),
        found_id: false,
        shown: 0,
    };
    let sink = Sink::open(!args.no_pager && !args.follow);
    let mut out = BufWriter::with_capacity(OUT_BUF, sink);
    let result = lister.run(&mut src, &mut out, mode);
    // Hand the rest to the pager and wait for the person to quit it, whatever happened.
    let flushed = out.flush();
    let finished = match out.into_inner() {
        Ok(sink) => sink.finish(),
        Err(e) => Err(e.into_error()),
    };
    result?;
    flushed?;
    finished?;
    lister.warnings.finish();
    Ok(ExitCode::SUCCESS)
}

enum Render {
    Text(ShortText),
    Json(Json),
}

struct Lister<'a> {
    args: &'a ListArgs,
    filter: Filter,
    render: Render,
    warnings: Warnings,
    /// The record asked for with --record-id was printed: ids are unique, stop reading.
    found_id: bool,
    /// Records shown so far.
    shown: u64,
}

impl Lister<'_> {
    fn run(
        &mut self,
        src: &mut Source,
        out: &mut impl Write,
        mode: OutputMode,
    ) -> anyhow::Result<()> {
        match self.args.lines {
            Some(n) => self.last_n(src, out, n)?,
            None => self.stream(src, out)?,
        }
        let json = matches!(mode, OutputMode::Json | OutputMode::JsonPretty);
        if self.shown == 0 && !json {
            // As journalctl: an empty result says so (JSON stays parseable: nothing).
            out.write_all(b"-- No entries --\n")?;
        }
        if self.args.follow {
            loop {
                out.flush()?;
                std::thread::sleep(self.args.poll_interval);
                self.stream(src, out)?;
                out.flush()?;
                self.warnings.tick();
            }
        }
        Ok(())
    }

    fn render(&mut self, out: &mut impl Write, r: &Rec<'_>) -> io::Result<()> {
        match &mut self.render {
            Render::Json(j) => j.write(out, r),
            Render::Text(t) => t.write(out, r),
        }
    }

    fn done(&self) -> bool {
        self.found_id && !self.args.follow
    }

    /// Prints every matching record up to the live end.
    fn stream(&mut self, src: &mut Source, out: &mut impl Write) -> anyhow::Result<()> {
        while !self.done() {
            let Some(item) = src.next_item()? else { break };
            match item {
                Item::Record(r) => {
                    if self.filter.matches(&r) {
                        self.render(out, &r)?;
                        self.shown += 1;
                        self.found_id |= self.filter.record_id().is_some();
                    }
                }
                other => self.warnings.note(&other),
            }
            if self.args.follow && self.warnings.pending_flush {
                // Keep warnings and records in order on a terminal.
                out.flush()?;
                self.warnings.pending_flush = false;
            }
        }
        Ok(())
    }

    /// Reads to the live end keeping the last `n` rendered matches, then prints them.
    fn last_n(&mut self, src: &mut Source, out: &mut impl Write, n: usize) -> anyhow::Result<()> {
        let mut ring = Ring::new(n);
        while !self.done() {
            let Some(item) = src.next_item()? else { break };
            match item {
                Item::Record(r) => {
                    if self.filter.matches(&r) {
                        if let Some(slot) = ring.push() {
                            self.render(slot, &r)?;
                        }
                        self.found_id |= self.filter.record_id().is_some();
                    }
                }
                other => self.warnings.note(&other),
            }
        }
        self.shown += ring.slots.len() as u64;
        ring.write_to(out)?;
        Ok(())
    }
}

/// The last `cap` rendered records, oldest first; buffers are reused, never freed.
struct Ring {
    slots: Vec<Vec<u8>>,
    cap: usize,
    /// Index of the oldest entry once the ring is full.
    head: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        // Grows to `cap` on demand, so `-n 1000000` on a short log costs nothing.
        Ring {
            slots: Vec::new(),
            cap,
            head: 0,
        }
    }

    /// A cleared buffer for the newest entry (evicting the oldest when full); `None` when
    /// the ring holds nothing (`-n 0`).
    fn push(&mut self) -> Option<&mut Vec<u8>> {
        if self.cap == 0 {
            return None;
        }
        if self.slots.len() < self.cap {
            self.slots.push(Vec::new());
            return self.slots.last_mut();
        }
        let i = self.head;
        self.head = (self.head + 1) % self.cap;
        let slot = self.slots.get_mut(i)?;
        slot.clear();
        Some(slot)
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let (newer, older) = self.slots.split_at(self.head.min(self.slots.len()));
        for s in older.iter().chain(newer) {
            out.write_all(s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(ring: &mut Ring, items: std::ops::Range<u32>) {
        for i in items {
            if let Some(slot) = ring.push() {
                writeln!(slot, "{i}").unwrap();
            }
        }
    }

    fn contents(ring: &Ring) -> String {
        let mut out = Vec::new();
        ring.write_to(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ring_keeps_the_last_n_in_order() {
        let mut ring = Ring::new(3);
        fill(&mut ring, 0..10);
        assert_eq!(contents(&ring), "7\n8\n9\n");
        assert_eq!(ring.slots.len(), 3, "never more than n buffers");
    }

    #[test]
    fn ring_shorter_than_n_keeps_everything() {
        let mut ring = Ring::new(5);
        fill(&mut ring, 0..2);
        assert_eq!(contents(&ring), "0\n1\n");
    }

    #[test]
    fn ring_of_zero_keeps_nothing() {
        let mut ring = Ring::new(0);
        fill(&mut ring, 0..4);
        assert_eq!(contents(&ring), "");
    }

    #[test]
    fn ring_wrapping_exactly_at_capacity_stays_ordered() {
        let mut ring = Ring::new(4);
        fill(&mut ring, 0..8);
        assert_eq!(contents(&ring), "4\n5\n6\n7\n");
    }
}
