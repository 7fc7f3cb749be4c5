//! Download links: presigned S3 GET URLs (AWS Signature Version 4, the
//! credentials in the query string, as the S3 API reference's
//! "Authenticating Requests: Using Query Parameters" describes).
//!
//! Signed here, synchronously, with the HMAC-SHA256 the module already
//! carries for webhook signatures: four HMACs and one SHA-256 over short
//! strings, no host call and no new crate. The key that signs should be
//! read-only (`s3:GetObject` on the backup prefix): a link can do no more
//! than the key behind it, and this key lives in the functions' secrets,
//! not in GitHub with the workflow's write key.

use crate::run::{Run, Status};
use crate::time::iso8601;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How long a link works, in seconds: long enough to start a download,
/// short enough that a link copied out of a page or a log is soon useless.
/// (S3 checks the expiry when the GET starts; a started download finishes.)
pub const EXPIRES_SECONDS: u32 = 300;

/// The region when `BACKUP_S3_REGION` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// What signs download links: `BACKUP_S3_*` ([`crate::config::s3_download`]).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Download {
    pub bucket: String,
    /// `BACKUP_S3_ENDPOINT_URL`, for an S3-compatible store (MinIO, R2,
    /// moto): addressed path-style. `None` is AWS itself.
    pub endpoint: Option<Endpoint>,
    /// The signing region; `auto` for R2.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Download")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// An S3-compatible endpoint, `http(s)://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    /// Lowercase, without a default port: exactly the `Host` header a
    /// client will send, which the signature covers.
    host: String,
    /// A base path without a trailing slash, usually empty.
    base: String,
}

impl Endpoint {
    /// Parses an endpoint URL; `None` for anything but `http(s)://authority`
    /// with an optional path (no credentials, query or fragment).
    pub fn parse(url: &str) -> Option<Endpoint> {
        let scheme = |prefix: &str| {
            url.get(..prefix.len())
                .filter(|s| s.eq_ignore_ascii_case(prefix))
                .map(|_| &url[prefix.len()..])
        };
        let (https, rest) = match scheme("https://") {
            Some(rest) => (true, rest),
            None => (false, scheme("http://")?),
        };
        let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let valid_host = |h: &str| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        let valid_path = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
        };
        if !valid_host(authority) || !valid_path(base) {
            return None;
        }
        let authority = authority.to_ascii_lowercase();
        let default_port = if https { ":443" } else { ":80" };
        let host = authority
            .strip_suffix(default_port)
            .unwrap_or(&authority)
            .to_string();
        Some(Endpoint {
            https,
            host,
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

impl S3Download {
    /// The link for `run`'s object, valid [`EXPIRES_SECONDS`] from `now_ms`:
    /// only a successful run whose object retention has not deleted.
    /// Running and failed runs have no complete object to hand out.
    pub fn link(&self, run: &Run, now_ms: i64) -> Option<String> {
        if run.status != Status::Success || run.pruned_at.is_some() {
            return None;
        }
        self.presign_get(run.s3_key.as_deref()?, now_ms)
    }

    /// A presigned GET of `key`, valid [`EXPIRES_SECONDS`] from `now_ms`.
    /// `None` for a key no client could fetch as signed: empty, or with a
    /// `.` or `..` segment, which URL parsers resolve before sending, so
    /// the path S3 sees would not be the one signed.
    pub fn presign_get(&self, key: &str, now_ms: i64) -> Option<String> {
        if key.is_empty() || key.split('/').any(|s| s == "." || s == "..") {
            return None;
        }
        let key_path = encode(key, false);
        let bucket = encode(&self.bucket, true);
        let (https, host, path) = match &self.endpoint {
            Some(e) => (
                e.https,
                e.host.clone(),
                format!("{}/{bucket}/{key_path}", e.base),
            ),
            // Virtual-hosted, as AWS prefers, when the bucket is a plain DNS
            // label: a dot would not match the wildcard certificate, and a
            // legacy name with capitals or `_` is no host name (a client would
            // lowercase it, and the signed host would differ). Those go in
            // the path.
            None if self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                (
                    true,
                    format!("{bucket}.s3.{}.amazonaws.com", self.region),
                    format!("/{key_path}"),
                )
            }
            None => (
                true,
                format!("s3.{}.amazonaws.com", self.region),
                format!("/{bucket}/{key_path}"),
            ),
        };
        let query = sign_query(
            &Signer {
                access_key_id: &self.access_key_id,
                secret_access_key: &self.secret_access_key,
                region: &self.region,
            },
            &host,
            &path,
            &amz_date(now_ms),
            EXPIRES_SECONDS,
        );
        let scheme = if https { "https" } else { "http" };
        Some(format!("{scheme}://{host}{path}?{query}"))
    }
}

/// The credentials and scope of one signature.
struct Signer<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    region: &'a str,
}

/// The query string of a presigned GET of `path` (already URI-encoded) on
/// `host` at `amz_date` (`YYYYMMDDTHHMMSSZ`), signature last.
fn sign_query(signer: &Signer, host: &str, path: &str, amz_date: &str, expires: u32) -> String {
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/s3/aws4_request", signer.region);
    // Sorted by name, as the canonical request requires.
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}\
         &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
        encode(&format!("{}/{scope}", signer.access_key_id), true),
    );
    let canonical = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", signer.secret_access_key).as_bytes(), date);
    for part in [signer.region, "s3", "aws4_request"] {
        key = hmac(&key, part);
    }
    format!("{query}&X-Amz-Signature={}", hex(&hmac(&key, &to_sign)))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// SigV4's URI encoding: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX`
