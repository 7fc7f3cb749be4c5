//! Retention: which stored objects a success makes deletable.
//!
//! The workflow deletes objects but never chooses them: `finalize-backup`'s
//! answer to a `succeeded` report lists the keys, the workflow deletes them
//! and reports `pruned`, and the rows get `pruned_at`. A key whose delete
//! failed stays unpruned and is listed again after the next success.
//!
//! The rule, as `sql/retention.sql` applies it to `backup_history`: with
//! `retention_days` set (unset, the default, never prunes), the successes
//! that finished more than that many days ago, beyond the newest
//! `retention_keep`, in the folder of the success just reported and named
//! for their own run, at most [`MAX_KEYS`] at once. The core decides when a
//! list is due (a successful run's `succeeded` report) and where ([`folder`]);
//! the set operation runs in SQL, next to the rows, because reading every
//! stored run into the module to filter it cost more WebAssembly than the
//! rest of the feature.

/// At most this many keys in one answer; the rest follow next time.
pub const MAX_KEYS: u32 = 100;

/// The folder of `key`, with its trailing `/` (empty for a key at the
/// bucket's root): only objects directly in it are ever listed, so a
/// backup under another prefix, or a deeper one, is never touched.
pub fn folder(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_is_the_key_up_to_its_last_slash() {
        assert_eq!(
            folder("prod/nightly/20261130T000000Z_x.dump"),
            "prod/nightly/"
        );
        assert_eq!(folder("x.dump"), "");
        assert_eq!(folder("a/"), "a/");
    }
}
