//! `POST /functions/v1/trigger-backup`: the "Back up now" button.
//!
//! Order matters: the row is inserted *before* the dispatch, so the
//! single-flight index refuses a second click before GitHub is called, and
//! the workflow can never report against a dispatch id the table does not
//! know. If GitHub refuses, the row is failed (`dispatch_failed`) in the
//! same request; it is never left `in_progress`.

use crate::auth;
use crate::config;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::github::{self, DispatchAnswer};
use crate::http::{parse_json_object, Request, Response};
use crate::ports::{DbError, Host, Level};
use crate::run::{self, Outcome, Run, Status};
use crate::store::{in_progress_error, Started, Store, ONE_IN_PROGRESS};
use crate::sweep;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest accepted `reason`.
pub const MAX_REASON_CHARS: usize = 500;

/// Serves the endpoint; `app` has already checked the method and answered
/// CORS preflights.
///
/// # Errors
/// Every documented 4xx/5xx of the endpoint, as an [`Error`].
pub async fn handle(
    host: &impl Host,
    store: &impl Store,
    req: &Request,
) -> Result<Response, Error> {
    req.check_size()?;
    let user = auth::admin(host, store, req).await?;
    let reason = parse_body(&req.body)?;
    let github = config::github(host)?;

    let now = host.now_ms();
    let id = DispatchId::issue(now as u64, host.random());
    let fresh = Run::manual(id, user.id, reason, now);
    // Twice at most: before refusing, end the running backup if it is
    // stuck (a passed deadline or GitHub's record must not wait for cron),
    // then start again; whatever runs then (another click's run, if its
    // sweep ended the stuck one first) is the one the 409 names.
    let mut swept = false;
    let run = loop {
        match store.start(&fresh, None).await {
            Ok(Started::Inserted(run)) => break run,
            Ok(Started::Running(running)) if !swept => {
                sweep::sweep_run(host, store, running, sweep::QUICK_GITHUB_TIMEOUT_MS).await?;
                swept = true;
            }
            Ok(Started::Running(running)) => {
                return Err(Error::BackupInProgress {
                    dispatch_id: Some(running.dispatch_id.to_string()),
                })
            }
            // The index refused a concurrent click that this one's read
            // could not see yet: a backup runs.
            Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => {
                return Err(in_progress_error(store).await)
            }
            Err(e) => return Err(e.into()),
        }
    };
    host.log(Level::Info, &format!("backup {id}: inserted, dispatching"));

    match dispatch(host, &github, id).await {
        Ok((workflow_run_id, run_url)) => {
            let run = record_dispatch(store, run, workflow_run_id, run_url).await?;
            host.log(
                Level::Info,
                &format!("backup {id}: dispatched (run {workflow_run_id:?})"),
            );
            Ok(Response::json(
                202,
                &Accepted {
                    dispatch_id: id,
                    status: run.status,
                    workflow_run_id: run.workflow_run_id,
                    run_url: run.run_url,
                },
            ))
        }
        Err(detail) => {
            let error_text = format!("GitHub did not accept the workflow dispatch: {detail}");
            fail_dispatch(host, store, id, &error_text).await?;
            Err(Error::DispatchFailed {
                dispatch_id: id.to_string(),
                detail,
            })
        }
    }
}

/// The 202: the new run, and GitHub's run details when it returned them.
#[derive(Serialize)]
struct Accepted {
    dispatch_id: DispatchId,
    status: Status,
    workflow_run_id: Option<u64>,
    run_url: Option<String>,
}

/// The optional body of a trigger: `{"reason": string}`.
#[derive(Deserialize)]
struct TriggerBody {
    reason: Option<String>,
    /// Anything else, so that it can be refused by name.
    #[serde(flatten)]
    unknown: BTreeMap<String, IgnoredAny>,
}

/// The optional body: nothing, or `{"reason": string}`.
fn parse_body(body: &[u8]) -> Result<Option<String>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: TriggerBody =
        parse_json_object(body, |_| "must be a string").map_err(|e| match e {
            Error::InvalidBody(_) => {
                Error::InvalidBody("the body must be empty or a JSON object".into())
            }
            other => other,
        })?;
    if let Some(unknown) = parsed.unknown.keys().next() {
        return Err(Error::field(
            unknown,
            "is not a known field (only reason is accepted)",
        ));
    }
    match parsed.reason {
        None => Ok(None),
        Some(s) if s.chars().count() <= MAX_REASON_CHARS => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Some(_) => Err(Error::field("reason", "must be at most 500 characters")),
    }
}

