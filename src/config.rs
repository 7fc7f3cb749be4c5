//! Settings, read from the environment through the host.
//!
//! Each setting is read when the endpoint that needs it runs, so a missing
//! one is answered with a 500 naming it (`config_missing`) instead of a crash
//! at import time, and the endpoints that do not need it keep working.

use crate::error::Error;
use crate::github::GitHubConfig;
use crate::http::Cors;
use crate::webhook::WebhookSecret;

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

/// `BACKUP_WEBHOOK_SECRET`.
///
/// # Errors
/// [`Error::Config`] when it is missing or not `whsec_<base64>`.
pub fn webhook_secret(env: &impl Env) -> Result<WebhookSecret, Error> {
    WebhookSecret::parse(&required(env, "BACKUP_WEBHOOK_SECRET")?)
}

/// `ALLOWED_ORIGINS` (comma-separated; unset allows no cross-origin caller).
pub fn cors(env: &impl Env) -> Cors {
    Cors::from_setting(get(env, "ALLOWED_ORIGINS").as_deref())
}

/// Where user tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKeySource {
    /// `SUPABASE_JWKS` holds the key set inline (and maybe an HS256 secret).
    Inline { jwks: String, hs256: Option<String> },
    /// Fetch `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` (and maybe HS256).
    Fetch { url: String, hs256: Option<String> },
    /// Only `SUPABASE_JWT_SECRET` (legacy projects, local development).
    Hs256Only(String),
}

/// `SUPABASE_JWKS`, `SUPABASE_URL` and `SUPABASE_JWT_SECRET`.
///
/// # Errors
/// [`Error::Config`] naming `SUPABASE_JWT_SECRET` when none is set.
pub fn token_keys(env: &impl Env) -> Result<TokenKeySource, Error> {
    let hs256 = get(env, "SUPABASE_JWT_SECRET");
    if let Some(jwks) = get(env, "SUPABASE_JWKS") {
        return Ok(TokenKeySource::Inline { jwks, hs256 });
    }
    if let Some(url) = get(env, "SUPABASE_URL") {
        let url = format!(
            "{}/auth/v1/.well-known/jwks.json",
            url.trim_end_matches('/')
        );
        return Ok(TokenKeySource::Fetch { url, hs256 });
    }
    hs256.map(TokenKeySource::Hs256Only).ok_or(Error::Config {
        setting: "SUPABASE_JWT_SECRET",
        message: "(or SUPABASE_JWKS / SUPABASE_URL) is not set".into(),
    })
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
        assert!(err.public_message().contains("SUPABASE_JWT_SECRET"));
    }

    #[test]
    fn jwks_is_fetched_from_the_project_url_when_not_inline() {
        assert_eq!(
            token_keys(&vars(&[("SUPABASE_URL", "https://x.supabase.co/")])).unwrap(),
            TokenKeySource::Fetch {
                url: "https://x.supabase.co/auth/v1/.well-known/jwks.json".into(),
                hs256: None
            }
        );
    }
}
