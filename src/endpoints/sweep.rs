//! `POST /functions/v1/reconcile-backups`: the sweep that ends silent runs.
//!
//! Called every minute by pg_cron (through pg_net, with the service role
//! key), on a timer by `deno task dev`, and by `trigger-backup` before it
//! refuses a second backup, so a stuck row can never block the button.
//!
//! A sweep reads the one `in_progress` row (the single-flight index makes
//! that an index lookup whatever the history's size), asks GitHub about it
//! at most once, lets [`reconcile::decide`] judge, and writes the verdict
//! guarded by the state it judged: two sweeps at once cannot both apply it.
//!
//! Each sweep this endpoint runs is recorded in `backup_settings`
//! (`last_sweep_at`, `last_sweep_outcome`), which is how `backup-status`
//! tells a frontend whether the schedule is alive. trigger-backup's quick
//! sweep is not recorded: it runs only when someone presses the button, and
//! must not make a schedule that never fires look healthy.

use crate::alerts::{self, Raise};
use crate::config;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::github::{self, read_workflow_run};
use crate::ports::store::{Settings, Store};
use crate::ports::{Host, Level};
use crate::reconcile::{self, GitHubFact};
use crate::run::{FailureReason, Outcome, Run, Status};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// How long the sweep waits for GitHub on the cron path.
pub const GITHUB_TIMEOUT_MS: u32 = 8_000;
/// How long trigger-backup's opportunistic sweep waits for GitHub.
pub const QUICK_GITHUB_TIMEOUT_MS: u32 = 3_000;

/// What happened with GitHub during a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GitHubCheck {
    /// GitHub answered with the run.
    Ok,
    /// Not asked: nothing runs, or the run is too young to need it.
    Skipped,
    /// Not asked: the run has no workflow run id yet.
    NoRunId,
    /// Not asked: the GitHub settings are missing.
    NotConfigured,
    /// Not asked, or refused: GitHub's rate limit.
    RateLimited,
    /// No usable answer (network error, 5xx, an unreadable body).
    Unavailable,
    /// GitHub does not know the run.
    NotFound,
}

impl GitHubCheck {
    /// The wire name (as serde writes it), for `last_sweep_outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            GitHubCheck::Ok => "ok",
            GitHubCheck::Skipped => "skipped",
            GitHubCheck::NoRunId => "no_run_id",
            GitHubCheck::NotConfigured => "not_configured",
            GitHubCheck::RateLimited => "rate_limited",
            GitHubCheck::Unavailable => "unavailable",
            GitHubCheck::NotFound => "not_found",
        }
    }
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq)]
pub struct Swept {
    /// Runs looked at (0 or 1).
    pub checked: u32,
    /// Runs brought to a terminal state, as written.
    pub changed: Vec<Run>,
    /// What happened with GitHub.
    pub github: GitHubCheck,
}

impl Swept {
    /// What `backup_settings.last_sweep_outcome` records: `changed` when
    /// the sweep ended a run, else what happened with GitHub.
    pub fn outcome(&self) -> &'static str {
        if self.changed.is_empty() {
            self.github.as_str()
        } else {
            "changed"
        }
    }
}

/// The endpoint's answer.
#[derive(Serialize)]
struct Answer {
    checked: u32,
    changed: Vec<Ended>,
    github: GitHubCheck,
}

/// A run the sweep ended.
#[derive(Serialize)]
struct Ended {
    dispatch_id: DispatchId,
    status: Status,
    failure_reason: Option<FailureReason>,
}

/// Serves the endpoint; `app` has already checked the method and answered
/// CORS preflights.
///
/// # Errors
/// 401 unless the caller has a service key, or a valid webhook signature
/// on the body `{"sweep":true}`;
/// 500 when no service key is configured (and the request is not signed); 503.
pub async fn handle(
    host: &impl Host,
    store: &impl Store,
    req: &Request,
) -> Result<Response, Error> {
    req.check_size()?;
    authorize(host, req)?;
    let swept = sweep(host, store, GITHUB_TIMEOUT_MS).await?;
    store.record_sweep(host.now_ms(), swept.outcome()).await?;
    // The outbox's safety net: the dead man's switch, and whatever alerts
    // are due (after the sweep's own verdict, which may have raised one).
    alerts::on_sweep(host, store).await;
    Ok(Response::json(
        200,
        &Answer {
            checked: swept.checked,
            changed: swept
                .changed
                .iter()
                .map(|r| Ended {
                    dispatch_id: r.dispatch_id,
                    status: r.status,
                    failure_reason: r.failure_reason,
                })
                .collect(),
            github: swept.github,
        },
    ))
}