/// Sends the dispatch with bounded retries of transient failures.
/// Returns GitHub's run details, or a description of why it failed.
async fn dispatch(
    host: &impl Host,
    github: &github::GitHubConfig,
    id: DispatchId,
) -> Result<(Option<u64>, Option<String>), String> {
    let mut last = String::new();
    for attempt in 1..=github::DISPATCH_ATTEMPTS {
        let wait = match host.fetch(github.dispatch_request(id)).await {
            Ok(response) => match github::read_dispatch_response(&response) {
                DispatchAnswer::Accepted {
                    workflow_run_id,
                    run_url,
                } => return Ok((workflow_run_id, run_url)),
                DispatchAnswer::Refused { detail } => return Err(detail),
                DispatchAnswer::Retry { wait_ms, detail } => {
                    last = detail;
                    wait_ms
                }
            },
            Err(network) => {
                last = format!("network error: {network}");
                None
            }
        };
        host.log(
            Level::Warn,
            &format!("backup {id}: dispatch attempt {attempt} failed: {last}"),
        );
        if attempt == github::DISPATCH_ATTEMPTS {
            break;
        }
        let wait = wait.unwrap_or_else(|| github::backoff_ms(attempt));
        if wait > github::MAX_RETRY_WAIT_MS {
            last = format!("{last} (GitHub asked to wait {} s)", wait / 1000);
            break;
        }
        host.sleep(wait).await;
    }
    Err(format!(
        "{last} after {} attempts",
        github::DISPATCH_ATTEMPTS
    ))
}

/// Stores the run GitHub created, unless a report already did. The write
/// fails only when a report changed the run's state meanwhile; then the
/// row is read and the question asked again (a run has few transitions).
async fn record_dispatch(
    store: &impl Store,
    mut run: Run,
    workflow_run_id: Option<u64>,
    run_url: Option<String>,
) -> Result<Run, Error> {
    loop {
        let mut next = run.clone();
        if next.workflow_run_id.is_none() {
            next.workflow_run_id = workflow_run_id;
        }
        if next.run_url.is_none() {
            next.run_url.clone_from(&run_url);
        }
        if next == run {
            return Ok(run);
        }
        if let Some(saved) = store.update(&run, &next, None).await? {
            return Ok(saved);
        }
        run = store
            .get(run.dispatch_id)
            .await?
            .ok_or(Error::UnknownDispatchId)?;
    }
}

/// Fails a run whose dispatch GitHub refused, unless a report has shown
/// that the run exists after all (read again if its state changed).
async fn fail_dispatch(
    host: &impl Host,
    store: &impl Store,
    id: DispatchId,
    error_text: &str,
) -> Result<(), Error> {
    loop {
        let run = store.get(id).await?.ok_or(Error::UnknownDispatchId)?;
        match run::dispatch_failed(&run, error_text, host.now_ms()) {
            Outcome::Unchanged => return Ok(()),
            Outcome::Changed(next) => {
                if store.update(&run, &next, None).await?.is_some() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_may_be_empty_or_carry_a_reason() {
        assert_eq!(parse_body(b""), Ok(None));
        assert_eq!(parse_body(b"  \n"), Ok(None));
        assert_eq!(parse_body(b"{}"), Ok(None));
        assert_eq!(
            parse_body(br#"{"reason":" before deploy "}"#),
            Ok(Some("before deploy".into()))
        );
    }

    #[test]
    fn a_bad_body_is_a_400_naming_the_problem() {
        assert_eq!(parse_body(b"nope").unwrap_err().code(), "invalid_body");
        assert_eq!(parse_body(b"[1]").unwrap_err().code(), "invalid_body");
        assert_eq!(
            parse_body(br#"{"reason":5}"#).unwrap_err(),
            Error::field("reason", "must be a string")
        );
        assert!(parse_body(br#"{"reasn":"x"}"#)
            .unwrap_err()
            .public_message()
            .starts_with("reasn:"));
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(501));
        assert_eq!(
            parse_body(long.as_bytes()).unwrap_err().code(),
            "invalid_field"
        );
    }
}