/// (uppercase hex), and `/` too when `slash` (a query value; in a key's
/// path the slashes stay).
fn encode(s: &str, slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (b == b'/' && !slash) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for unix milliseconds.
fn amz_date(ms: i64) -> String {
    // 2013-05-24T00:00:00.000Z -> 20130524T000000Z
    iso8601(ms)
        .chars()
        .take(19)
        .filter(|c| !matches!(c, '-' | ':'))
        .chain(['Z'])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{s3_download, Env};
    use crate::error::Error;
    use std::collections::HashMap;

    /// 2013-05-24T00:00:00Z, the time of AWS's examples.
    const EXAMPLE_MS: i64 = 1_369_353_600_000;

    fn aws_example() -> S3Download {
        S3Download {
            bucket: "examplebucket".into(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn moto(bucket: &str) -> S3Download {
        S3Download {
            bucket: bucket.into(),
            endpoint: Endpoint::parse("http://127.0.0.1:5000"),
            ..aws_example()
        }
    }

    #[test]
    fn the_signature_is_awss_documented_presigned_url_example() {
        // S3 API reference, "Authenticating Requests: Using Query
        // Parameters", the example: GET examplebucket/test.txt at
        // 20130524T000000Z for 86400 s, signed with the example key.
        let example = aws_example();
        let query = sign_query(
            &Signer {
                access_key_id: &example.access_key_id,
                secret_access_key: &example.secret_access_key,
                region: &example.region,
            },
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            &amz_date(EXAMPLE_MS),
            86_400,
        );
        assert_eq!(
            query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn a_link_is_virtual_hosted_on_aws_and_path_style_on_an_endpoint() {
        let url = aws_example().presign_get("test.txt", EXAMPLE_MS).unwrap();
        assert!(
            url.starts_with("https://examplebucket.s3.us-east-1.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&"),
            "{url}"
        );
        assert!(url.contains("&X-Amz-Expires=300&"), "{url}");
        let dotted = S3Download {
            bucket: "backups.example.com".into(),
            region: "eu-west-1".into(),
            ..aws_example()
        };
        let url = dotted.presign_get("k.dump", EXAMPLE_MS).unwrap();
        assert!(
            url.starts_with("https://s3.eu-west-1.amazonaws.com/backups.example.com/k.dump?"),
            "{url}"
        );
        assert!(url.contains("%2Feu-west-1%2Fs3%2F"), "{url}");
        for legacy in ["Backups", "old_backups"] {
            let d = S3Download {
                bucket: legacy.into(),
                ..aws_example()
            };
            let url = d.presign_get("k.dump", EXAMPLE_MS).unwrap();
            assert!(
                url.starts_with(&format!(
                    "https://s3.us-east-1.amazonaws.com/{legacy}/k.dump?"
                )),
                "{url}"
            );
        }
        let url = moto("wf-bucket")
            .presign_get("prod/a.dump", EXAMPLE_MS)
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:5000/wf-bucket/prod/a.dump?"),
            "{url}"
        );
        let r2 = S3Download {
            endpoint: Endpoint::parse("https://ACCOUNT.r2.cloudflarestorage.com:443/"),
            region: "auto".into(),
            ..aws_example()
        };
        let url = r2.presign_get("a.dump", EXAMPLE_MS).unwrap();
        assert!(
            url.starts_with("https://account.r2.cloudflarestorage.com/examplebucket/a.dump?"),
            "{url}"
        );
        assert!(
            url.contains("%2F20130524%2Fauto%2Fs3%2Faws4_request"),
            "{url}"
        );
    }

    #[test]
    fn keys_are_encoded_once_slashes_kept_and_unreserved_bytes_left_alone() {
        assert_eq!(encode("prod/nightly/a.dump", false), "prod/nightly/a.dump");
        assert_eq!(encode("a b/c+d", false), "a%20b/c%2Bd");
        assert_eq!(encode("~user/x_y-z.dump", false), "~user/x_y-z.dump");
        assert_eq!(
            encode("sauvegardes/été/ü.dump", false),
            "sauvegardes/%C3%A9t%C3%A9/%C3%BC.dump"
        );
        assert_eq!(encode("%41?#&=", false), "%2541%3F%23%26%3D");
        assert_eq!(
            encode("AKID/20130524/us-east-1", true),
            "AKID%2F20130524%2Fus-east-1"
        );
        let url = moto("b")
            .presign_get("dir with space/ünï~.dump", EXAMPLE_MS)
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:5000/b/dir%20with%20space/%C3%BCn%C3%AF~.dump?"),
            "{url}"
        );
    }

    #[test]
    fn the_signature_covers_the_encoded_key_host_and_time() {
        let signature = |d: &S3Download, key: &str, ms: i64| {
            let url = d.presign_get(key, ms).unwrap();
            url.rsplit_once("X-Amz-Signature=").unwrap().1.to_string()
        };
        let base = signature(&moto("b"), "a b.dump", EXAMPLE_MS);
        assert_eq!(base.len(), 64);
        assert_eq!(base, signature(&moto("b"), "a b.dump", EXAMPLE_MS));
        assert_ne!(base, signature(&moto("b"), "a+b.dump", EXAMPLE_MS));
        assert_ne!(base, signature(&moto("b"), "a b.dump", EXAMPLE_MS + 1000));
        assert_ne!(base, signature(&moto("c"), "a b.dump", EXAMPLE_MS));
        let other_port = S3Download {
            endpoint: Endpoint::parse("http://127.0.0.1:5001"),
            ..moto("b")
        };
        assert_ne!(base, signature(&other_port, "a b.dump", EXAMPLE_MS));
    }

    #[test]
    fn a_key_with_a_dot_segment_gets_no_link() {
        for key in ["", "a/../b.dump", "./a.dump", "a/.", ".."] {
            assert_eq!(moto("b").presign_get(key, EXAMPLE_MS), None, "{key:?}");
        }
        assert!(moto("b").presign_get("a/.b/..c.dump", EXAMPLE_MS).is_some());
    }

    #[test]
    fn only_a_successful_unpruned_run_with_a_key_gets_a_link() {
        let id = crate::dispatch_id::DispatchId::parse("x", "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b")
            .unwrap();
        let mut run = Run::manual(id, uuid::Uuid::nil(), None, EXAMPLE_MS);
        run.s3_key = Some("backups/a.dump".into());
        let d = moto("b");
        assert_eq!(d.link(&run, EXAMPLE_MS), None, "running");
        run.status = Status::Failed;
        assert_eq!(d.link(&run, EXAMPLE_MS), None, "failed");
        run.status = Status::Success;
        assert_eq!(
            d.link(&run, EXAMPLE_MS),
            d.presign_get("backups/a.dump", EXAMPLE_MS)
        );
        run.pruned_at = Some(EXAMPLE_MS);
        assert_eq!(d.link(&run, EXAMPLE_MS), None, "pruned");
        run.pruned_at = None;
        run.s3_key = None;
        assert_eq!(d.link(&run, EXAMPLE_MS), None, "no key");
    }

    #[test]
    fn an_endpoint_is_an_http_url_with_a_host() {
        let e = Endpoint::parse("HTTP://Minio.local:80/base/").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.base.as_str()),
            (false, "minio.local", "/base")
        );
        let e = Endpoint::parse("https://[::1]:9000").unwrap();
        assert_eq!(e.host, "[::1]:9000");
        for bad in [
            "ftp://x",
            "x.example.com",
            "https://",
            "https://user:pw@x",
            "https://x/?a=1",
            "https://x/#f",
            "https://x y",
        ] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
    }

    struct Vars(HashMap<&'static str, &'static str>);
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }
    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Option<S3Download>, Error> {
        s3_download(&Vars(pairs.iter().copied().collect()))
    }
    const SECRET: &str = "s3cretKEYs3cretKEY";
    const COMPLETE: [(&str, &str); 3] = [
        ("BACKUP_S3_BUCKET", "wf-bucket"),
        ("BACKUP_S3_ACCESS_KEY_ID", "AKIDREAD"),
        ("BACKUP_S3_SECRET_ACCESS_KEY", SECRET),
    ];

    #[test]
    fn download_settings_absent_mean_no_links() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(
            config(&[
                ("BACKUP_S3_BUCKET", " "),
                ("BACKUP_S3_SECRET_ACCESS_KEY", "")
            ]),
            Ok(None),
            "empty counts as unset"
        );
        // The optional ones alone enable nothing.
        assert_eq!(
            config(&[
                ("BACKUP_S3_REGION", "eu-west-1"),
                ("BACKUP_S3_ENDPOINT_URL", "http://x")
            ]),
            Ok(None)
        );
    }

    #[test]
    fn complete_download_settings_default_to_aws_us_east_1() {
        let d = config(&COMPLETE).unwrap().unwrap();
        assert_eq!(d.bucket, "wf-bucket");
        assert_eq!(d.region, "us-east-1");
        assert_eq!(d.endpoint, None);
        assert_eq!(d.access_key_id, "AKIDREAD");
        assert!(
            !format!("{d:?}").contains(SECRET),
            "Debug redacts the secret"
        );
        let mut with = COMPLETE.to_vec();
        with.push(("BACKUP_S3_ENDPOINT_URL", "http://127.0.0.1:5000/"));
        with.push(("BACKUP_S3_REGION", "auto"));
        let d = config(&with).unwrap().unwrap();
        assert_eq!(d.endpoint, Endpoint::parse("http://127.0.0.1:5000"));
        assert_eq!(d.region, "auto");
    }

    #[test]
    fn partial_or_invalid_download_settings_name_the_setting_never_the_secret() {
        let problem = |pairs: &[(&'static str, &'static str)]| {
            let err = config(pairs).unwrap_err();
            let message = err.public_message();
            assert!(!message.contains(SECRET), "{message}");
            assert!(!err.to_string().contains(SECRET), "{err}");
            message
        };
        for missing in 0..3 {
            let mut pairs = COMPLETE.to_vec();
            let (name, _) = pairs.remove(missing);
            assert_eq!(
                problem(&pairs),
                format!(
                    "server misconfigured: {name} is not set \
                     (download links need BACKUP_S3_BUCKET, BACKUP_S3_ACCESS_KEY_ID \
                     and BACKUP_S3_SECRET_ACCESS_KEY)"
                )
            );
        }
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = COMPLETE.to_vec();
            pairs.push(extra);
            problem(&pairs)
        };
        assert_eq!(
            with(("BACKUP_S3_BUCKET", "no/slash")),
            "server misconfigured: BACKUP_S3_BUCKET is not a valid bucket name"
        );
        assert_eq!(
            with(("BACKUP_S3_ENDPOINT_URL", "s3.example.com")),
            "server misconfigured: BACKUP_S3_ENDPOINT_URL must be an http(s) URL"
        );
        assert_eq!(
            with(("BACKUP_S3_REGION", "EU West")),
            "server misconfigured: BACKUP_S3_REGION must be a region name such as \
             us-east-1, or auto"
        );
        assert_eq!(
            with(("BACKUP_S3_REGION", "auto")),
            "server misconfigured: BACKUP_S3_REGION auto (R2) needs BACKUP_S3_ENDPOINT_URL"
        );
    }
}
