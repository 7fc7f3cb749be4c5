//! Reports from the workflow: the body of a `finalize-backup` request.
//!
//! Parsing is strict where a wrong value would corrupt the history (ids,
//! attempts, hashes) and lenient where refusing would lose information: an
//! over-long `error_text` is truncated and stored, never rejected, because a
//! failure report must not be lost to its size. Unknown members are ignored
//! so that newer workflows can send more than this version reads.

use crate::body;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::progress::{self, Canonical};
use serde::{Deserialize, Serialize};

/// `error_text` is cut to this many characters (the column allows 4000).
pub const MAX_ERROR_TEXT_CHARS: usize = 3900;
/// A `progress` object may serialize to at most this many bytes.
pub const MAX_PROGRESS_BYTES: usize = 1024;
/// S3 keys are at most 1024 bytes.
pub const MAX_S3_KEY_BYTES: usize = 1024;
/// JavaScript and PostgreSQL `bigint` meet safely below 2^53.
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// What the workflow says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Progress,
    Succeeded,
    Failed,
    Cancelled,
    /// The objects a success's answer listed were deleted (retention).
    Pruned,
}

impl Event {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Progress => "progress",
            Event::Succeeded => "succeeded",
            Event::Failed => "failed",
            Event::Cancelled => "cancelled",
            Event::Pruned => "pruned",
        }
    }

    /// Whether the event ends the run (`pruned` is about other runs).
    pub fn is_terminal(self) -> bool {
        matches!(self, Event::Succeeded | Event::Failed | Event::Cancelled)
    }
}

/// A validated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub event: Event,
    /// None only for a scheduled run's `started` registration.
    pub dispatch_id: Option<DispatchId>,
    pub workflow_run_id: u64,
    pub run_attempt: u32,
    pub s3_key: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub error_text: Option<String>,
    /// The JSON text of an object, validated: the one open value.
    pub progress: Option<String>,
    /// A succeeded event's verdict on the stored object, canonical JSON
    /// text of an object ([`crate::verification`]).
    pub verification: Option<String>,
    /// A `pruned` event's deleted keys: the canonical JSON text of an
    /// array, handed to SQL as it is (mark_pruned.sql matches its strings
    /// against successes' keys; anything else matches nothing).
    pub pruned: Option<String>,
}

crate::json_object! {
    /// The body as sent. Unknown members are ignored, so that newer
    /// workflows can send more than this version reads.
    struct WireReport {
        event: Event,
        dispatch_id: String,
        workflow_run_id: u64,
        run_attempt: u64,
        s3_key: String,
        size_bytes: u64,
        sha256: String,
        error_text: String,
        progress: Canonical,
        verification: Canonical,
        pruned: Canonical,
    }
}

/// The message of a member's 400.
fn rule(member: &str) -> &'static str {
    match member {
        "event" => "must be one of started, progress, succeeded, failed, cancelled, pruned",
        "dispatch_id" => "must be a UUID string",
        "workflow_run_id" => "must be an integer ≥ 1",
        "run_attempt" => "must be an integer from 1 to 10000",
        "size_bytes" => "must be an integer ≥ 0",
        "progress" => "must be an object",
        "verification" => crate::verification::RULE,
        "pruned" => "must be an array of S3 keys, at most 256 KB of JSON",
        _ => "must be a string",
    }
}

impl Report {
    /// Parses and validates a report body.
    ///
    /// # Errors
    /// [`Error::InvalidBody`] when the body is not a JSON object, and
    /// [`Error::InvalidField`] naming the first invalid field otherwise.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let wire: WireReport = body::parse(body, rule)?;
        let event = wire
            .event
            .ok_or_else(|| Error::field("event", rule("event")))?;

        let dispatch_id = wire
            .dispatch_id
            .map(|s| DispatchId::parse("dispatch_id", &s))
            .transpose()?;
        if dispatch_id.is_none() && event != Event::Started {
            return Err(Error::field(
                "dispatch_id",
                "is required (only a scheduled run's started event may omit it)",
            ));
        }

        let workflow_run_id = in_range("workflow_run_id", wire.workflow_run_id, 1)?;
        let run_attempt = u32::try_from(in_range("run_attempt", wire.run_attempt, 1)?)
            .ok()
            .filter(|a| *a <= 10_000)
            .ok_or_else(|| Error::field("run_attempt", rule("run_attempt")))?;

