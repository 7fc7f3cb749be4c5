//! Settings, read from the environment through the host.
//!
//! Each setting is read when the endpoint that needs it runs, so a missing
//! one is answered with a 500 naming it (`config_missing`) instead of a crash
//! at import time, and the endpoints that do not need it keep working.

use crate::credentials::oidc::{Expected, GITHUB_OIDC_ISSUER};
use crate::credentials::webhook::WebhookSecret;
use crate::error::Error;
use crate::http::Cors;
use crate::ports::github::GitHubConfig;
use crate::presign::{Endpoint, S3Download, DEFAULT_REGION};
use serde::Deserialize;

/// Reads one setting; empty values count as unset.
pub trait Env {
    /// The value of an environment variable.
    fn var(&self, name: &str) -> Option<String>;
}

fn get(env: &impl Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(env: &impl Env, name: &'static str) -> Result<String, Error> {
    get(env, name).ok_or(Error::Config {
        setting: name,
        message: "is not set".into(),
    })
}

/// `GITHUB_TOKEN`, `GITHUB_REPOSITORY`, `GITHUB_API_URL`, `BACKUP_WORKFLOW`
/// and `BACKUP_WORKFLOW_REF`.
///
/// # Errors
/// [`Error::Config`] naming the first missing or malformed setting.
pub fn github(env: &impl Env) -> Result<GitHubConfig, Error> {
    let token = required(env, "GITHUB_TOKEN")?;
    let repository = required(env, "GITHUB_REPOSITORY")?;
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repository.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => {}
        _ => {
            return Err(Error::Config {
                setting: "GITHUB_REPOSITORY",
                message: "must be owner/name".into(),
            })
        }
    }
    let api_url = get(env, "GITHUB_API_URL")
        .unwrap_or_else(|| "https://api.github.com".into())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(Error::Config {
            setting: "GITHUB_API_URL",
            message: "must be an http(s) URL".into(),
        });
    }
    let workflow = get(env, "BACKUP_WORKFLOW").unwrap_or_else(|| "backup.yml".into());
    if !workflow
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::Config {
            setting: "BACKUP_WORKFLOW",
            message: "must be a workflow file name or id".into(),
        });
    }
    Ok(GitHubConfig {
        api_url,
        repository,
        workflow,
        workflow_ref: get(env, "BACKUP_WORKFLOW_REF").unwrap_or_else(|| "main".into()),
        token,
    })
}

/// How `finalize-backup` authenticates a report (`BACKUP_REPORT_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportAuth {
    /// The Standard Webhooks signature only (`webhook`): for GitHub
    /// Enterprise Server without OIDC.
    Webhook,
    /// GitHub's OIDC token only (`oidc`): no secret in GitHub at all.
    Oidc,
    /// Both required (`both`, the default: the shipped workflow sends both).
    Both,
}

impl ReportAuth {
    /// Whether a webhook signature is required.
    pub fn webhook(self) -> bool {
        self != ReportAuth::Oidc
    }

    /// Whether a GitHub OIDC token is required.
    pub fn oidc(self) -> bool {
        self != ReportAuth::Webhook
    }
}

/// `BACKUP_REPORT_AUTH`: `webhook`, `oidc` or `both` (default).
///
/// # Errors
/// [`Error::Config`] naming it for any other value.
pub fn report_auth(env: &impl Env) -> Result<ReportAuth, Error> {
    match get(env, "BACKUP_REPORT_AUTH").as_deref() {
        None | Some("both") => Ok(ReportAuth::Both),
        Some("webhook") => Ok(ReportAuth::Webhook),
        Some("oidc") => Ok(ReportAuth::Oidc),
        Some(_) => Err(Error::Config {
            setting: "BACKUP_REPORT_AUTH",
            message: "must be webhook, oidc or both".into(),
        }),
    }
}

