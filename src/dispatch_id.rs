//! The dispatch id: the one identity of a backup run.
//!
//! It is issued here and nowhere else: by `trigger-backup` before the
//! workflow is dispatched, or by `finalize-backup` when a scheduled run
//! registers. It is a UUIDv7, so ids sort by creation time. There is
//! deliberately no conversion from a GitHub run id: a report without a valid
//! dispatch id is rejected, never matched by guesswork.

use crate::error::Error;
use std::fmt;
use uuid::Uuid;

/// A validated dispatch id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DispatchId(Uuid);

impl DispatchId {
    /// Issues a new UUIDv7 from the current time and 10 random bytes.
    pub fn issue(unix_ms: u64, random: [u8; 10]) -> Self {
        DispatchId(uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid())
    }

    /// Parses a dispatch id as sent by a client or the workflow.
    ///
    /// Accepts the hyphenated form of any UUID version (ids issued before a
    /// version change must still match), rejects the nil UUID.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming `field` when `s` is not a UUID.
    pub fn parse(field: &str, s: &str) -> Result<Self, Error> {
        if s.len() != 36 {
            return Err(Error::field(
                field,
                "must be a UUID (8-4-4-4-12 hex digits)",
            ));
        }
        let uuid = Uuid::try_parse(s)
            .map_err(|_| Error::field(field, "must be a UUID (8-4-4-4-12 hex digits)"))?;
        if uuid.is_nil() {
            return Err(Error::field(field, "must not be the nil UUID"));
        }
        Ok(DispatchId(uuid))
    }

    /// The millisecond timestamp of a UUIDv7 id (None for other versions).
    pub fn unix_ms(&self) -> Option<u64> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }
}

/// Written as its hyphenated text, in responses and rows alike.
impl serde::Serialize for DispatchId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from its text with the same rules as [`DispatchId::parse`].
impl<'de> serde::Deserialize<'de> for DispatchId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DispatchId::parse("dispatch_id", &text)
            .map_err(|_| serde::de::Error::custom("not a dispatch id (a non-nil UUID)"))
    }
}

impl fmt::Display for DispatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_are_version_7_and_sort_by_time() {
        let a = DispatchId::issue(1_764_000_000_000, [9; 10]);
        let b = DispatchId::issue(1_764_000_000_001, [0; 10]);
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b, "a later id must sort after an earlier one");
        assert!(a.to_string() < b.to_string(), "also as text");
        assert_eq!(a.unix_ms(), Some(1_764_000_000_000));
    }

    #[test]
    fn parse_round_trips_an_issued_id() {
        let a = DispatchId::issue(1_764_000_000_000, [1; 10]);
        assert_eq!(DispatchId::parse("dispatch_id", &a.to_string()), Ok(a));
    }

    #[test]
    fn parse_rejects_everything_that_is_not_a_uuid() {
        for bad in [
            "",
            "123456789",
            "not-a-uuid",
            "0193a1b2000070008000000000000000",
            "{0193a1b2-0000-7000-8000-000000000000}",
            "00000000-0000-0000-0000-000000000000",
            "0193a1b2-0000-7000-8000-00000000000g",
        ] {
            let err = DispatchId::parse("dispatch_id", bad).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{bad:?}");
            assert!(err.public_message().starts_with("dispatch_id:"), "{bad:?}");
        }
    }

    #[test]
    fn a_github_run_id_is_never_a_dispatch_id() {
        assert!(DispatchId::parse("dispatch_id", "12345678901").is_err());
    }
}
