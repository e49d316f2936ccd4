//! seglog's OTLP/HTTP logs mapping (OTLP.md): a seglog batch ([`protocol::Batch`]) as an
//! OpenTelemetry `ExportLogsServiceRequest` in binary protobuf ([`encode_request`]), and the
//! receiver's answer decoded ([`decode_response`], [`decode_status`]). No I/O: the uploader
//! (`[upload] protocol = "otlp"`) and the collector's forwarder (`[collector.forward]`) both
//! use it, so the two send the same bytes for the same batch.
//!
//! The protobuf is written by hand ([`pb`]): field numbers are those of the upstream
//! `opentelemetry-proto` definitions (`opentelemetry/proto/logs/v1/logs.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`,
//! `collector/logs/v1/logs_service.proto`), and the e2e test `otlp_e2e` checks every mapped
//! field with the official Python classes (PyPI `opentelemetry-proto`), not with our own
//! decoder.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod encode;
mod gzip;
pub mod pb;
mod response;
#[cfg(test)]
mod tests;

pub use encode::{encode_request, severity_number, severity_text, Encoder};
pub use gzip::{gzip, GZIP_AVAILABLE};
pub use response::{decode_response, decode_status, PartialSuccess, ResponseError, RpcStatus};

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for `fuzz/`.
    /// Decodes `data` as both response messages; must never panic.
    pub fn response_decode(data: &[u8]) {
        let _ = crate::decode_response(data);
        let _ = crate::decode_status(data);
    }

    #[test]
    fn the_committed_corpus_replays_without_panics() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/otlp_response");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("committed corpus") {
            response_decode(&std::fs::read(e.expect("entry").path()).expect("file"));
            n += 1;
        }
        assert!(n >= 5, "only {n} corpus files in {}", dir.display());
    }
}

/// `Content-Type` of an OTLP/HTTP binary protobuf request and response.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// The standard path of the logs endpoint (appended by nobody: `[upload] url` is the full
/// endpoint, as in the OTLP exporter's `logs_endpoint`).
pub const LOGS_PATH: &str = "/v1/logs";
/// The request header carrying the batch id (64 lower-case hex, PROTOCOL.md section 2), so a
/// deduplicating receiver can drop a resent batch.
pub const HEADER_BATCH_ID: &str = "Seglog-Batch-Id";
/// The instrumentation scope name of every `ScopeLogs`.
pub const SCOPE_NAME: &str = "seglog";
/// `event_name` (and `event.name` attribute) of a gap record.
pub const GAP_EVENT: &str = "seglog.gap";
/// `event_name` (and `event.name` attribute) of the device counters record.
pub const COUNTERS_EVENT: &str = "seglog.counters";
/// The most bytes of a response body the decoders look at (a larger answer is an error).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