/// What a report's GitHub OIDC token must say: `GITHUB_OIDC_ISSUER`
/// (default GitHub's), the audience `{SUPABASE_URL}/functions/v1/finalize-backup`,
/// and the repository, workflow file and ref of [`github`] (the same
/// settings `trigger-backup` dispatches with; a branch name becomes
/// `refs/heads/...`).
///
/// # Errors
/// [`Error::Config`] naming the first missing or malformed setting.
pub fn oidc(env: &impl Env) -> Result<Expected, Error> {
    let issuer = get(env, "GITHUB_OIDC_ISSUER").unwrap_or_else(|| GITHUB_OIDC_ISSUER.into());
    let project = required(env, "SUPABASE_URL")?;
    let github = github(env)?;
    // A token names the workflow by its file (`workflow_ref`), never by
    // GitHub's numeric id, which trigger-backup could dispatch by: every
    // report would be refused, each as a 401 that says little about why.
    if !(github.workflow.ends_with(".yml") || github.workflow.ends_with(".yaml")) {
        return Err(Error::Config {
            setting: "BACKUP_WORKFLOW",
            message: "must be the workflow's file name (such as backup.yml) when reports \
                      are checked by GitHub's OIDC token, which names the file"
                .into(),
        });
    }
    let git_ref = github.workflow_ref;
    Ok(Expected {
        issuer,
        audience: project.trim_end_matches('/').to_string() + "/functions/v1/finalize-backup",
        repository: github.repository,
        workflow: github.workflow,
        git_ref: if git_ref.starts_with("refs/") {
            git_ref
        } else {
            "refs/heads/".to_string() + &git_ref
        },
    })
}

/// `BACKUP_WEBHOOK_SECRET`.
///
/// # Errors
/// [`Error::Config`] when it is missing or not `whsec_<base64>`.
pub fn webhook_secret(env: &impl Env) -> Result<WebhookSecret, Error> {
    WebhookSecret::parse(&required(env, "BACKUP_WEBHOOK_SECRET")?)
}

/// `BACKUP_WEBHOOK_SECRET` where signing is optional (a sweep may be signed
/// or carry the service key): `None` when it is not set.
///
/// # Errors
/// [`Error::Config`] when it is set but not `whsec_<base64>`.
pub fn webhook_secret_if_set(env: &impl Env) -> Result<Option<WebhookSecret>, Error> {
    get(env, "BACKUP_WEBHOOK_SECRET")
        .map(|s| WebhookSecret::parse(&s))
        .transpose()
}

/// What signs download links (`backup-status`'s `download_url`):
/// `BACKUP_S3_BUCKET`, `BACKUP_S3_ACCESS_KEY_ID` and
/// `BACKUP_S3_SECRET_ACCESS_KEY`, with `BACKUP_S3_ENDPOINT_URL` and
/// `BACKUP_S3_REGION` (default us-east-1; `auto` for R2) optional. `None`
/// when none of the three is set: links are an option, off by default.
///
/// # Errors
/// [`Error::Config`] naming the first missing or malformed setting when
/// they are set in part; the message never carries a value.
pub fn s3_download(env: &impl Env) -> Result<Option<S3Download>, Error> {
    const NEEDED: [&str; 3] = [
        "BACKUP_S3_BUCKET",
        "BACKUP_S3_ACCESS_KEY_ID",
        "BACKUP_S3_SECRET_ACCESS_KEY",
    ];
    let [bucket, access_key_id, secret_access_key] = match NEEDED.map(|n| get(env, n)) {
        [Some(b), Some(a), Some(s)] => [b, a, s],
        [None, None, None] => return Ok(None),
        partial => {
            let missing = partial.iter().position(Option::is_none).unwrap_or(0);
            return Err(Error::Config {
                setting: NEEDED[missing],
                message: "is not set (download links need BACKUP_S3_BUCKET, \
                          BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY)"
                    .into(),
            });
        }
    };
    let invalid = |setting: &'static str, message: &str| Error::Config {
        setting,
        message: message.into(),
    };
    // The workflow's own check of the same variable (check_backup_settings.sh).
    let bucket_ok = bucket.len() >= 2
        && bucket.len() <= 255
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !bucket_ok {
        return Err(invalid("BACKUP_S3_BUCKET", "is not a valid bucket name"));
    }
    let endpoint = get(env, "BACKUP_S3_ENDPOINT_URL")
        .map(|url| {
            Endpoint::parse(&url)
                .ok_or_else(|| invalid("BACKUP_S3_ENDPOINT_URL", "must be an http(s) URL"))
        })
        .transpose()?;
    let region = get(env, "BACKUP_S3_REGION").unwrap_or_else(|| DEFAULT_REGION.into());
    if region.is_empty()
        || region.len() > 32
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "BACKUP_S3_REGION",
            "must be a region name such as us-east-1, or auto",
        ));
    }
    if region == "auto" && endpoint.is_none() {
        return Err(invalid(
            "BACKUP_S3_REGION",
            "auto (R2) needs BACKUP_S3_ENDPOINT_URL",
        ));
    }
    Ok(Some(S3Download {
        bucket,
        endpoint,
        region,
        access_key_id,
        secret_access_key,
    }))
}

