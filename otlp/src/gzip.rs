//! gzip request bodies (`Content-Encoding: gzip`), for OTLP endpoints that take no zstd.
//! Compiled with the `gzip` feature only (the default `seglog` build, the collector), so the
//! device build carries no deflate implementation.

/// Whether this build can write gzip bodies (the `gzip` feature).
pub const GZIP_AVAILABLE: bool = cfg!(feature = "gzip");

/// `body` gzip-compressed at `level` (clamped to 1-9); `None` in a build without the `gzip`
/// feature (check [`GZIP_AVAILABLE`] when reading the configuration).
pub fn gzip(body: &[u8], level: i32) -> Option<Vec<u8>> {
    #[cfg(feature = "gzip")]
    {
        use std::io::Write;
        let level = u32::try_from(level.clamp(1, 9)).unwrap_or(6);
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4 + 64),
            flate2::Compression::new(level),
        );
        // Writing into a Vec cannot fail.
        enc.write_all(body).ok()?;
        enc.finish().ok()
    }
    #[cfg(not(feature = "gzip"))]
    {
        let _ = (body, level);
        None
    }
}

#[cfg(all(test, feature = "gzip"))]
mod tests {
    #[test]
    fn a_gzip_body_decompresses_to_the_input() {
        use std::io::Read;
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = super::gzip(&body, 1).expect("built with gzip");
        assert_eq!(&z[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(z.len() < body.len() / 2);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
