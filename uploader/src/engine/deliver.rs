//! Delivering one batch: send, classify the answer, retry with backoff, honour
//! `Retry-After`, split on 413, dead-letter permanent refusals (PROTOCOL.md section 5).
use std::time::Instant;

use anyhow::Context as _;

use super::{
    crash_point_for_test, report, FailedAttempt, Notes, PassOptions, PassOutcome, Progress,
    Uploader, Waiter,
};
use crate::batch::{BatchLimits, Built, End};
use crate::protocol::{self, Gap, GapReason, Verdict};
use crate::state::now_ms;
use crate::transport::{redact, Outcome};

/// The longest wait for a server's answer to the scheme probe (a TLS or HTTP server answers a
/// ClientHello within one round trip).
const SCHEME_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Uploader {
    /// Sends one batch until it is acknowledged, split, or dead-lettered, and then the gap
    /// report of a dead-lettered batch until that is acknowledged: the cursor passes the
    /// range only once the server knows what is in it. The inner `Err` ends the pass (a
    /// pending report stays on disk and is sent first by the next pass).
    pub(super) fn deliver(
        &mut self,
        b: Built,
        opts: &PassOptions,
        waiter: &mut dyn Waiter,
        p: &mut Progress,
        progress: &mut dyn FnMut(&Progress),
    ) -> anyhow::Result<Result<(), PassOutcome>> {
        let mut next = Some(b);
        while let Some(b) = next.take() {
            let was_report = self.is_report(&b);
            if let Err(stop) = self.deliver_one(b, opts, waiter, p, progress)? {
                return Ok(Err(stop));
            }
            if was_report && self.report.is_none() {
                // The cursor is past the range (persisted): the report is done with.
                report::remove(&self.updir).with_context(|| {
                    format!(
                        "cannot remove {}",
                        self.updir.join(report::GAP_REPORT_FILE).display()
                    )
                })?;
            }
            next = self
                .report
                .clone()
                .filter(|r| self.cursor.inflight == Some((r.first, r.last)));
        }
        Ok(Ok(()))
    }

    /// The pending report `r` was acknowledged or given up: the dead-lettered batch it
    /// reports is counted now, persisted with the cursor that passes its range (so a crash
    /// before that resends the report and counts the batch once).
    fn report_done(&mut self, r: &Built) {
        self.report = None;
        let s = &mut self.status;
        for g in &r.gaps {
            if matches!(
                g.reason,
                GapReason::DeadLettered | GapReason::OversizedRecord
            ) {
                s.dead_lettered_batches += 1;
                s.dead_lettered_records += g.records;
            }
        }
    }

    /// Whether `b` is the pending gap report (it has the id of the batch it reports).
    fn is_report(&self, b: &Built) -> bool {
        b.records == 0 && self.report.as_ref().is_some_and(|r| r.id == b.id)
    }

    fn deliver_one(
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
            let outcome = t.send_until(&b.id, &b.body, opts.deadline, &mut || {
                waiter.stop_requested()
            });
            attempts += 1;
            // The server named the time to come back (`Retry-After`): that wait is honoured
            // whatever happens (PROTOCOL.md section 5). Any other wait is our own backoff.
            let asked = matches!(
                outcome,
                Outcome::Status {
                    verdict: Verdict::RetryAfter,
                    retry_after: Some(_),
                    ..
                }
            );
            let (wait, msg) = match outcome {
                Outcome::Status {
                    verdict: Verdict::Acknowledged,
                    code,
                    partial,
                    ..
                } => {
                    crash_point_for_test("after_ack");
                    match partial {
                        // OTLP partial success: the receiver kept the rest and must not get
                        // the batch again; what it rejected is counted and kept.
                        Some(ps) if ps.rejected_log_records > 0 => {
                            self.partially_rejected(&b, code, &ps)?
                        }
                        // Nothing rejected but a message: a warning (OTLP specification).
                        Some(ps) => self.warnings.push(format!(
                            "batch {}: the OTLP receiver warns: {}",
                            b.id, ps.error_message
                        )),
                        None => {}
                    }
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
                    let otlp = self.builder.format() != crate::batch::BodyFormat::Seglog;
                    let hint = match code {
                        404 if otlp => {
                            "check [upload] url: the full OTLP/HTTP logs endpoint, usually \
                             ending in /v1/logs"
                        }
                        415 if otlp => {
                            "the receiver does not take this body: try [upload] compression = \
                             \"none\""
                        }
                        404 => "check [upload] url",
                        401 | 403 => "check [upload] token",
                        _ => "the server speaks another protocol version: upgrade one side",
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
                    // OTLP has no confirmation header: a 400 is permanent by the spec.
                    let permanent = self.builder.format() != crate::batch::BodyFormat::Seglog;
                    if permanent || refusals >= self.cfg.dead_letter_after {
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
                    let w = self.backoff.wait_after(retry_after);
                    (
                        w,
                        format!("HTTP {code}, retry after {}", humantime::format_duration(w)),
                    )
                }
                Outcome::Status {
                    verdict: Verdict::Unconfirmed,
                    code,
                    body,
                    ..
                } => (
                    self.backoff.next_delay(),
                    format!(
                        "HTTP {code} without confirmation that the whole body arrived \
                         (PROTOCOL.md section 5), resending: {}",
                        body.trim()
                    ),
                ),
                Outcome::Status { code, body, .. } => (
                    self.backoff.next_delay(),
                    format!("HTTP {code}: {}", body.trim()),
                ),
                Outcome::Transport(e) => (self.backoff.next_delay(), e),
                Outcome::Broken(e) => {
                    // https:// at a plain-HTTP server or the reverse: no retry can fix that.
                    if let Some(m) = self.check_scheme_once(opts) {
                        return Ok(Err(PassOutcome::Configuration(m)));
                    }
                    (self.backoff.next_delay(), e)
                }
            };
            p.retries += 1;
            self.status.last_error = Some(msg.clone());
            self.status.last_error_ms = Some(now_ms());
            self.status.last_error_pass = Some(self.status.passes);
            let exhausted = opts.max_attempts.is_some_and(|m| attempts >= m);
            let left = opts
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let wait = left.map_or(wait, |l| wait.min(l));
            waiter.attempt_failed(&FailedAttempt {
                attempt: attempts,
                max_attempts: opts.max_attempts,
                reason: msg.clone(),
                retry_in: (!exhausted && left.is_none_or(|l| !l.is_zero())).then_some(wait),
            });
            if exhausted {
                return Ok(Err(PassOutcome::Failed(format!(
                    "batch {} not delivered after {attempts} attempts; last: {msg}",
                    b.id
                ))));
            }
            // `status` shows when the next attempt comes (and whether a flush can hurry it).
            self.status.next_attempt_ms =
                Some(now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)));
            self.status.next_attempt_asked = asked;
            self.save_status();
            let stopped = if asked {
                waiter.wait(wait)
            } else {
                waiter.wait_backoff(wait)
            };
            self.status.next_attempt_ms = None;
            if stopped {
                return Ok(Err(PassOutcome::Stopped));
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Err(PassOutcome::Failed(format!(
                    "deadline passed; last error: {msg}"
                ))));
            }
        }
    }

    /// After the first broken exchange of a pass: whether the server speaks another scheme
    /// than the URL's (`crate::scheme`), as the configuration error to stop with.
    fn check_scheme_once(&mut self, opts: &PassOptions) -> Option<String> {
        if std::mem::replace(&mut self.scheme_checked, true) {
            return None;
        }
        let mut limit = self.cfg.connect_timeout.min(SCHEME_PROBE_TIMEOUT);
        if let Some(d) = opts.deadline {
            limit = limit.min(d.saturating_duration_since(Instant::now()));
        }
        self.transport.as_ref()?.scheme_mismatch(limit)
    }

    fn acknowledged(&mut self, b: &Built, p: &mut Progress) {
        if self.is_report(b) {
            self.report_done(b);
        }
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
            match &g.reason {
                GapReason::Trimmed => s.missing_segments += g.segments,
                GapReason::UndecodableRecord => s.undecodable_records += 1,
                r if super::is_corrupt_range(r) => s.corrupt_ranges += 1,
                _ => {}
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
                &mut Notes(&self.status, &self.cfg.dir),
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

    /// An OTLP receiver took batch `b` but rejected `ps.rejected_log_records` of its records:
    /// the batch is kept in the dead-letter folder with the server's message (which records
    /// were rejected is not said by OTLP), and the records are counted as dead-lettered.
    fn partially_rejected(
        &mut self,
        b: &Built,
        code: u16,
        ps: &otlp::PartialSuccess,
    ) -> anyhow::Result<()> {
        let why = format!(
            "the OTLP receiver accepted the batch but rejected {} of its {} records: {}",
            ps.rejected_log_records,
            b.records,
            self.transport
                .as_ref()
                .map_or_else(|| ps.error_message.clone(), |t| t.scrub(&ps.error_message))
        );
        let path = crate::deadletter::store(
            &self.updir,
            b,
            Some(code),
            &why,
            &ps.error_message,
            self.cfg.dead_letter_max_bytes,
        )
        .context("cannot write to the dead-letter folder")?;
        self.warnings
            .push(format!("batch {} kept in {}: {why}", b.id, path.display()));
        self.status.dead_lettered_batches += 1;
        self.status.dead_lettered_records += ps.rejected_log_records;
        self.note_error(&why);
        Ok(())
    }

    /// Moves a refused batch to the dead-letter folder and makes its range a pending gap
    /// report (a gap-only batch over the same range, so under the same id, which the server
    /// never stored), persisted before it is sent: [`Uploader::deliver`] sends it next, and
    /// the cursor moves once it is acknowledged. A report refused in turn is given up on (the
    /// dead-letter entry remains) so the queue moves on.
    fn dead_letter(
        &mut self,
        b: &Built,
        code: Option<u16>,
        why: &str,
        body: &str,
        reason: GapReason,
        p: &mut Progress,
    ) -> anyhow::Result<()> {
        if self.is_report(b) {
            self.warnings.push(format!(
                "the gap report of batch {} ({}..{}) was refused: {why}; the batch stays in \
                 the dead-letter folder",
                b.id, b.first, b.last
            ));
            self.report_done(b);
            self.cursor.position = b.last;
            self.cursor.inflight = None;
            p.position = b.last;
            self.persist()?;
            self.note_error(why);
            return Ok(());
        }
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
        p.dead_lettered += 1;
        // The report replaces the whole batch: what its own gaps reported lost is lost in
        // this range too, and would otherwise never reach the server.
        let (mut records, mut bytes, mut segments) = (b.records, b.payload_bytes, 0u64);
        for g in &b.gaps {
            records = records.saturating_add(g.records);
            bytes = bytes.saturating_add(g.bytes);
            segments = segments.saturating_add(g.segments);
        }
        let detail = if b.gaps.is_empty() {
            why.to_owned()
        } else {
            format!(
                "{why}; {} records and {} gap(s) in the range",
                b.records,
                b.gaps.len()
            )
        };
        let gap = Gap {
            reason,
            start: b.first,
            end: b.last,
            segments,
            records,
            bytes,
            detail,
        };
        // The status counts the batch once its report is done with (`report_done`), with the
        // cursor; the report's counters already include it.
        let mut counters = self.counters();
        for (k, v) in &mut counters {
            match k.as_str() {
                "uploader.dead_lettered_batches" => *v = v.saturating_add(1),
                "uploader.dead_lettered_records" => *v = v.saturating_add(gap.records),
                _ => {}
            }
        }
        let batch = protocol::Batch {
            public_log_id: self.public,
            first: b.first,
            last: b.last,
            gaps: vec![gap.clone()],
            counters,
            ..protocol::Batch::default()
        };
        // Saved in seglog's encoding (report::load re-encodes it for the wire).
        let mut report = Built {
            id: b.id,
            first: b.first,
            last: b.last,
            body: protocol::encode_batch(&batch, self.cfg.zstd_level)
                .context("cannot encode the gap report")?,
            raw_len: 0,
            records: 0,
            payload_bytes: 0,
            frame_bytes: 0,
            gaps: vec![gap],
            end: b.end,
            oldest_wall_ms: None,
            last_records_before: b.last_records_before,
        };
        report::save(&self.updir, &report).with_context(|| {
            format!(
                "cannot write {}",
                self.updir.join(report::GAP_REPORT_FILE).display()
            )
        })?;
        crash_point_for_test("report_saved");
        if self.builder.format() != crate::batch::BodyFormat::Seglog {
            report.body =
                crate::batch::encode_body(&batch, self.builder.format(), self.cfg.zstd_level)
                    .context("cannot encode the gap report")?;
        }
        self.report = Some(report);
        self.note_error(why);
        Ok(())
    }
}