/// `ALLOWED_ORIGINS` (comma-separated; unset allows no cross-origin caller).
pub fn cors(env: &impl Env) -> Cors {
    Cors::from_setting(get(env, "ALLOWED_ORIGINS").as_deref())
}

/// Where user tokens are checked: the settings behind [`crate::credentials::auth`].
///
/// Hosted Supabase injects `SUPABASE_URL`, `SUPABASE_JWKS`, the API keys and
/// never a JWT secret (and `supabase secrets set` refuses names starting
/// with `SUPABASE_`), so the HS256 secret of local development is our own
/// `BACKUP_JWT_SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKeys {
    /// `SUPABASE_JWKS`: the key set the platform injects. The Supabase CLI
    /// includes the legacy HS256 secret as a `kty: "oct"` key.
    pub jwks: Option<String>,
    /// `SUPABASE_URL` without a trailing slash: where the published key set
    /// and the Auth server are.
    pub project_url: Option<String>,
    /// `BACKUP_JWT_SECRET`: an HS256 secret for local development.
    pub hs256: Option<String>,
    /// The `apikey` Supabase Auth is called with: the `default` (else the
    /// first) of `SUPABASE_PUBLISHABLE_KEYS`, else `SUPABASE_ANON_KEY`.
    /// Publishable keys come first because a project can deactivate its
    /// legacy anon key while the platform still injects it.
    pub api_key: Option<String>,
}

impl TokenKeys {
    /// `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`.
    pub fn jwks_url(&self) -> Option<String> {
        let base = self.project_url.as_deref()?;
        Some(format!("{base}/auth/v1/.well-known/jwks.json"))
    }

    /// `{SUPABASE_URL}/auth/v1/user`.
    pub fn user_url(&self) -> Option<String> {
        Some(format!("{}/auth/v1/user", self.project_url.as_deref()?))
    }
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("TokenKeys")
            .field("jwks", &self.jwks)
            .field("project_url", &self.project_url)
            .field("hs256", &redacted(&self.hs256))
            .field("api_key", &redacted(&self.api_key))
            .finish()
    }
}

/// `SUPABASE_JWKS`, `SUPABASE_URL`, `BACKUP_JWT_SECRET` and the API key
/// Supabase Auth is asked with.
///
/// # Errors
/// [`Error::Config`] naming `BACKUP_JWT_SECRET` when there is no key source
/// at all: no injected key set, no project URL and no secret.
pub fn token_keys(env: &impl Env) -> Result<TokenKeys, Error> {
    let keys = TokenKeys {
        jwks: get(env, "SUPABASE_JWKS"),
        project_url: get(env, "SUPABASE_URL").map(|u| u.trim_end_matches('/').to_string()),
        hs256: get(env, "BACKUP_JWT_SECRET"),
        api_key: key_set(env, "SUPABASE_PUBLISHABLE_KEYS")
            .into_iter()
            .next()
            .or_else(|| get(env, "SUPABASE_ANON_KEY")),
    };
    if keys.jwks.is_none() && keys.project_url.is_none() && keys.hs256.is_none() {
        return Err(Error::Config {
            setting: "BACKUP_JWT_SECRET",
            message: "is not set, and neither SUPABASE_JWKS nor SUPABASE_URL is available \
                      to check access tokens with"
                .into(),
        });
    }
    Ok(keys)
}

/// The keys `reconcile-backups` accepts from a service caller: the legacy
/// `SUPABASE_SERVICE_ROLE_KEY` and every key of `SUPABASE_SECRET_KEYS`.
///
/// # Errors
/// [`Error::Config`] naming `SUPABASE_SECRET_KEYS` when there is none.
pub fn service_keys(env: &impl Env) -> Result<Vec<String>, Error> {
    let mut keys = key_set(env, "SUPABASE_SECRET_KEYS");
    keys.extend(get(env, "SUPABASE_SERVICE_ROLE_KEY"));
    if keys.is_empty() {
        return Err(Error::Config {
            setting: "SUPABASE_SECRET_KEYS",
            message: "(or the legacy SUPABASE_SERVICE_ROLE_KEY) is not set \
                      (or sign the request with BACKUP_WEBHOOK_SECRET)"
                .into(),
        });
    }
    Ok(keys)
}

/// A set of API keys as the platform injects it: a JSON object of name to
/// key, `{"default":"sb_secret_..."}` (the shape supabase/cli's edge-runtime
/// entry point, `internal/functions/serve/templates/main.ts`, builds for
/// `SUPABASE_PUBLISHABLE_KEYS` and `SUPABASE_SECRET_KEYS`), or one key as a
/// JSON string.
enum KeySet {
    /// By name, sorted, so that the order is the same whatever order the
    /// members were written in; a repeated name keeps its last key.
    Named(Vec<(String, String)>),
    One(String),
}

