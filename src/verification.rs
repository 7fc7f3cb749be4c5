//! The workflow's verdict on the object it stored: read back from S3 and
//! checked (`BACKUP_VERIFY`, README "Verification"), reported with the
//! `succeeded` event as `{mode, ok, tables, rows, mismatches, error}`.
//!
//! The core keeps it as the canonical JSON text the report brought, like
//! `progress`: it is shown, not computed with. Only its two required
//! members are read (a deserializer for the whole verdict cost the module
//! more than the rest of the feature); the migrations' constraints check
//! the same shape on the stored object, as the last line of defence.

/// The message of the member's 400.
pub const RULE: &str =
    "must be an object of at most 8192 bytes with mode (list or restore) and ok (a boolean)";

/// The longest verdict stored: a mismatch list past this says enough.
pub const MAX_BYTES: usize = 8192;

/// The two members every verdict has, read from the top level only: a
/// `"mode":"list"` nested in `mismatches` or `error` is not the verdict's
/// mode (the migration's constraint reads the top level, and a verdict the
/// core took and the database then refused was a 500).
#[derive(serde::Deserialize)]
struct Members {
    mode: Option<String>,
    ok: Option<bool>,
}

/// The top-level `mode` and `ok`, or `None` when either is there with
/// another type (`"ok":"yes"`).
fn members(canonical: &str) -> Option<Members> {
    serde_json::from_str(canonical).ok()
}

/// Whether canonical JSON text is a verdict the core stores: an object
/// within [`MAX_BYTES`], with a known `mode` and a boolean `ok` among its
/// own members, and no NUL (which PostgreSQL jsonb refuses).
pub fn check(canonical: &str) -> bool {
    canonical.starts_with('{')
        && canonical.len() <= MAX_BYTES
        && !crate::progress::has_nul(canonical)
        && members(canonical).is_some_and(|m| {
            m.ok.is_some() && matches!(m.mode.as_deref(), Some("list" | "restore"))
        })
}

/// Whether a verdict (canonical JSON text, as [`check`] accepts) says the
/// check failed: what raises a `verification_failed` alert, and what
/// `backup-status` shows as `verification_failed` (the top-level `ok`).
pub fn failed(canonical: &str) -> bool {
    members(canonical).is_some_and(|m| m.ok == Some(false))
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

    #[test]
    fn only_the_verdicts_own_mode_and_ok_count_not_nested_ones() {
        // What the database's constraint would refuse (the core took both
        // once, and the success's listing then failed with a 500).
        for nested in [
            r#"{"mode":"list","note":{"ok":true},"ok":"yes"}"#,
            r#"{"error":{"mode":"list","ok":true},"mode":5}"#,
            r#"{"x":{"mode":"list","ok":true}}"#,
            r#"{"mismatches":[{"mode":"restore","ok":false}],"ok":true}"#,
        ] {
            assert!(!check(nested), "{nested}");
        }
        assert!(check(
            r#"{"mismatches":[{"ok":"n/a"}],"mode":"list","ok":true}"#
        ));
    }

    #[test]
    fn a_verdict_failed_only_when_its_own_ok_is_false() {
        assert!(failed(r#"{"mode":"restore","ok":false}"#));
        assert!(!failed(r#"{"mode":"restore","ok":true}"#));
        assert!(!failed(
            r#"{"mismatches":[{"ok":false}],"mode":"restore","ok":true}"#
        ));
    }
}