        let s3_key = wire.s3_key;
        if let Some(key) = &s3_key {
            if key.is_empty() || key.len() > MAX_S3_KEY_BYTES || key.chars().any(char::is_control) {
                return Err(Error::field(
                    "s3_key",
                    "must be 1 to 1024 bytes without control characters",
                ));
            }
        }
        let pruned = wire
            .pruned
            .map(|Canonical(text)| {
                (text.starts_with('[') && text.len() <= 256 * 1024 && !progress::has_nul(&text))
                    .then_some(text)
                    .ok_or_else(|| Error::field("pruned", rule("pruned")))
            })
            .transpose()?;
        let verification = wire
            .verification
            .map(|Canonical(text)| {
                crate::verification::check(&text)
                    .then_some(text)
                    .ok_or_else(|| Error::field("verification", rule("verification")))
            })
            .transpose()?;
        if event == Event::Succeeded && s3_key.is_none() {
            return Err(Error::field("s3_key", "is required for a succeeded event"));
        }

        let size_bytes = wire
            .size_bytes
            .map(|n| in_range("size_bytes", Some(n), 0))
            .transpose()?;

        let sha256 = wire
            .sha256
            .map(|s| s.to_ascii_lowercase())
            .map(|s| {
                if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(s)
                } else {
                    Err(Error::field("sha256", "must be 64 hexadecimal digits"))
                }
            })
            .transpose()?;

        // A failure report must never be lost to its text: NUL characters
        // (which PostgreSQL text cannot hold) are dropped, not refused.
        let error_text = wire
            .error_text
            .map(|t| truncate_error_text(&t.replace('\0', "")));

        let progress = match wire.progress {
            None => None,
            Some(Canonical(text)) => {
                if !text.starts_with('{') {
                    return Err(Error::field("progress", rule("progress")));
                }
                if text.len() > MAX_PROGRESS_BYTES {
                    return Err(Error::field(
                        "progress",
                        "must be at most 1024 bytes of JSON",
                    ));
                }
                // PostgreSQL jsonb refuses NUL, in a key or a value.
                if progress::has_nul(&text) {
                    return Err(Error::field("progress", "must not contain NUL characters"));
                }
                Some(text)
            }
        };

        Ok(Report {
            event,
            dispatch_id,
            workflow_run_id,
            run_attempt,
            s3_key,
            size_bytes,
            sha256,
            error_text,
            progress,
            verification,
            pruned,
        })
    }
}

/// A required integer between `min` and 2^53 - 1 (where JavaScript and
/// PostgreSQL `bigint` meet safely).
fn in_range(name: &str, value: Option<u64>, min: u64) -> Result<u64, Error> {
    let value = value.ok_or_else(|| Error::field(name, "is required"))?;
    if value < min || value > MAX_SAFE_INTEGER {
        return Err(Error::field(name, rule(name)));
    }
    Ok(value)
}