impl<'de> Deserialize<'de> for KeySet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeySetVisitor)
    }
}

/// Reads either shape directly (serde's `untagged` would buffer the value
/// first, which costs the module more code than this).
struct KeySetVisitor;

impl<'de> serde::de::Visitor<'de> for KeySetVisitor {
    type Value = KeySet;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key, or an object of names to keys")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeySet, E> {
        Ok(KeySet::One(v.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeySet, A::Error> {
        let mut named = Vec::<(String, String)>::new();
        while let Some((name, key)) = map.next_entry::<String, String>()? {
            match named.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
                Ok(i) => named[i].1 = key,
                Err(i) => named.insert(i, (name, key)),
            }
        }
        Ok(KeySet::Named(named))
    }
}

/// The keys of a key set, `default` first, then the others by name; empty
/// ones are dropped. A value that is not JSON is one key, as a user would
/// write it by hand; an object that is not a set of names to keys gives
/// none, so that its text (`{...}`) never becomes a key anyone may present.
fn key_set(env: &impl Env, name: &str) -> Vec<String> {
    let Some(raw) = get(env, name) else {
        return Vec::new();
    };
    let keys = match serde_json::from_str::<KeySet>(&raw) {
        Ok(KeySet::Named(by_name)) => {
            let (default, others): (Vec<_>, Vec<_>) =
                by_name.into_iter().partition(|(n, _)| n == "default");
            default.into_iter().chain(others).map(|(_, k)| k).collect()
        }
        Ok(KeySet::One(key)) => vec![key],
        Err(_) if raw.starts_with('{') => Vec::new(),
        Err(_) => vec![raw],
    };
    keys.into_iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, &'static str>);
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }
    fn vars(pairs: &[(&'static str, &'static str)]) -> Vars {
        Vars(pairs.iter().copied().collect())
    }

    #[test]
    fn github_defaults_match_the_contract() {
        let cfg = github(&vars(&[
            ("GITHUB_TOKEN", "t"),
            ("GITHUB_REPOSITORY", "acme/app"),
        ]))
        .unwrap();
        assert_eq!(cfg.api_url, "https://api.github.com");
        assert_eq!(cfg.workflow, "backup.yml");
        assert_eq!(cfg.workflow_ref, "main");
    }

    #[test]
    fn a_missing_setting_is_named() {
        let err = github(&vars(&[("GITHUB_REPOSITORY", "acme/app")])).unwrap_err();
        assert_eq!(
            err.public_message(),
            "server misconfigured: GITHUB_TOKEN is not set"
        );
        let err = github(&vars(&[
            ("GITHUB_TOKEN", "t"),
            ("GITHUB_REPOSITORY", "acme"),
        ]))
        .unwrap_err();
        assert!(err.public_message().contains("GITHUB_REPOSITORY"));
        let err = webhook_secret(&vars(&[])).unwrap_err();
        assert!(err.public_message().contains("BACKUP_WEBHOOK_SECRET"));
        let err = token_keys(&vars(&[])).unwrap_err();
        assert_eq!(
            err.public_message(),
            "server misconfigured: BACKUP_JWT_SECRET is not set, and neither SUPABASE_JWKS \
             nor SUPABASE_URL is available to check access tokens with"
        );
    }

    #[test]
    fn oidc_needs_the_workflow_by_file_name_and_takes_a_bare_ref_for_a_branch() {
        let expected = |workflow: &'static str, git_ref: &'static str| {
            oidc(&vars(&[
                ("GITHUB_TOKEN", "t"),
                ("GITHUB_REPOSITORY", "acme/app"),
                ("SUPABASE_URL", "https://x.supabase.co"),
                ("BACKUP_WORKFLOW", workflow),
                ("BACKUP_WORKFLOW_REF", git_ref),
            ]))
        };
        let err = expected("123456", "main").unwrap_err();
        assert_eq!(
            err.public_message(),
            "server misconfigured: BACKUP_WORKFLOW must be the workflow's file name (such as \
             backup.yml) when reports are checked by GitHub's OIDC token, which names the file"
        );
        assert_eq!(
            expected("backup.yaml", "main").unwrap().workflow,
            "backup.yaml"
        );
        assert_eq!(
            expected("backup.yml", "release").unwrap().git_ref,
            "refs/heads/release"
        );
        assert_eq!(
            expected("backup.yml", "refs/tags/v1").unwrap().git_ref,
            "refs/tags/v1"
        );
    }