/// A service key (the legacy `SUPABASE_SERVICE_ROLE_KEY` or any of
/// `SUPABASE_SECRET_KEYS`) in `apikey` or as a bearer token, or a Standard
/// Webhooks signature made with `BACKUP_WEBHOOK_SECRET` (what the
/// workflow's secret can sign).
///
/// Keys are compared as SHA-256 digests in constant time, so that neither a
/// key's bytes nor its length can be learned from how long a refusal takes;
/// every presented value is compared with every key.
fn authorize(host: &impl Host, req: &Request) -> Result<(), Error> {
    if req.header("webhook-signature").is_some() {
        // Without a signing secret (reports checked by OIDC alone), no
        // signature can be valid: refused as one, not a misconfiguration.
        let secret = config::webhook_secret_if_set(host)?.ok_or_else(|| {
            Error::InvalidSignature(
                "no signing secret is set for sweeps; send the service key instead".into(),
            )
        })?;
        secret.verify_request(req, host.now_ms() / 1000)?;
        // A signature proves who signed, not for which endpoint: a report
        // to finalize-backup replayed here within the tolerance must not
        // count, so the signed body has to say it asks for a sweep.
        // Compared without whitespace rather than parsed: a struct serde
        // reads costs the module a visitor of its own, and this body has
        // one fixed form. (Its only string holds no whitespace.)
        let body = req.body.iter().filter(|b| !b.is_ascii_whitespace());
        if !body.eq(br#"{"sweep":true}"#) {
            return Err(Error::InvalidSignature(
                "a signed sweep must have the body {\"sweep\":true}".into(),
            ));
        }
        return Ok(());
    }
    let apikey = req
        .header("apikey")
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let presented = [apikey, req.bearer_token().ok()];
    if presented == [None, None] {
        return Err(Error::MissingToken);
    }
    let keys = config::service_keys(host)?;
    if is_service_key(&presented, &keys) {
        Ok(())
    } else {
        Err(Error::InvalidToken("not a service key".into()))
    }
}

fn is_service_key(presented: &[Option<&str>], keys: &[String]) -> bool {
    let digest = |v: &[u8]| -> [u8; 32] { Sha256::digest(v).into() };
    let mut matched = Choice::from(0);
    for p in presented.iter().flatten() {
        let p = digest(p.as_bytes());
        for k in keys {
            matched |= p.ct_eq(&digest(k.as_bytes()));
        }
    }
    matched.into()
}

/// Runs one sweep.
///
/// # Errors
/// Only database errors; GitHub's failures are reported in [`Swept::github`].
pub async fn sweep(
    host: &impl Host,
    store: &impl Store,
    github_timeout_ms: u32,
) -> Result<Swept, Error> {
    match store.running().await? {
        Some(run) => sweep_run(host, store, run, github_timeout_ms).await,
        None => Ok(Swept {
            checked: 0,
            changed: Vec::new(),
            github: GitHubCheck::Skipped,
        }),
    }
}

/// Sweeps `run`, the one in progress as just read.
///
/// # Errors
/// Only database errors; GitHub's failures are reported in [`Swept::github`].
pub async fn sweep_run(
    host: &impl Host,
    store: &impl Store,
    run: Run,
    github_timeout_ms: u32,
) -> Result<Swept, Error> {
    let settings = store.settings().await?;
    let (fact, github) = ask_github(host, store, &run, &settings, github_timeout_ms).await?;
    let now = host.now_ms();
    let mut changed = Vec::new();
    if let Outcome::Changed(next) = reconcile::decide(&run, &settings.deadlines, &fact, now) {
        // Guarded by the state the verdict was made from, so progress
        // reports landing meanwhile do not void it. None: a report or
        // another sweep changed the state first; their word stands.
        let raise = Raise::of(host, &run, &next, None);
        if let Some(saved) = store.update(&run, &next, None, &raise).await? {
            host.log(
                Level::Warn,
                &format!(
                    "backup {}: reconciled to failed/{}: {}",
                    saved.dispatch_id,
                    crate::run::reason_str(saved.failure_reason),
                    saved.error_text.as_deref().unwrap_or("")
                ),
            );
            changed.push(saved);
        }
    }
    Ok(Swept {
        checked: 1,
        changed,
        github,
    })
}

