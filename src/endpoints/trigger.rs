//! `POST /functions/v1/trigger-backup`: the "Back up now" button.
//!
//! Order matters: the row is inserted *before* the dispatch, so the
//! single-flight index refuses a second click before GitHub is called, and
//! the workflow can never report against a dispatch id the table does not
//! know. If GitHub refuses, the row is failed (`dispatch_failed`) in the
//! same request; it is never left `in_progress`.

use crate::alerts::Raise;
use crate::config;
use crate::credentials::auth;
use crate::dispatch_id::DispatchId;
use crate::endpoints::sweep;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::github::{self, DispatchAnswer};
use crate::ports::store::{in_progress_error, Started, Store, ONE_IN_PROGRESS};
use crate::ports::{DbError, Host, Level};
use crate::run::{self, Outcome, Run, Status};
use serde::Serialize;

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
            Ok(accepted(&run))
        }
        Err(detail) => {
            let error_text = format!("GitHub did not accept the workflow dispatch: {detail}");
            // The run reported meanwhile: the dispatch worked after all (its
            // answer was lost), and the backup is under way.
            if let Some(run) = fail_dispatch(host, store, id, &error_text).await? {
                host.log(
                    Level::Info,
                    &format!("backup {id}: dispatch answer lost, but the run reported"),
                );
                return Ok(accepted(&run));
            }
            Err(Error::DispatchFailed {
                dispatch_id: id.to_string(),
                detail,
            })
        }
    }
}

/// The 202: the new run, and GitHub's run details when it returned them.
#[derive(Serialize)]
struct Accepted<'a> {
    dispatch_id: DispatchId,
    status: Status,
    workflow_run_id: Option<u64>,
    run_url: Option<&'a str>,
}

fn accepted(run: &Run) -> Response {
    Response::json(
        202,
        &Accepted {
            dispatch_id: run.dispatch_id,
            status: run.status,
            workflow_run_id: run.workflow_run_id,
            run_url: run.run_url.as_deref(),
        },
    )
}

crate::json_object! {
    /// The optional body of a trigger: `{"reason": string}`.
    struct TriggerBody {
        reason: String,
    }
}

/// The optional body: nothing, or `{"reason": string}`.
fn parse_body(body: &[u8]) -> Result<Option<String>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: TriggerBody =
        crate::body::parse(body, |_| "must be a string").map_err(|e| match e {
            Error::InvalidBody(_) => {
                Error::InvalidBody("the body must be empty or a JSON object".into())
            }
            other => other,
        })?;
    if let Some(unknown) = parsed.unknown {
        return Err(Error::field(
            &unknown,
            "is not a known field (only reason is accepted)",
        ));
    }
    match parsed.reason {
        None => Ok(None),
        Some(s) if s.contains('\0') => {
            Err(Error::field("reason", "must not contain NUL characters"))
        }
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
                if github::may_have_arrived(&network) {
                    host.log(
                        Level::Warn,
                        &format!(
                            "backup {id}: dispatch attempt {attempt}: {last}; not sent again, as GitHub may have started the run"
                        ),
                    );
                    return Err(format!(
                        "{last} (not sent again: if GitHub started the run after all, its first report reopens this one)"
                    ));
                }
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
        if let Some(saved) = store.update(&run, &next, None, &Raise::none()).await? {
            return Ok(saved);
        }
        run = store
            .get(run.dispatch_id)
            .await?
            .ok_or(Error::UnknownDispatchId)?;
    }
}

