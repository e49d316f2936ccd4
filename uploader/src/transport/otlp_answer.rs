//! Reading an OTLP/HTTP receiver's answer (OTLP.md, "Delivery"): the status as a verdict,
//! `Retry-After`, the `partial_success` of a 2xx, the `google.rpc.Status` message of an error.
use std::io::Read;

use super::{is_unreachable, Outcome, Transport};
use crate::protocol::Verdict;
use crate::retry::parse_retry_after;

impl Transport {
    /// Classifies an OTLP/HTTP answer (OTLP.md, "Delivery").
    pub(super) fn answer_otlp(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Outcome {
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let msg = self.url.scrub(&format!("{}: {e}", self.url));
                return if is_unreachable(&e) {
                    Outcome::Transport(msg)
                } else {
                    Outcome::Broken(msg)
                };
            }
        };
        let code = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let retry_after =
            header("Retry-After").and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let protobuf = header("Content-Type").is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with(otlp::CONTENT_TYPE)
        });
        let mut buf = Vec::new();
        // Bounded: a larger answer is cut (and then does not decode).
        let limit = otlp::MAX_RESPONSE_BYTES as u64;
        let _ = resp
            .body_mut()
            .as_reader()
            .take(limit)
            .read_to_end(&mut buf);
        let verdict = otlp_verdict(code);
        let (partial, text) = if verdict == Verdict::Acknowledged {
            // A 2xx whose body does not decode is still a success: the records were taken.
            let p = if protobuf {
                otlp::decode_response(&buf).ok().flatten()
            } else {
                None
            };
            (p, String::new())
        } else {
            let status = protobuf.then(|| otlp::decode_status(&buf).ok()).flatten();
            let text = match status {
                Some(s) if !s.message.is_empty() => s.message,
                _ => String::from_utf8_lossy(buf.get(..512).unwrap_or(&buf)).into_owned(),
            };
            (None, text)
        };
        Outcome::Status {
            code,
            verdict,
            retry_after,
            body: self.url.scrub(&text),
            partial,
        }
    }
}

/// What the uploader does with an OTLP/HTTP status (the OTLP specification's rules, with
/// seglog's reading of the statuses it leaves open; OTLP.md, "Delivery"): 429, 502, 503, 504
/// wait for `Retry-After`; 400 and other 4xx are permanent (dead-lettered at once); 401, 403,
/// 404 and 415 are configuration problems; 413 splits; 408 and other 5xx are retried.
pub fn otlp_verdict(code: u16) -> Verdict {
    match code {
        200..=299 => Verdict::Acknowledged,
        413 => Verdict::Split,
        429 | 502 | 503 | 504 => Verdict::RetryAfter,
        408 => Verdict::Retry,
        401 | 403 | 404 | 415 => Verdict::Configuration,
        400..=499 => Verdict::Rejected,
        _ => Verdict::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_statuses_follow_the_otlp_specification() {
        for (code, v) in [
            (200, Verdict::Acknowledged),
            (204, Verdict::Acknowledged),
            (400, Verdict::Rejected),
            (422, Verdict::Rejected),
            (401, Verdict::Configuration),
            (404, Verdict::Configuration),
            (415, Verdict::Configuration),
            (413, Verdict::Split),
            (429, Verdict::RetryAfter),
            (502, Verdict::RetryAfter),
            (503, Verdict::RetryAfter),
            (504, Verdict::RetryAfter),
            (408, Verdict::Retry),
            (500, Verdict::Retry),
        ] {
            assert_eq!(otlp_verdict(code), v, "{code}");
        }
    }
}
