//! [`RecordBuilder`]: one record to write, before it is validated and appended.
use crate::record::{Classification, EventId, Severity, ValidationError};

/// One record to write. Cheap to build and to clone (the classification is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBuilder<'a> {
    pub(super) classification: Classification,
    pub(super) severity: Severity,
    pub(super) payload: &'a [u8],
    pub(super) event_id: Option<EventId>,
    /// The record's own wall time (ms since the epoch) when it is not "now": an event
    /// collected later keeps the time it happened.
    pub(super) wall_ms: Option<i64>,
}

impl RecordBuilder<'static> {
    /// A record with an empty payload.
    pub fn new(classification: Classification, severity: Severity) -> Self {
        RecordBuilder {
            classification,
            severity,
            payload: &[],
            event_id: None,
            wall_ms: None,
        }
    }

    /// Validates `classification` and `severity` (the error names the field).
    pub fn parse(classification: &str, severity: i64) -> Result<Self, ValidationError> {
        Ok(Self::new(
            Classification::new(classification)?,
            Severity::new(severity)?,
        ))
    }
}

impl<'a> RecordBuilder<'a> {
    /// Sets the payload.
    pub fn payload<'b>(self, payload: &'b [u8]) -> RecordBuilder<'b> {
        RecordBuilder {
            classification: self.classification,
            severity: self.severity,
            payload,
            event_id: self.event_id,
            wall_ms: self.wall_ms,
        }
    }
    /// Sets the event id.
    pub fn event_id(mut self, id: EventId) -> Self {
        self.event_id = Some(id);
        self
    }
    /// Sets the record's wall time (ms since the Unix epoch) instead of the time of the
    /// append: for events that happened before they were collected.
    pub fn wall_ms(mut self, wall_ms: i64) -> Self {
        self.wall_ms = Some(wall_ms);
        self
    }
    /// The classification.
    pub fn classification(&self) -> &Classification {
        &self.classification
    }
    /// The severity.
    pub fn severity(&self) -> Severity {
        self.severity
    }
    /// The payload.
    pub fn payload_bytes(&self) -> &'a [u8] {
        self.payload
    }
    /// The event id.
    pub fn event(&self) -> Option<EventId> {
        self.event_id
    }
}