    #[test]
    fn the_auth_urls_come_from_the_project_url() {
        let keys = token_keys(&vars(&[("SUPABASE_URL", "https://x.supabase.co/")])).unwrap();
        assert_eq!(
            keys.jwks_url().as_deref(),
            Some("https://x.supabase.co/auth/v1/.well-known/jwks.json")
        );
        assert_eq!(
            keys.user_url().as_deref(),
            Some("https://x.supabase.co/auth/v1/user")
        );
        assert_eq!(keys.jwks, None);
        assert_eq!(keys.hs256, None);
    }

    #[test]
    fn backup_jwt_secret_alone_is_a_key_source() {
        let keys = token_keys(&vars(&[("BACKUP_JWT_SECRET", "s3cret")])).unwrap();
        assert_eq!(keys.hs256.as_deref(), Some("s3cret"));
        assert_eq!(keys.jwks_url(), None);
        assert!(!format!("{keys:?}").contains("s3cret"), "Debug redacts it");
    }

    #[test]
    fn the_auth_api_key_prefers_the_default_publishable_key() {
        let key = |pairs: &[(&'static str, &'static str)]| {
            let mut all = vec![("SUPABASE_URL", "https://x.supabase.co")];
            all.extend_from_slice(pairs);
            token_keys(&vars(&all)).unwrap().api_key
        };
        assert_eq!(
            key(&[
                (
                    "SUPABASE_PUBLISHABLE_KEYS",
                    r#"{"web":"sb_publishable_w","default":"sb_publishable_d"}"#
                ),
                ("SUPABASE_ANON_KEY", "eyJanon"),
            ])
            .as_deref(),
            Some("sb_publishable_d")
        );
        assert_eq!(
            key(&[(
                "SUPABASE_PUBLISHABLE_KEYS",
                r#"{"web":"sb_publishable_w","app":"sb_publishable_a"}"#
            )])
            .as_deref(),
            Some("sb_publishable_a"),
            "without a default, the first by name"
        );
        assert_eq!(
            key(&[("SUPABASE_PUBLISHABLE_KEYS", "sb_publishable_plain")]).as_deref(),
            Some("sb_publishable_plain")
        );
        assert_eq!(
            key(&[
                ("SUPABASE_PUBLISHABLE_KEYS", "{}"),
                ("SUPABASE_ANON_KEY", "eyJanon")
            ])
            .as_deref(),
            Some("eyJanon")
        );
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn a_key_set_is_read_in_each_shape_it_comes_in() {
        let keys = |raw: &'static str| key_set(&vars(&[("KEYS", raw)]), "KEYS");
        assert_eq!(
            keys(r#"{"b":"sb_b","default":" sb_d ","a":"sb_a","c":""}"#),
            ["sb_d", "sb_a", "sb_b"],
            "default first, then by name; trimmed, empty ones dropped"
        );
        assert_eq!(keys(r#""sb_secret_quoted""#), ["sb_secret_quoted"]);
        assert_eq!(keys("sb_secret_plain"), ["sb_secret_plain"]);
        for not_a_set in [r#"{"default":1}"#, r#"{"default":"sb_d""#, "{}"] {
            assert_eq!(keys(not_a_set), Vec::<String>::new(), "{not_a_set}");
        }
    }

    #[test]
    fn service_keys_are_every_secret_key_and_the_legacy_service_role_key() {
        assert_eq!(
            service_keys(&vars(&[
                (
                    "SUPABASE_SECRET_KEYS",
                    r#"{"default":"sb_secret_d","cron":"sb_secret_c","empty":""}"#
                ),
                ("SUPABASE_SERVICE_ROLE_KEY", "eyJservice"),
            ]))
            .unwrap(),
            vec!["sb_secret_d", "sb_secret_c", "eyJservice"]
        );
        assert_eq!(
            service_keys(&vars(&[("SUPABASE_SECRET_KEYS", "sb_secret_plain")])).unwrap(),
            vec!["sb_secret_plain"]
        );
        let err = service_keys(&vars(&[("SUPABASE_SECRET_KEYS", "{}")])).unwrap_err();
        assert_eq!(err.status(), 500);
        assert_eq!(
            err.public_message(),
            "server misconfigured: SUPABASE_SECRET_KEYS (or the legacy SUPABASE_SERVICE_ROLE_KEY) \
             is not set (or sign the request with BACKUP_WEBHOOK_SECRET)"
        );
    }
}
