//! Entry points for cargo-fuzz (`fuzz/fuzz_targets/record_decode.rs`) and for the stable
//! corpus replay test.
use segment_log::{FrameKind, FrameRef, Position};

use crate as record;
use crate::{ContextTracker, Decoded, Observed};

/// Decodes `data` as a frame: the first byte picks the kind (`% 3`: record, preamble,
/// seal), the rest is the payload. Whatever decodes must re-encode to something that
/// decodes to the same value, and resolving against a context must not panic.
pub fn fuzz_decode(data: &[u8]) {
    let Some((&k, payload)) = data.split_first() else {
        return;
    };
    let kind = match k % 3 {
        0 => FrameKind::Record,
        1 => FrameKind::Preamble,
        _ => FrameKind::Seal,
    };
    match record::decode_frame(kind, payload) {
        Ok(Decoded::Record {
            header,
            payload: body,
        }) => {
            let mut again = Vec::new();
            if record::encode_record(&header, body, &mut again).is_ok() {
                match record::decode_record(&again) {
                    Ok((h2, b2)) => {
                        assert!(h2 == header && b2 == body, "record re-encoding changed it")
                    }
                    Err(e) => panic!("re-encoded record does not decode: {e}"),
                }
            }
        }
        Ok(Decoded::Context(ctx)) => match record::encode_context(&ctx) {
            Ok(bytes) => assert_eq!(
                record::decode_context(&bytes).ok().as_ref(),
                Some(&*ctx),
                "context re-encoding changed it"
            ),
            Err(e) => panic!("decoded context does not re-encode: {e}"),
        },
        Err(e) => {
            let _ = (e.code(), e.to_string());
        }
    }
    // The same bytes through the tracker, as a preamble then as a record.
    let mut t = ContextTracker::new();
    let public = [0u8; 32];
    for kind in [FrameKind::Preamble, FrameKind::Record] {
        let f = FrameRef {
            position: Position {
                segment: 1,
                offset: 256,
            },
            kind,
            payload,
        };
        if let Ok(Observed::Record(v)) = t.observe(&f, &public) {
            let _ = v.meta.classification.as_str();
        }
    }
}