/// Cuts `text` to [`MAX_ERROR_TEXT_CHARS`] characters, keeping the head and
/// the tail: the step name is at the start and the real error at the end of
/// a log tail.
pub fn truncate_error_text(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_ERROR_TEXT_CHARS {
        return text.to_string();
    }
    const MARK: &str = "\n…[truncated]…\n";
    let keep = MAX_ERROR_TEXT_CHARS - MARK.chars().count();
    let head: String = text.chars().take(keep / 2).collect();
    let tail: String = text.chars().skip(count - (keep - keep / 2)).collect();
    format!("{head}{MARK}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

    fn parse(v: serde_json::Value) -> Result<Report, Error> {
        Report::parse(v.to_string().as_bytes())
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidField { field, .. } => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_succeeded_report() {
        let r = parse(json!({
            "event": "succeeded", "dispatch_id": ID, "workflow_run_id": 42, "run_attempt": 1,
            "s3_key": "backups/x.dump", "size_bytes": 10, "sha256": "AB".repeat(32), "extra": true
        }))
        .unwrap();
        assert_eq!(r.event, Event::Succeeded);
        assert_eq!(r.dispatch_id.unwrap().to_string(), ID);
        assert_eq!(r.sha256.unwrap(), "ab".repeat(32));
        assert_eq!(r.size_bytes, Some(10));
    }

    #[test]
    fn a_dispatch_id_that_is_not_a_uuid_is_rejected_by_name() {
        for bad in [json!("12345"), json!(12345), json!(""), json!("run-99")] {
            let err = parse(json!({"event": "started", "dispatch_id": bad, "workflow_run_id": 1, "run_attempt": 1})).unwrap_err();
            assert_eq!(field_of(err), "dispatch_id");
        }
    }

    #[test]
    fn only_started_may_omit_the_dispatch_id() {
        assert!(
            parse(json!({"event": "started", "workflow_run_id": 1, "run_attempt": 1}))
                .unwrap()
                .dispatch_id
                .is_none()
        );
        for event in ["progress", "succeeded", "failed", "cancelled"] {
            let err = parse(
                json!({"event": event, "workflow_run_id": 1, "run_attempt": 1, "s3_key": "k"}),
            )
            .unwrap_err();
            assert_eq!(field_of(err), "dispatch_id", "{event}");
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        let base =
            json!({"event": "failed", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1});
        let cases = [
            ("event", json!("exploded")),
            ("workflow_run_id", json!(0)),
            ("workflow_run_id", json!("42")),
            ("workflow_run_id", json!(1.5)),
            ("run_attempt", json!(0)),
            ("run_attempt", json!(-1)),
            ("run_attempt", json!(10_001)),
            ("size_bytes", json!(-5)),
            ("sha256", json!("abc")),
            ("sha256", json!("z".repeat(64))),
            ("s3_key", json!("")),
            ("s3_key", json!("a\nb")),
            ("error_text", json!(12)),
            ("progress", json!("dumping")),
            ("progress", json!({"blob": "x".repeat(2000)})),
        ];
        for (field, value) in cases {
            let mut body = base.clone();
            body[field] = value.clone();
            assert_eq!(
                field_of(parse(body).unwrap_err()),
                field,
                "{field} = {value}"
            );
        }
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("run_attempt");
        assert_eq!(field_of(parse(missing).unwrap_err()), "run_attempt");
    }

    #[test]
    fn nul_characters_are_dropped_from_error_text_and_refused_in_progress() {
        let r = parse(json!({"event": "failed", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1, "error_text": "pg_dump:\u{0} broken\u{0}"})).unwrap();
        assert_eq!(r.error_text.as_deref(), Some("pg_dump: broken"));
        for progress in [
            json!({"phase": "du\u{0}mp"}),
            json!({"a\u{0}": 1}),
            json!({"x": ["\u{0}"]}),
        ] {
            let err = parse(json!({"event": "progress", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1, "progress": progress})).unwrap_err();
            assert_eq!(
                err,
                Error::field("progress", "must not contain NUL characters")
            );
        }
        let err = parse(json!({"event": "succeeded", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1, "s3_key": "a\u{0}b"})).unwrap_err();
        assert_eq!(field_of(err), "s3_key");
    }

    #[test]
    fn succeeded_requires_an_s3_key() {
        let err = parse(json!({"event": "succeeded", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1})).unwrap_err();
        assert_eq!(field_of(err), "s3_key");
    }

    #[test]
    fn non_object_bodies_are_invalid_bodies() {
        for body in [&b"not json"[..], b"[]", b"null", b"\"x\"", b""] {
            assert_eq!(Report::parse(body).unwrap_err().code(), "invalid_body");
        }
    }

    #[test]
    fn an_over_long_error_text_is_truncated_not_rejected() {
        let long = format!(
            "step dump failed\n{}\nFATAL: the real cause",
            "é".repeat(10_000)
        );
        let r = parse(json!({"event": "failed", "dispatch_id": ID, "workflow_run_id": 1, "run_attempt": 1, "error_text": long})).unwrap();
        let text = r.error_text.unwrap();
        assert_eq!(text.chars().count(), MAX_ERROR_TEXT_CHARS);
        assert!(text.starts_with("step dump failed"));
        assert!(text.ends_with("FATAL: the real cause"));
        assert!(text.contains("[truncated]"));
    }
}