/// Fails a run whose dispatch GitHub refused, unless a report has shown
/// that the run exists after all (read again if its state changed): then
/// that run, as it is.
async fn fail_dispatch(
    host: &impl Host,
    store: &impl Store,
    id: DispatchId,
    error_text: &str,
) -> Result<Option<Run>, Error> {
    loop {
        let run = store.get(id).await?.ok_or(Error::UnknownDispatchId)?;
        match run::dispatch_failed(&run, error_text, host.now_ms()) {
            Outcome::Unchanged => return Ok(Some(run)),
            Outcome::Changed(next) => {
                let raise = Raise::of(host, &run, &next, None);
                if store.update(&run, &next, None, &raise).await?.is_some() {
                    return Ok(None);
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

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

    #[test]
    fn trigger_inserts_dispatches_and_records_the_run() {
        let (host, store) = (host(), store());
        host.answer(200, &[], r#"{"workflow_run_id": 4242, "html_url": "https://github.com/acme/app/actions/runs/4242"}"#);
        let r = trigger(&host, &store, ADMIN, r#"{"reason":"before deploy"}"#);
        assert_eq!(r.status, 202);
        let b = body(&r);
        assert_eq!(b["status"], "in_progress");
        assert_eq!(b["workflow_run_id"], 4242);
        assert_eq!(
            b["run_url"],
            "https://github.com/acme/app/actions/runs/4242"
        );
        let run = store.only();
        assert_eq!(run.dispatch_id.to_string(), b["dispatch_id"]);
        assert_eq!(run.reason.as_deref(), Some("before deploy"));
        assert_eq!(run.triggered_by.unwrap().to_string(), ADMIN);
        let sent = &host.fetched.borrow()[0];
        let sent_body: Value = serde_json::from_str(sent.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent_body["inputs"]["dispatch_id"], b["dispatch_id"]);
    }

    #[test]
    fn trigger_accepts_a_204_without_run_details() {
        let (host, store) = (host(), store());
        host.answer(204, &[], "");
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202);
        assert_eq!(body(&r)["workflow_run_id"], Value::Null);
        assert_eq!(body(&r)["run_url"], Value::Null);
    }

    #[test]
    fn trigger_returns_409_with_the_running_dispatch_id() {
        let (host, store) = (host(), store());
        let first = dispatched(&host, &store);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 409);
        assert_eq!(body(&r)["error"]["code"], "backup_in_progress");
        assert_eq!(body(&r)["dispatch_id"], first);
        assert_eq!(host.fetched.borrow().len(), 1, "no second dispatch");
    }

    #[test]
    fn trigger_refuses_non_admins_and_missing_tokens() {
        let (host, store) = (host(), store());
        assert_eq!(trigger(&host, &store, OTHER, "").status, 403);
        let req = Request::new(
            "POST",
            "http://x/functions/v1/trigger-backup",
            vec![],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "trigger-backup", &req));
        assert_eq!(r.status, 401);
        assert_eq!(body(&r)["error"]["code"], "missing_token");
        assert!(store.runs.borrow().is_empty());
    }

    #[test]
    fn dispatch_is_retried_on_5xx_then_succeeds() {
        let (host, store) = (host(), store());
        host.answer(502, &[], "bad gateway");
        host.answer(429, &[("retry-after", "1")], "");
        host.answer(204, &[], "");
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202);
        assert_eq!(host.fetched.borrow().len(), 3);
        assert_eq!(*host.slept.borrow(), vec![250, 1000]);
    }

    #[test]
    fn dispatch_refused_leaves_a_failed_row_and_answers_502() {
        let (host, store) = (host(), store());
        host.answer(422, &[], r#"{"message":"No ref found for: nope"}"#);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 502);
        assert_eq!(body(&r)["error"]["code"], "dispatch_failed");
        let run = store.only();
        assert_eq!(body(&r)["dispatch_id"], run.dispatch_id.to_string());
        assert_eq!(run.status, Status::Failed);
        assert_eq!(run.failure_reason, Some(FailureReason::DispatchFailed));
        assert_eq!(
            run.error_text.as_deref(),
            Some("GitHub did not accept the workflow dispatch: HTTP 422: No ref found for: nope")
        );
        assert!(!r.body.contains("ghp_test"));
    }

    #[test]
    fn dispatch_gives_up_after_bounded_retries() {
        let (host, store) = (host(), store());
        for _ in 0..3 {
            host.answer(503, &[], "");
        }
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 502);
        assert_eq!(host.fetched.borrow().len(), 3);
        assert_eq!(
            store.only().failure_reason,
            Some(FailureReason::DispatchFailed)
        );
        assert!(store.only().error_text.unwrap().contains("HTTP 503"));
    }

    #[test]
    fn a_dispatch_that_may_have_reached_github_is_not_sent_again() {
        let (host, store) = (host(), store());
        host.fetch_answers.borrow_mut().push_back(Err(
            "error sending request for url (https://api.github.com/x): client error (SendRequest): connection closed before message completed".into(),
        ));
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(
            (r.status, body(&r)["error"]["code"].clone()),
            (502, json!("dispatch_failed"))
        );
        assert_eq!(host.fetched.borrow().len(), 1, "one dispatch, not three");
        let run = store.only();
        assert_eq!(run.failure_reason, Some(FailureReason::DispatchFailed));
        assert!(run
            .error_text
            .unwrap()
            .ends_with("(not sent again: if GitHub started the run after all, its first report reopens this one)"));
    }

    #[test]
    fn a_dispatch_that_could_not_connect_is_sent_again() {
        let (host, store) = (host(), store());
        host.fetch_answers.borrow_mut().push_back(Err(
            "error sending request for url (https://api.github.com/x): client error (Connect): tcp connect error: Connection refused (os error 111)".into(),
        ));
        host.answer(204, &[], "");
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202);
        assert_eq!(host.fetched.borrow().len(), 2);
    }

    #[test]
    fn a_run_that_reported_while_its_dispatch_failed_is_answered_202_not_502() {
        let host = host();
        let store = std::rc::Rc::new(store());
        // The run's `started` report lands while the dispatch's answer is
        // being lost.
        let reported = std::rc::Rc::clone(&store);
        *host.on_fetch.borrow_mut() = Some(Box::new(move || {
            for run in reported.runs.borrow_mut().iter_mut() {
                run.workflow_run_id = Some(1001);
                run.started_at = Some(crate::testing::START_MS);
            }
        }));
        host.fetch_answers
            .borrow_mut()
            .push_back(Err("Signal timed out.".into()));
        let r = trigger(&host, &store, ADMIN, "");
        let run = store.only();
        assert_eq!(
            body(&r),
            json!({"dispatch_id": run.dispatch_id.to_string(), "status": "in_progress", "workflow_run_id": 1001, "run_url": null})
        );
        assert_eq!(r.status, 202);
        assert_eq!((run.status, run.failure_reason), (Status::InProgress, None));
    }

    #[test]
    fn missing_github_config_is_a_500_naming_it_and_writes_nothing() {
        let mut host = host();
        host.env.remove("GITHUB_TOKEN");
        let store = store();
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: GITHUB_TOKEN is not set"
        );
        assert!(store.runs.borrow().is_empty());
    }

    #[test]
    fn database_down_is_a_503() {
        let (host, store) = (host(), store());
        store.down.set(true);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 503);
        assert_eq!(body(&r)["error"]["code"], "database_unavailable");
        assert!(!r.body.contains("connection refused"));
    }

    #[test]
    fn a_stuck_run_no_longer_blocks_the_button() {
        let (host, store) = (host(), store());
        let stuck = dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        host.answer(500, &[], "");
        host.answer(200, &[], r#"{"workflow_run_id": 5000}"#);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202, "{}", r.body);
        let runs = store.runs.borrow();
        let old = runs
            .iter()
            .find(|r| r.dispatch_id.to_string() == stuck)
            .unwrap();
        assert_eq!(old.failure_reason, Some(FailureReason::Lost));
        assert_eq!(
            old.outcome_source,
            Some(crate::run::OutcomeSource::Deadline)
        );
    }
}
