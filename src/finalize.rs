//! `POST /functions/v1/finalize-backup`: the one endpoint the workflow calls.
//!
//! Parse, apply, encode: verify the Standard Webhooks signature, validate
//! the report, recognise a retried delivery by its `webhook-id`, then apply
//! the report through the state machine in `run.rs`.
//!
//! Most reports find their run in progress in the reported attempt: then
//! the decision is made before reading (what [`run::apply_report`] makes of
//! such a run) and one guarded statement applies it and records the
//! delivery ([`Store::apply_to_running`]). Concurrent reports queue on the
//! row lock for that one statement instead of racing and retrying. Anything
//! else (a repeated delivery, a terminal or reopened run, another attempt)
//! is read and decided in full, and written guarded by the state it was
//! decided from.

use crate::config;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::{DbError, Host, Level};
use crate::report::{Event, Report};
use crate::run::{self, Outcome, Run, Status, TriggerSource};
use crate::store::{in_progress_error, Started, Store, ONE_IN_PROGRESS};
use serde::Serialize;

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
    config::webhook_secret(host)?.verify_request(req, host.now_ms() / 1000)?;
    req.require_json()?;
    let report = Report::parse(&req.body)?;
    // verify() refused a missing id, and one over the 256 bytes that
    // backup_report_deliveries keeps, so this is present and fits.
    let webhook_id = req.header("webhook-id").unwrap_or_default();

    let Some(id) = report.dispatch_id else {
        // A scheduled run's registration.
        if let Some((run, Some(_))) = store.read_for_report(None, webhook_id).await? {
            return Ok(answer(200, &run, false));
        }
        return register(host, store, &report, webhook_id).await;
    };
    // The common case first: the decision for a run in progress in the
    // reported attempt that has nothing yet, written if that is the run's
    // state. The store keeps the row's own start time and progress where it
    // leaves them empty, exactly as apply_report keeps them (a test in
    // `testing.rs` holds the two together).
    let now = host.now_ms();
    let mut blank = Run::manual(id, uuid::Uuid::nil(), None, now);
    blank.run_attempt = report.run_attempt;
    if let Outcome::Changed(next) = run::apply_report(&blank, &report, now)? {
        if store.apply_to_running(id, &next, webhook_id).await? {
            log_applied(host, &report, &next);
            return Ok(answer(200, &next, true));
        }
    }
    // Not the common case: read the run, and decide in full.
    match store.read_for_report(Some(id), webhook_id).await? {
        Some((run, None)) => apply(host, store, &report, webhook_id, run).await,
        // A repeated delivery: answered with the run as it is now.
        Some((run, Some(_))) => Ok(answer(200, &run, false)),
        None => Err(Error::UnknownDispatchId),
    }
}

/// Logs a report that changed a run, except progress: a running backup
/// may send many, and `backup_history.progress` already shows the last.
fn log_applied(host: &impl Host, report: &Report, saved: &Run) {
    if report.event == Event::Progress {
        return;
    }
    host.log(
        Level::Info,
        &format!(
            "backup {}: {} (attempt {}) -> {} {}",
            saved.dispatch_id,
            report.event.as_str(),
            report.run_attempt,
            run::status_str(saved.status),
            run::reason_str(saved.failure_reason)
        ),
    );
}

/// The answer to a report: which run, its status now, whether it changed.
#[derive(Serialize)]
struct Answer {
    dispatch_id: DispatchId,
    status: Status,
    changed: bool,
}

fn answer(status: u16, run: &Run, changed: bool) -> Response {
    Response::json(
        status,
        &Answer {
            dispatch_id: run.dispatch_id,
            status: run.status,
            changed,
        },
    )
}

/// Applies a report to `run`, as just read. The write fails only when the
/// run changed state since the read (a transition by another report or a
/// sweep); then it is read again and the report decided again. A run has
/// few transitions, so this ends.
async fn apply(
    host: &impl Host,
    store: &impl Store,
    report: &Report,
    webhook_id: &str,
    mut run: Run,
) -> Result<Response, Error> {
    loop {
        match run::apply_report(&run, report, host.now_ms())? {
            Outcome::Unchanged => {
                store.record_delivery(webhook_id, run.dispatch_id).await?;
                return Ok(answer(200, &run, false));
            }
            Outcome::Changed(next) => match store.update(&run, &next, Some(webhook_id)).await {
                Ok(Some(saved)) => {
                    log_applied(host, report, &saved);
                    return Ok(answer(200, &saved, true));
                }
                Ok(None) => {}
                // Reopening a failed run while another backup runs.
                Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => {
                    return Err(in_progress_error(store).await)
                }
                Err(e) => return Err(e.into()),
            },
        }
        run = store
            .get(run.dispatch_id)
            .await?
            .ok_or(Error::UnknownDispatchId)?;
    }
}

/// A scheduled run's `started` report without a dispatch id: issue one.
///
/// A re-run of a scheduled run (same `workflow_run_id`, later attempt), or a
/// second delivery of its registration, continues the existing row instead
/// of registering another. The lookup runs again after losing the insert to
/// a concurrent delivery for the same run.
async fn register(
    host: &impl Host,
    store: &impl Store,
    report: &Report,
    webhook_id: &str,
) -> Result<Response, Error> {
    debug_assert_eq!(report.event, Event::Started);
    let mut lost_race = false;
    loop {
        if let Some(existing) = store.by_workflow_run(report.workflow_run_id).await? {
            if existing.trigger_source != TriggerSource::Schedule {
                return Err(Error::IllegalTransition(format!(
                    "workflow run {} was dispatched with a dispatch_id; report it",
                    report.workflow_run_id
                )));
            }
            return apply(host, store, report, webhook_id, existing).await;
        }
        if lost_race {
            // Another backup runs; this scheduled run cannot start now.
            return Err(in_progress_error(store).await);
        }
        let now = host.now_ms();
        let id = DispatchId::issue(now as u64, host.random());
        match store
            .start(&Run::scheduled(id, report, now), Some(webhook_id))
            .await
        {
            Ok(Started::Inserted(run)) => {
                host.log(
                    Level::Info,
                    &format!(
                        "backup {id}: scheduled run {} registered",
                        report.workflow_run_id
                    ),
                );
                return Ok(answer(201, &run, true));
            }
            // Perhaps a concurrent delivery for this same run: look again.
            Ok(Started::Running(_)) => lost_race = true,
            Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => lost_race = true,
            Err(e) => return Err(e.into()),
        }
    }
}
