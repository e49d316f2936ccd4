//! Delivering one batch: send, classify the answer, retry with backoff, honour
//! `Retry-After`, split on 413, dead-letter permanent refusals (PROTOCOL.md section 5).
use std::time::Instant;

use anyhow::Context as _;

use super::{crash_point_for_test, Notes, PassOptions, PassOutcome, Progress, Uploader, Waiter};
use crate::batch::{BatchLimits, Built, End};
use crate::protocol::{self, Gap, GapReason, Verdict};
use crate::state::now_ms;
use crate::transport::{redact, Outcome};

impl Uploader {
    /// Sends one batch until it is acknowledged, split, or dead-lettered. The inner `Err`
    /// ends the pass.
    pub(super) fn deliver(
        &mut self,
        b: Built,
        opts: &PassOptions,
        waiter: &mut dyn Waiter,
        p: &mut Progress,
        progress: &mut dyn FnMut(&Progress),
    ) -> anyhow::Result<Result<(), PassOutcome>> {
        self.cursor.inflight = Some((b.first, b.last));
        let known = b
            .last_records_before
            .map(|records| crate::state::RecordsBefore {
                segment: b.last.segment,
                offset: b.last.offset,
                records,
            });
        if known.is_some() && known != self.status.inflight_records_before {
            // Needed to state the exact count of a trimmed gap if this range has to be
            // rebuilt after a crash: like the cursor, it must be on disk before the send.
            let before = std::mem::replace(&mut self.status.inflight_records_before, known);
            if let Err(e) = self.status.save(&self.updir) {
                self.status.inflight_records_before = before; // retried with the next send
                return Err(e).with_context(|| {
                    format!(
                        "cannot write {}",
                        self.updir.join(crate::state::STATE_FILE).display()
                    )
                });
            }
        }
        self.persist()?;
        crash_point_for_test("before_send");
        let (mut attempts, mut refusals) = (0u32, 0u32);
        loop {
            if waiter.stop_requested() {
                return Ok(Err(PassOutcome::Stopped));
            }
            let Some(t) = self.transport.as_ref() else {
                return Ok(Err(PassOutcome::Configuration("no URL".into())));
            };
            let outcome = t.send(&b.id, &b.body);
            attempts += 1;
            let (wait, msg) = match outcome {
                Outcome::Status {
                    verdict: Verdict::Acknowledged,
                    ..
                } => {
                    crash_point_for_test("after_ack");
                    self.acknowledged(&b, p);
                    self.persist()?;
                    crash_point_for_test("after_cursor");
                    self.save_status();
                    progress(p);
                    return Ok(Ok(()));
                }
                Outcome::Status {
                    verdict: Verdict::Split,
                    code,
                    body,
                    ..
                } => {
                    if b.records <= 1 {
                        let why =
                            format!("server refused a single record as too large (HTTP {code})");
                        self.dead_letter(
                            &b,
                            Some(code),
                            &why,
                            &body,
                            GapReason::OversizedRecord,
                            p,
                        )?;
                        return Ok(Ok(()));
                    }
                    return self.split(&b, opts, waiter, p, progress);
                }
                Outcome::Status {
                    verdict: Verdict::Configuration,
                    code,
                    body,
                    ..
                } => {
                    let url = self.cfg.url.as_deref().map(redact).unwrap_or_default();
                    let hint = if code == 404 {
                        "check [upload] url"
                    } else {
                        "check [upload] token"
                    };
                    return Ok(Err(PassOutcome::Configuration(format!(
                        "server {url} answered HTTP {code} ({hint}): {}",
                        body.trim()
                    ))));
                }
                Outcome::Status {
                    verdict: Verdict::Rejected,
                    code,
                    body,
                    ..
                } => {
                    refusals += 1;
                    if refusals >= self.cfg.dead_letter_after {
                        let why =
                            format!("server refused the batch {refusals} times (HTTP {code})");
                        self.dead_letter(&b, Some(code), &why, &body, GapReason::DeadLettered, p)?;
                        return Ok(Ok(()));
                    }
                    (
                        self.backoff.next_delay(),
                        format!("HTTP {code}: {}", body.trim()),
                    )
                }
                Outcome::Status {
                    verdict: Verdict::RetryAfter,
                    code,
                    retry_after,
                    ..
                } => {
                    let cap = self.backoff.cap();
                    let w = match retry_after {
                        Some(d) => d.min(cap),
                        None => self.backoff.next_delay(),
                    };
                    (
                        w,
                        format!("HTTP {code}, retry after {}", humantime::format_duration(w)),
                    )
                }
                Outcome::Status { code, body, .. } => (
                    self.backoff.next_delay(),
                    format!("HTTP {code}: {}", body.trim()),
                ),
                Outcome::Transport(e) => (self.backoff.next_delay(), e),
            };
            p.retries += 1;
            self.status.last_error = Some(msg.clone());
            self.status.last_error_ms = Some(now_ms());
            if opts.max_attempts.is_some_and(|m| attempts >= m) {
                return Ok(Err(PassOutcome::Failed(format!(
                    "batch {} not delivered after {attempts} attempts; last: {msg}",
                    b.id
                ))));
            }
            let wait = match opts.deadline {
                Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
                None => wait,
            };
            if waiter.wait(wait) {
                return Ok(Err(PassOutcome::Stopped));
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Err(PassOutcome::Failed(format!(
                    "deadline passed; last error: {msg}"
                ))));
            }
        }
    }

    fn acknowledged(&mut self, b: &Built, p: &mut Progress) {
        self.cursor.position = b.last;
        self.cursor.inflight = None;
        self.backoff.reset();
        // Trim-ledger entries of segments before the cursor are never needed again.
        let _ = segment_log::ledger::compact_if_large(&self.cfg.dir, b.last.segment);
        let s = &mut self.status;
        s.cursor_records_before =
            b.last_records_before
                .map(|records| crate::state::RecordsBefore {
                    segment: b.last.segment,
                    offset: b.last.offset,
                    records,
                });
        let now = now_ms();
        s.last_success_ms = Some(now);
        s.delivered_records += b.records;
        s.delivered_bytes += b.payload_bytes;
        s.delivered_wire_bytes += b.body.len() as u64;
        s.delivered_batches += 1;
        s.budget_used(now);
        s.budget_used_bytes += b.body.len() as u64;
        s.gaps_reported += b.gaps.len() as u64;
        for g in &b.gaps {
            match g.reason {
                GapReason::Trimmed => s.missing_segments += g.segments,
                GapReason::UndecodableRecord => s.undecodable_records += 1,
                GapReason::DeadLettered | GapReason::OversizedRecord => {}
                _ => s.corrupt_ranges += 1,
            }
        }
        p.position = b.last;
        p.records += b.records;
        p.payload_bytes += b.payload_bytes;
        p.frame_bytes += b.frame_bytes;
        p.wire_bytes += b.body.len() as u64;
        p.batches += 1;
        p.gaps += b.gaps.len() as u64;
    }

    /// 413: halves the batch by records and delivers each part (each its own range and id).
    fn split(
        &mut self,
        b: &Built,
        opts: &PassOptions,
        waiter: &mut dyn Waiter,
        p: &mut Progress,
        progress: &mut dyn FnMut(&Progress),
    ) -> anyhow::Result<Result<(), PassOutcome>> {
        let half = BatchLimits {
            max_bytes: u64::MAX,
            max_records: (b.records / 2).max(1),
            max_gaps: u64::MAX,
        };
        while self.cursor.position < b.last {
            let part = self.builder.build(
                self.cursor.position,
                &half,
                Some(b.last),
                i64::MAX,
                &mut Notes(&self.cfg.dir, self.status.known_records_before()),
            )?;
            if part.is_empty() {
                self.cursor.position = part.last.max(self.cursor.position);
                self.cursor.inflight = None;
                self.persist()?;
                if part.end != End::Full {
                    break;
                }
                continue;
            }
            if let Err(stop) = self.deliver(part, opts, waiter, p, progress)? {
                return Ok(Err(stop));
            }
        }
        Ok(Ok(()))
    }

    /// Moves a refused batch to the dead-letter folder, reports its range as a gap (a
    /// gap-only batch over the same range, so under the same id), and moves on.
    fn dead_letter(
        &mut self,
        b: &Built,
        code: Option<u16>,
        why: &str,
        body: &str,
        reason: GapReason,
        p: &mut Progress,
    ) -> anyhow::Result<()> {
        let path = crate::deadletter::store(
            &self.updir,
            b,
            code,
            why,
            body,
            self.cfg.dead_letter_max_bytes,
        )
        .context("cannot write to the dead-letter folder")?;
        self.warnings.push(format!(
            "batch {} ({} records, {}..{}) moved to {}: {why}",
            b.id,
            b.records,
            b.first,
            b.last,
            path.display()
        ));
        self.status.dead_lettered_batches += 1;
        self.status.dead_lettered_records += b.records;
        p.dead_lettered += 1;
        let gap = Gap {
            reason,
            start: b.first,
            end: b.last,
            segments: 0,
            records: b.records,
            bytes: b.payload_bytes,
            detail: why.to_owned(),
        };
        let report = protocol::Batch {
            public_log_id: self.public,
            first: b.first,
            last: b.last,
            gaps: vec![gap],
            counters: self.counters(),
            ..protocol::Batch::default()
        };
        if let (Some(t), Ok(body)) = (
            self.transport.as_ref(),
            protocol::encode_batch(&report, self.cfg.zstd_level),
        ) {
            // One try: if even the gap report is refused, the dead-letter entry remains.
            if let Outcome::Status {
                verdict: Verdict::Acknowledged,
                ..
            } = t.send(&b.id, &body)
            {
                self.status.gaps_reported += 1;
                p.gaps += 1;
            }
        }
        self.cursor.position = b.last;
        self.cursor.inflight = None;
        p.position = b.last;
        self.persist()?;
        self.note_error(why);
        Ok(())
    }
}
