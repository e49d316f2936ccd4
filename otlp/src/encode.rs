//! The mapping of OTLP.md: contexts to `ResourceLogs`, records to `LogRecord`s, gaps and
//! counters to event records.
use protocol::{Batch, Context, Gap, Record};
use records::RecordId;
use segment_log::Position;

use crate::pb;

// Field numbers (opentelemetry-proto, v1).
/// ExportLogsServiceRequest.resource_logs
const REQ_RESOURCE_LOGS: u32 = 1;
/// ResourceLogs.resource, .scope_logs
const RL_RESOURCE: u32 = 1;
const RL_SCOPE_LOGS: u32 = 2;
/// Resource.attributes
const RES_ATTRIBUTES: u32 = 1;
/// ScopeLogs.scope, .log_records
const SL_SCOPE: u32 = 1;
const SL_LOG_RECORDS: u32 = 2;
/// InstrumentationScope.name, .version, .attributes
const IS_NAME: u32 = 1;
const IS_VERSION: u32 = 2;
const IS_ATTRIBUTES: u32 = 3;
/// LogRecord fields.
const LR_TIME: u32 = 1;
const LR_SEVERITY_NUMBER: u32 = 2;
const LR_SEVERITY_TEXT: u32 = 3;
const LR_BODY: u32 = 5;
const LR_ATTRIBUTES: u32 = 6;
const LR_OBSERVED_TIME: u32 = 11;
const LR_EVENT_NAME: u32 = 12;
/// KeyValue.key, .value
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
/// AnyValue.string_value, .int_value, .bytes_value
const AV_STRING: u32 = 1;
const AV_INT: u32 = 3;
const AV_BYTES: u32 = 7;

/// An attribute value.
enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

fn any_value(out: &mut Vec<u8>, field: u32, v: &Value<'_>) {
    pb::message(out, field, |o| match v {
        Value::Str(s) => pb::string(o, AV_STRING, s),
        // int64 as a varint: negatives in two's complement, as protobuf does.
        Value::Int(i) => pb::uint(o, AV_INT, *i as u64),
    });
}

fn attr(out: &mut Vec<u8>, field: u32, key: &str, v: Value<'_>) {
    pb::message(out, field, |o| {
        pb::string(o, KV_KEY, key);
        any_value(o, KV_VALUE, &v);
    });
}

/// seglog's severity (1 low, 2 medium, 3 high, 4 critical) as an OTel `SeverityNumber`:
/// INFO (9), WARN (13), ERROR (17), FATAL (21); anything else UNSPECIFIED (0).
pub fn severity_number(s: u8) -> u64 {
    match s {
        1 => 9,
        2 => 13,
        3 => 17,
        4 => 21,
        _ => 0,
    }
}

/// The `severity_text` sent with [`severity_number`]: seglog's own names.
pub fn severity_text(s: u8) -> &'static str {
    match s {
        1 => "low",
        2 => "medium",
        3 => "high",
        4 => "critical",
        _ => "",
    }
}

/// `host.arch` in the semantic conventions' values for the kernel's machine names.
fn host_arch(a: &str) -> &str {
    match a {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i486" | "i586" | "i686" | "x86" => "x86",
        "ppc64" | "ppc64le" => "ppc64",
        "ppc" => "ppc32",
        "s390x" => "s390x",
        a if a.starts_with("arm") => "arm32",
        a => a,
    }
}

/// The resource attribute a context field becomes (OTLP.md, "Resource").
fn resource_key(field: &str) -> ResourceKey {
    match field {
        "machine_id" => ResourceKey::Plain("host.id"),
        "arch" => ResourceKey::Arch,
        "host_type" => ResourceKey::Plain("host.type"),
        "build" => ResourceKey::Plain("os.version"),
        "system_name" => ResourceKey::Plain("os.name"),
        "cpu_model" => ResourceKey::Plain("host.cpu.model.name"),
        "kernel_version" => ResourceKey::Plain("seglog.kernel_version"),
        "boot_id" => ResourceKey::Plain("seglog.boot_id"),
        "board_name" => ResourceKey::Plain("seglog.board_name"),
        "bios_version" => ResourceKey::Plain("seglog.bios_version"),
        "record_format_version" => ResourceKey::Plain("seglog.record_format_version"),
        _ => ResourceKey::Extra,
    }
}

