//! What a batch's body is on the wire: the seglog batch compressed (PROTOCOL.md), or the
//! same content as an OTLP `ExportLogsServiceRequest` (OTLP.md), zstd-compressed or plain.
//! One batch builder, two encoders: ranges, ids, gaps and counters are the same for both.
use crate::config::Compression;
use crate::protocol::{self, Batch, Limits};

/// The body format of the batches a builder makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// The seglog batch, zstd (PROTOCOL.md).
    #[default]
    Seglog,
    /// OTLP/HTTP logs protobuf, compressed as `compression` says (`Content-Encoding`).
    Otlp {
        /// zstd, gzip or none.
        compression: Compression,
    },
}

impl BodyFormat {
    /// The format `cfg` asks for.
    pub fn of(cfg: &crate::config::UploadConfig) -> BodyFormat {
        match cfg.protocol {
            crate::config::WireProtocol::Seglog => BodyFormat::Seglog,
            crate::config::WireProtocol::Otlp => BodyFormat::Otlp {
                compression: cfg.compression,
            },
        }
    }
}

/// The time gap and counter records carry in an OTLP body (they have none of their own).
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Encodes a decoded batch as the body of `format` (the gap report of a dead-lettered batch).
pub fn encode(
    batch: &Batch,
    format: BodyFormat,
    level: i32,
) -> Result<Vec<u8>, protocol::ProtocolError> {
    match format {
        BodyFormat::Seglog => protocol::encode_batch(batch, level),
        BodyFormat::Otlp { compression } => {
            let pb = otlp::encode_request(batch, now_ns());
            match compression {
                Compression::Zstd => protocol::compress(&pb, level),
                Compression::Gzip => gzip(&pb, level),
                Compression::None => Ok(pb),
            }
        }
    }
}

/// `pb` gzip-compressed; an error in a build without gzip (the configuration refuses
/// `compression = "gzip"` there, so this is only reached by a library caller).
fn gzip(pb: &[u8], level: i32) -> Result<Vec<u8>, protocol::ProtocolError> {
    otlp::gzip(pb, level).ok_or_else(|| {
        // The same variant `protocol::compress` reports a zstd failure with.
        protocol::ProtocolError::Decompress("this build has no gzip (the `gzip` feature)".into())
    })
}

/// The OTLP request of the seglog batch `raw` (just encoded by the builder) into `out`.
pub(super) fn otlp_from_raw(
    raw: &[u8],
    enc: &mut otlp::Encoder,
    out: &mut Vec<u8>,
) -> Result<(), protocol::ProtocolError> {
    // Our own bytes, just encoded: no limits but the checks of the format; it is the same
    // `Batch` the collector's forwarder maps.
    let limits = Limits {
        max_body_bytes: u64::MAX,
        max_decompressed_bytes: u64::MAX,
        max_records: u64::MAX,
        max_contexts: u64::MAX,
        max_context_fields: u64::MAX,
        max_gaps: u64::MAX,
        max_counters: u64::MAX,
        max_classifications: u64::MAX,
        max_payload_bytes: u64::MAX,
    };
    let batch = protocol::decode_batch_raw(raw, &limits)?;
    out.clear();
    enc.encode(&batch, now_ns(), out);
    Ok(())
}

impl super::BatchBuilder {
    /// Makes the bodies of the following batches in `format` (default [`BodyFormat::Seglog`]).
    pub fn set_format(&mut self, format: BodyFormat) {
        self.format = format;
    }

    /// The body format.
    pub fn format(&self) -> BodyFormat {
        self.format
    }
}

/// The room the encoder keeps before its payload column for the rest of a batch within
/// `limits` (`BatchEncoder::finish_in_place`): 24 bytes per record (the columns of a record
/// with an event id take ~30, without ~12), the records bounded by `max_records` and by
/// 16-byte payloads filling `max_bytes`, and 64 KiB for the header, contexts and gaps. A
/// batch that needs more moves its payloads once. Only what is written is touched.
pub(super) fn headroom(limits: &super::BatchLimits) -> usize {
    let records = limits.max_records.min(limits.max_bytes / 16 + 1);
    usize::try_from(records.saturating_mul(24).saturating_add(64 << 10))
        .unwrap_or(usize::MAX)
        .min(64 << 20)
}

/// The wire body of the batch `raw` (just encoded) in `format`, and the size of what was
/// compressed.
pub(super) fn wire_body(
    raw: &[u8],
    format: BodyFormat,
    level: i32,
    compressor: &mut zstd::bulk::Compressor<'static>,
    otlp: &mut otlp::Encoder,
    obuf: &mut Vec<u8>,
) -> Result<(Vec<u8>, usize), super::BuildError> {
    let plain = match format {
        BodyFormat::Seglog => raw,
        BodyFormat::Otlp { .. } => {
            otlp_from_raw(raw, otlp, obuf)?;
            &obuf[..]
        }
    };
    match format {
        BodyFormat::Otlp {
            compression: Compression::None,
        } => return Ok((plain.to_vec(), plain.len())),
        BodyFormat::Otlp {
            compression: Compression::Gzip,
        } => return Ok((gzip(plain, level)?, plain.len())),
        _ => {}
    }
    // Straight into the body's own buffer: zstd writes only what it produces, so the bound
    // is reserved but neither zero-filled nor copied afterwards.
    let mut body = Vec::with_capacity(zstd::zstd_safe::compress_bound(plain.len()));
    compressor.compress_to_buffer(plain, &mut body)?;
    Ok((body, plain.len()))
}