async fn ask_github(
    host: &impl Host,
    store: &impl Store,
    run: &Run,
    settings: &Settings,
    timeout_ms: u32,
) -> Result<(GitHubFact, GitHubCheck), Error> {
    let Some(id) = run.workflow_run_id else {
        return Ok((GitHubFact::Unknown, GitHubCheck::NoRunId));
    };
    let now = host.now_ms();
    // A run younger than the grace period cannot have finished and then
    // stayed silent for the grace period: no call needed.
    if now - run.created_at < settings.deadlines.grace_ms {
        return Ok((GitHubFact::Unknown, GitHubCheck::Skipped));
    }
    if now < settings.github_backoff_until {
        return Ok((GitHubFact::Unknown, GitHubCheck::RateLimited));
    }
    let Ok(cfg) = config::github(host) else {
        return Ok((GitHubFact::Unknown, GitHubCheck::NotConfigured));
    };
    match host.fetch(cfg.get_run_request(id, timeout_ms)).await {
        Ok(r) if r.status == 200 => Ok(match read_workflow_run(&r.body) {
            Some(w) => (GitHubFact::Run(w), GitHubCheck::Ok),
            None => (GitHubFact::Unknown, GitHubCheck::Unavailable),
        }),
        Ok(r) if r.status == 404 => Ok((GitHubFact::Unknown, GitHubCheck::NotFound)),
        Ok(r) => {
            if let Some(until) = github::rate_limited_until(&r, now) {
                store.set_github_backoff(until).await?;
                host.log(
                    Level::Warn,
                    &format!(
                        "GitHub rate limit: no calls until {}",
                        crate::time::iso8601(until)
                    ),
                );
                Ok((GitHubFact::Unknown, GitHubCheck::RateLimited))
            } else {
                host.log(
                    Level::Warn,
                    &format!("GitHub run {id}: {}", github::describe(&r)),
                );
                Ok((GitHubFact::Unknown, GitHubCheck::Unavailable))
            }
        }
        Err(e) => {
            host.log(Level::Warn, &format!("GitHub run {id}: network error: {e}"));
            Ok((GitHubFact::Unknown, GitHubCheck::Unavailable))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_key_matches_only_whole_and_exact() {
        let keys = vec!["sb_secret_abc".to_string(), "eyJ-legacy".to_string()];
        assert!(is_service_key(&[Some("sb_secret_abc"), None], &keys));
        assert!(is_service_key(&[Some("wrong"), Some("eyJ-legacy")], &keys));
        for wrong in ["sb_secret_ab", "sb_secret_abcd", "SB_SECRET_ABC", "", "eyJ"] {
            assert!(!is_service_key(&[Some(wrong)], &keys), "{wrong:?}");
        }
        assert!(!is_service_key(&[None, None], &keys));
        assert!(!is_service_key(&[Some("sb_secret_abc")], &[]));
    }
}

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

    #[test]
    fn the_sweep_needs_the_service_role_key() {
        let (host, store) = (service_host(), store());
        assert_eq!(sweep_req(&host, &store, "wrong").status, 401);
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(r.status, 200);
        assert_eq!(
            body(&r),
            json!({"checked": 0, "changed": [], "github": "skipped"})
        );
    }

    #[test]
    fn a_signed_sweep_without_a_signing_secret_is_refused_as_unsigned_not_a_500() {
        let mut host = service_host();
        host.env.remove("BACKUP_WEBHOOK_SECRET");
        host.env.insert("BACKUP_REPORT_AUTH".into(), "oidc".into());
        let store = store();
        let req = Request::new(
            "POST",
            "http://x/functions/v1/reconcile-backups",
            vec![
                ("webhook-signature".into(), "v1,AAAA".into()),
                ("apikey".into(), "service-key".into()),
            ],
            br#"{"sweep":true}"#.to_vec(),
        );
        let r = block_on(app::handle(&host, &store, "reconcile-backups", &req));
        assert_eq!(
            (r.status, error_code(&r)),
            (401, json!("invalid_signature"))
        );
        assert_eq!(
            *host.logs.borrow(),
            ["Info reconcile-backups POST 401: invalid_signature: no signing secret is set for sweeps; send the service key instead"]
        );
        // The service key alone still sweeps.
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
    }

    #[test]
    fn the_sweep_ends_a_run_github_finished_without_a_report() {
        let (host, store) = (service_host(), store());
        let id = dispatched(&host, &store);
        finalize(
            &host,
            &store,
            "s",
            &json!({"event": "started", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1}),
        );
        let completed = host.now.get() + 60_000;
        host.now.set(completed + 61_000);
        host.answer(200, &[], &json!({"id": 4242, "run_attempt": 1, "status": "completed", "conclusion": "cancelled", "updated_at": crate::time::iso8601(completed)}).to_string());
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(
            body(&r),
            json!({"checked": 1, "changed": [{"dispatch_id": id, "status": "failed", "failure_reason": "cancelled"}], "github": "ok"})
        );
        assert_eq!(
            host.fetched.borrow().last().unwrap().url,
            "https://api.github.com/repos/acme/app/actions/runs/4242"
        );
        // The workflow's own late report still has the last word.
        let late = finalize(
            &host,
            &store,
            "late",
            &json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "pg_dump: killed"}),
        );
        assert_eq!(body(&late)["changed"], true);
        assert_eq!(store.only().failure_reason, Some(FailureReason::StepFailed));
    }

    #[test]
    fn a_rate_limited_sweep_changes_nothing_and_backs_off() {
        let (host, store) = (service_host(), store());
        dispatched(&host, &store);
        host.now.set(host.now.get() + 120_000);
        host.answer(
            403,
            &[("x-ratelimit-remaining", "0"), ("retry-after", "600")],
            "",
        );
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&r)["github"], "rate_limited");
        assert_eq!(body(&r)["changed"], json!([]));
        assert_eq!(store.only().status, Status::InProgress);
        let calls = host.fetched.borrow().len();
        let again = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&again)["github"], "rate_limited");
        assert_eq!(
            host.fetched.borrow().len(),
            calls,
            "no GitHub call during the backoff"
        );
    }

    #[test]
    fn reconcile_backups_records_its_sweeps_and_trigger_backups_quick_sweep_does_not() {
        let (host, store) = (service_host(), store());
        let stuck = dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        // The quick sweep before a 409 ends the stuck run, unrecorded.
        host.answer(500, &[], "");
        host.answer(200, &[], r#"{"workflow_run_id": 5000}"#);
        assert_eq!(trigger(&host, &store, ADMIN, "").status, 202);
        assert_eq!(
            store.runs.borrow()[0].dispatch_id.to_string(),
            stuck,
            "the stuck run"
        );
        assert_eq!(
            store.runs.borrow()[0].failure_reason,
            Some(FailureReason::Lost)
        );
        assert_eq!(*store.sweeps.borrow(), vec![]);

        let first = host.now.get();
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        host.now.set(first + 30_000);
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        // The new run is younger than the grace period: GitHub is not asked.
        assert_eq!(
            *store.sweeps.borrow(),
            vec![
                (first, "skipped".into()),
                (first + 30_000, "skipped".into())
            ]
        );
        // A refused caller is not a sweep.
        assert_eq!(sweep_req(&host, &store, "wrong").status, 401);
        assert_eq!(store.sweeps.borrow().len(), 2);
    }

    #[test]
    fn a_sweep_that_ends_a_run_is_recorded_as_changed() {
        let (host, store) = (service_host(), store());
        dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        host.answer(404, &[], "");
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&r)["changed"].as_array().unwrap().len(), 1);
        assert_eq!(
            *store.sweeps.borrow(),
            vec![(host.now.get(), "changed".into())]
        );
    }

    #[test]
    fn the_sweep_accepts_any_secret_key_in_apikey_or_as_a_bearer_token() {
        let (host, store) = (secret_keys_host(), store());
        for key in ["sb_secret_default_0123456789", "sb_secret_cron_0123456789"] {
            let bearer = format!("Bearer {key}");
            for headers in [
                vec![("apikey", key)],
                vec![("authorization", bearer.as_str())],
                vec![("authorization", bearer.as_str()), ("apikey", key)],
                // A client library sends the publishable key beside it.
                vec![("authorization", bearer.as_str()), ("apikey", PUBLISHABLE)],
            ] {
                let r = sweep_with(&host, &store, &headers);
                assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
                assert_eq!(
                    body(&r),
                    json!({"checked": 0, "changed": [], "github": "skipped"})
                );
            }
        }
    }

    #[test]
    fn the_sweep_refuses_a_wrong_or_partial_key() {
        let (mut host, store) = (secret_keys_host(), store());
        host.env
            .insert("SUPABASE_SERVICE_ROLE_KEY".into(), "eyJ-service".into());
        for wrong in [
            "sb_secret_default_012345678",
            "sb_secret_default_01234567890",
            "sb_publishable_test",
            "",
            "eyJ-servic",
        ] {
            let r = sweep_with(
                &host,
                &store,
                &[("apikey", wrong), ("authorization", "Bearer nope")],
            );
            assert_eq!(r.status, 401, "{wrong:?}");
            assert_eq!(error_code(&r), "invalid_token");
        }
        assert_eq!(
            sweep_with(&host, &store, &[("apikey", "eyJ-service")]).status,
            200
        );
        let none = sweep_with(&host, &store, &[("authorization", "Basic x")]);
        assert_eq!(none.status, 401);
        assert_eq!(error_code(&none), "missing_token");
    }

    #[test]
    fn the_sweep_without_any_service_key_configured_is_a_500_naming_the_secret_keys() {
        let (host, store) = (host(), store());
        let r = sweep_with(&host, &store, &[("apikey", "sb_secret_x")]);
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: SUPABASE_SECRET_KEYS (or the legacy SUPABASE_SERVICE_ROLE_KEY) \
             is not set (or sign the request with BACKUP_WEBHOOK_SECRET)"
        );
        let r = sweep_with(&host, &store, &[]);
        assert_eq!(
            r.status, 401,
            "no credentials: 401 before any configuration question"
        );
        assert_eq!(error_code(&r), "missing_token");
    }
}