enum ResourceKey {
    Plain(&'static str),
    Arch,
    /// `seglog.context.<field>`.
    Extra,
}

/// Microseconds-free times: ms since the epoch as ns; before 1970 (a clock never set) is 0,
/// "unknown" in OTLP.
fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

fn position_text(p: Position) -> String {
    format!("{}:{}", p.segment, p.offset)
}

/// Encodes requests; keeps its scratch buffers between batches.
#[derive(Debug, Default)]
pub struct Encoder {
    key: String,
    hex: String,
}

impl Encoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the `ExportLogsServiceRequest` of `batch` to `out` (OTLP.md). `now_ns` is the
    /// time of gap and counter records (they have no time of their own).
    pub fn encode(&mut self, batch: &Batch, now_ns: u64, out: &mut Vec<u8>) {
        let log_id = hex::encode(batch.public_log_id);
        let batch_id = batch.id().to_hex();
        let scope = Scope {
            batch_id: &batch_id,
            first: position_text(batch.first),
            last: position_text(batch.last),
        };
        // One ResourceLogs per context, in context order; records keep their order within.
        let mut by_context: Vec<Vec<&Record>> = vec![Vec::new(); batch.contexts.len()];
        let mut orphans = Vec::new();
        for r in &batch.records {
            match by_context.get_mut(r.context as usize) {
                Some(v) => v.push(r),
                None => orphans.push(r),
            }
        }
        for (ctx, records) in batch.contexts.iter().zip(&by_context) {
            if records.is_empty() {
                continue;
            }
            pb::message(out, REQ_RESOURCE_LOGS, |o| {
                self.resource(o, &log_id, Some(ctx));
                pb::message(o, RL_SCOPE_LOGS, |o| {
                    scope.write(o);
                    for r in records {
                        self.record(o, &batch.public_log_id, r);
                    }
                });
            });
        }
        let counters = batch.counters.iter().any(|(_, v)| *v > 0);
        if orphans.is_empty() && batch.gaps.is_empty() && !counters {
            return;
        }
        // The log's own resource: records without a context (none from a valid batch), gaps
        // and counters.
        pb::message(out, REQ_RESOURCE_LOGS, |o| {
            self.resource(o, &log_id, None);
            pb::message(o, RL_SCOPE_LOGS, |o| {
                scope.write(o);
                for r in orphans {
                    self.record(o, &batch.public_log_id, r);
                }
                for g in &batch.gaps {
                    gap(o, g, now_ns);
                }
                if counters {
                    counters_record(o, &batch.counters, now_ns);
                }
            });
        });
    }

    fn resource(&mut self, out: &mut Vec<u8>, log_id: &str, ctx: Option<&Context>) {
        pb::message(out, RL_RESOURCE, |o| {
            attr(o, RES_ATTRIBUTES, "service.name", Value::Str("seglog"));
            attr(o, RES_ATTRIBUTES, "seglog.log_id", Value::Str(log_id));
            let Some(ctx) = ctx else { return };
            attr(o, RES_ATTRIBUTES, "os.type", Value::Str("linux"));
            for (k, v) in &ctx.fields {
                match resource_key(k) {
                    ResourceKey::Plain(key) => attr(o, RES_ATTRIBUTES, key, Value::Str(v)),
                    ResourceKey::Arch => {
                        attr(o, RES_ATTRIBUTES, "host.arch", Value::Str(host_arch(v)))
                    }
                    ResourceKey::Extra => {
                        self.key.clear();
                        self.key.push_str("seglog.context.");
                        self.key.push_str(k);
                        attr(o, RES_ATTRIBUTES, &self.key, Value::Str(v));
                    }
                }
            }
        });
    }

