//! The workflow's verdict on the object it stored: read back from S3 and
//! checked (`BACKUP_VERIFY`, README "Verification"), reported with the
//! `succeeded` event as `{mode, ok, tables, rows, mismatches, error}`.
//!
//! The core keeps it as the canonical JSON text the report brought, like
//! `progress`: it is shown, not computed with. It is checked on that text
//! rather than deserialized (a deserializer for it cost the module more than
//! the rest of the feature); the migration's constraint checks the same
//! shape on the stored object, as the last line of defence.

/// The message of the member's 400.
pub const RULE: &str =
    "must be an object of at most 8192 bytes with mode (list or restore) and ok (a boolean)";

/// The longest verdict stored: a mismatch list past this says enough.
pub const MAX_BYTES: usize = 8192;

/// Whether canonical JSON text is a verdict the core stores: an object
/// within [`MAX_BYTES`], with a known `mode` and a boolean `ok`, and no NUL
/// (which PostgreSQL jsonb refuses). In canonical text a member is written
/// exactly `"name":value`, and a quote inside a string is escaped, so these
/// patterns can only be members.
pub fn check(canonical: &str) -> bool {
    let has = |p: &str| canonical.contains(p);
    canonical.starts_with('{')
        && canonical.len() <= MAX_BYTES
        && !crate::progress::has_nul(canonical)
        && (has(r#""mode":"list""#) || has(r#""mode":"restore""#))
        && (has(r#""ok":true"#) || has(r#""ok":false"#))
}

/// Whether a verdict (canonical JSON text, as [`check`] accepts) says the
/// check failed: what raises a `verification_failed` alert.
pub fn failed(canonical: &str) -> bool {
    canonical.contains(r#""ok":false"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_needs_a_known_mode_and_a_boolean_ok() {
        assert!(check(
            r#"{"mismatches":[],"mode":"restore","ok":true,"rows":2000,"tables":2}"#
        ));
        assert!(check(r#"{"mode":"list","ok":false}"#));
        for bad in [
            r#"{"mode":"maybe","ok":true}"#,
            r#"{"mode":"list","ok":"yes"}"#,
            r#"{"ok":true}"#,
            r#"{"error":"\"mode\":\"list\"","ok":true}"#,
            r#"[{"mode":"list","ok":true}]"#,
            r#"{"error":"\u0000","mode":"list","ok":false}"#,
        ] {
            assert!(!check(bad), "{bad}");
        }
        let long = format!(
            r#"{{"error":"{}","mode":"list","ok":false}}"#,
            "x".repeat(MAX_BYTES)
        );
        assert!(!check(&long));
    }
}