    fn record(&mut self, out: &mut Vec<u8>, public: &[u8; 32], r: &Record) {
        pb::message(out, SL_LOG_RECORDS, |o| {
            let t = ms_to_ns(r.wall_ms);
            pb::fixed64(o, LR_TIME, t);
            pb::uint(o, LR_SEVERITY_NUMBER, severity_number(r.severity));
            pb::string(o, LR_SEVERITY_TEXT, severity_text(r.severity));
            pb::message(o, LR_BODY, |o| match std::str::from_utf8(&r.payload) {
                Ok(s) => pb::string(o, AV_STRING, s),
                Err(_) => pb::bytes(o, AV_BYTES, &r.payload),
            });
            attr(
                o,
                LR_ATTRIBUTES,
                "seglog.classification",
                Value::Str(&r.classification),
            );
            self.hex.clear();
            push_hex(
                &mut self.hex,
                RecordId::derive(public, r.position).as_bytes(),
            );
            attr(o, LR_ATTRIBUTES, "seglog.record_id", Value::Str(&self.hex));
            if let Some(e) = &r.event_id {
                self.hex.clear();
                push_hex(&mut self.hex, e);
                attr(o, LR_ATTRIBUTES, "seglog.event_id", Value::Str(&self.hex));
            }
            let boot = i64::try_from(r.boot_ms).unwrap_or(i64::MAX);
            attr(o, LR_ATTRIBUTES, "seglog.boot_ms", Value::Int(boot));
            // The recorder is where the record entered the collection system.
            pb::fixed64(o, LR_OBSERVED_TIME, t);
        });
    }
}

fn push_hex(s: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
}

struct Scope<'a> {
    batch_id: &'a str,
    first: String,
    last: String,
}

impl Scope<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        pb::message(out, SL_SCOPE, |o| {
            pb::string(o, IS_NAME, crate::SCOPE_NAME);
            pb::string(o, IS_VERSION, env!("CARGO_PKG_VERSION"));
            attr(
                o,
                IS_ATTRIBUTES,
                "seglog.batch_id",
                Value::Str(self.batch_id),
            );
            attr(
                o,
                IS_ATTRIBUTES,
                "seglog.batch.first",
                Value::Str(&self.first),
            );
            attr(
                o,
                IS_ATTRIBUTES,
                "seglog.batch.last",
                Value::Str(&self.last),
            );
        });
    }
}

fn int(v: u64) -> Value<'static> {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn event_header(o: &mut Vec<u8>, name: &str, severity: u64, text: &str, now_ns: u64) {
    pb::fixed64(o, LR_TIME, now_ns);
    pb::uint(o, LR_SEVERITY_NUMBER, severity);
    pb::string(o, LR_SEVERITY_TEXT, text);
    pb::fixed64(o, LR_OBSERVED_TIME, now_ns);
    pb::string(o, LR_EVENT_NAME, name);
    attr(o, LR_ATTRIBUTES, "event.name", Value::Str(name));
}

fn gap(out: &mut Vec<u8>, g: &Gap, now_ns: u64) {
    pb::message(out, SL_LOG_RECORDS, |o| {
        event_header(o, crate::GAP_EVENT, 13, "WARN", now_ns);
        let body = format!(
            "seglog gap ({}) {}..{}: {} records lost; {}",
            g.reason.name(),
            g.start,
            g.end,
            g.records,
            g.detail
        );
        pb::message(o, LR_BODY, |o| pb::string(o, AV_STRING, &body));
        attr(
            o,
            LR_ATTRIBUTES,
            "seglog.gap.reason",
            Value::Str(g.reason.name()),
        );
        attr(
            o,
            LR_ATTRIBUTES,
            "seglog.gap.start",
            Value::Str(&position_text(g.start)),
        );
        attr(
            o,
            LR_ATTRIBUTES,
            "seglog.gap.end",
            Value::Str(&position_text(g.end)),
        );
        attr(o, LR_ATTRIBUTES, "seglog.gap.segments", int(g.segments));
        attr(o, LR_ATTRIBUTES, "seglog.gap.records", int(g.records));
        attr(o, LR_ATTRIBUTES, "seglog.gap.bytes", int(g.bytes));
        attr(o, LR_ATTRIBUTES, "seglog.gap.detail", Value::Str(&g.detail));
    });
}

fn counters_record(out: &mut Vec<u8>, counters: &[(String, u64)], now_ns: u64) {
    pb::message(out, SL_LOG_RECORDS, |o| {
        event_header(o, crate::COUNTERS_EVENT, 9, "INFO", now_ns);
        let mut key = String::new();
        for (k, v) in counters {
            key.clear();
            key.push_str("seglog.counter.");
            key.push_str(k);
            attr(o, LR_ATTRIBUTES, &key, int(*v));
        }
    });
}

/// The `ExportLogsServiceRequest` of `batch` (see [`Encoder::encode`]).
pub fn encode_request(batch: &Batch, now_ns: u64) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new().encode(batch, now_ns, &mut out);
    out
}
