//! `POST /functions/v1/finalize-backup`: the one endpoint the workflow calls.
//!
//! Parse, apply, encode: authenticate the report as `BACKUP_REPORT_AUTH`
//! asks (the Standard Webhooks signature, GitHub's OIDC token naming this
//! very run, or both: [`crate::oidc`]), validate the report, recognise a
//! retried delivery by its `webhook-id` and body hash, then apply
//! the report through the state machine in `run.rs` with optimistic
//! concurrency, so duplicate and concurrent reports apply exactly once.

use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::oidc;
use crate::ports::{DbError, Host, Level};
use crate::report::{Event, Report};
use crate::run::{self, Outcome, Run, Status, TriggerSource};
use crate::store::{in_progress_error, Delivery, Store, ONE_IN_PROGRESS};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How often a report is re-applied after losing a race with another writer.
/// Each round is one read and one conditional write; past the first few,
/// a short random pause spreads the contenders out.
const MAX_RACES: u32 = 40;

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
    let (run_of_token, webhook_id) = oidc::authenticate_report(host, req).await?;
    req.require_json()?;
    let report = Report::parse(&req.body)?;
    if let Some(run) = run_of_token {
        run.binds(&report)?;
    }
    let body_sha256 = hex_sha256(&req.body);
    let delivery = Delivery {
        id: webhook_id,
        body_sha256: &body_sha256,
    };

    if let Some(seen) = store.delivery(webhook_id).await? {
        // The same id with another body is not a retry: answering it with
        // the first delivery's run would hide a report that was never applied.
        if seen.body_sha256.is_some_and(|h| h != body_sha256) {
            return Err(Error::WebhookIdReused);
        }
        let run = store
            .get(seen.dispatch_id)
            .await?
            .ok_or(Error::UnknownDispatchId)?;
        return Ok(answer(200, &run, false));
    }

    match report.dispatch_id {
        Some(id) => apply(host, store, id, &report, delivery).await,
        None => register(host, store, &report, delivery).await,
    }
}

/// The SHA-256 of a body, lower-case hex, as a delivery records it.
fn hex_sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Applies a report to the run its dispatch id names.
async fn apply(
    host: &impl Host,
    store: &impl Store,
    id: DispatchId,
    report: &Report,
    delivery: Delivery<'_>,
) -> Result<Response, Error> {
    for round in 0..MAX_RACES {
        if round >= 3 {
            host.sleep(1 + u32::from(host.random()[0] % 16)).await;
        }
        let run = store.get(id).await?.ok_or(Error::UnknownDispatchId)?;
        match run::apply_report(&run, report, host.now_ms())? {
            Outcome::Unchanged => {
                store.record_delivery(delivery, id).await?;
                return Ok(answer(200, &run, false));
            }
            Outcome::Changed(next) => match store.update(&run, &next, Some(delivery)).await {
                Ok(Some(saved)) => {
                    host.log(
                        Level::Info,
                        &format!(
                            "backup {id}: {} (attempt {}) -> {} {}",
                            report.event.as_str(),
                            report.run_attempt,
                            run::status_str(saved.status),
                            run::reason_str(saved.failure_reason)
                        ),
                    );
                    return Ok(answer(200, &saved, true));
                }
                Ok(None) => continue,
                // Reopening a failed run while another backup runs.
                Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => {
                    return Err(in_progress_error(store).await)
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(Error::Internal(format!(
        "backup {id}: too many concurrent writes"
    )))
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
    delivery: Delivery<'_>,
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
            return apply(host, store, existing.dispatch_id, report, delivery).await;
        }
        if lost_race {
            // Another backup runs; this scheduled run cannot start now.
            return Err(in_progress_error(store).await);
        }
        let now = host.now_ms();
        let id = DispatchId::issue(now as u64, host.random());
        match store
            .insert(&Run::scheduled(id, report, now), Some(delivery))
            .await
        {
            Ok(run) => {
                host.log(
                    Level::Info,
                    &format!(
                        "backup {id}: scheduled run {} registered",
                        report.workflow_run_id
                    ),
                );
                return Ok(answer(201, &run, true));
            }
            Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => lost_race = true,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

    #[test]
    fn the_full_loop_ends_in_success() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let started = finalize(
            &host,
            &store,
            "m1",
            &json!({"event": "started", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1}),
        );
        assert_eq!(
            body(&started),
            json!({"dispatch_id": id, "status": "in_progress", "changed": true})
        );
        let done = finalize(
            &host,
            &store,
            "m2",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump", "size_bytes": 99, "sha256": "a".repeat(64)}),
        );
        assert_eq!(
            body(&done),
            json!({"dispatch_id": id, "status": "success", "changed": true})
        );
        let run = store.only();
        assert_eq!(run.s3_key.as_deref(), Some("backups/x.dump"));
        assert_eq!(run.size_bytes, Some(99));
        // The same terminal report again, under a new webhook-id.
        let again = finalize(
            &host,
            &store,
            "m3",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump"}),
        );
        assert_eq!(body(&again)["changed"], false);
    }

    #[test]
    fn a_retried_delivery_is_answered_without_change() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let report = json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "dump failed"});
        assert_eq!(
            body(&finalize(&host, &store, "same", &report))["changed"],
            true
        );
        let again = finalize(&host, &store, "same", &report);
        assert_eq!(again.status, 200);
        assert_eq!(
            body(&again),
            json!({"dispatch_id": id, "status": "failed", "changed": false})
        );
    }

    #[test]
    fn finalize_rejects_unknown_ids_bad_signatures_and_stale_timestamps() {
        let (host, store) = (host(), store());
        let unknown = DispatchId::issue(1, [1; 10]).to_string();
        let r = finalize(
            &host,
            &store,
            "m",
            &json!({"event": "started", "dispatch_id": unknown, "workflow_run_id": 1, "run_attempt": 1}),
        );
        assert_eq!(r.status, 404);
        let req = Request::new(
            "POST",
            "http://x/functions/v1/finalize-backup",
            vec![
                ("webhook-id".into(), "m".into()),
                (
                    "webhook-timestamp".into(),
                    (host.now_ms() / 1000 - 301).to_string(),
                ),
                ("webhook-signature".into(), "v1,AAAA".into()),
            ],
            b"{}".to_vec(),
        );
        let r = block_on(app::handle(&host, &store, "finalize-backup", &req));
        assert_eq!(r.status, 401);
        assert_eq!(body(&r)["error"]["code"], "invalid_signature");
    }

    #[test]
    fn a_scheduled_run_registers_once_per_delivery_and_per_workflow_run() {
        let (host, store) = (host(), store());
        let start = json!({"event": "started", "workflow_run_id": 555, "run_attempt": 1});
        let first = finalize(&host, &store, "sched-555-1", &start);
        assert_eq!(first.status, 201);
        let id = body(&first)["dispatch_id"].as_str().unwrap().to_string();
        let retry = finalize(&host, &store, "sched-555-1", &start);
        assert_eq!(retry.status, 200);
        assert_eq!(body(&retry)["dispatch_id"], id);
        let resent = finalize(&host, &store, "another-id", &start);
        assert_eq!(body(&resent)["dispatch_id"], id);
        assert_eq!(store.runs.borrow().len(), 1);
        assert_eq!(
            store.only().trigger_source,
            crate::run::TriggerSource::Schedule
        );
    }

    #[test]
    fn a_scheduled_run_while_another_runs_is_a_409() {
        let (host, store) = (host(), store());
        let running = dispatched(&host, &store);
        let r = finalize(
            &host,
            &store,
            "s",
            &json!({"event": "started", "workflow_run_id": 9, "run_attempt": 1}),
        );
        assert_eq!(r.status, 409);
        assert_eq!(body(&r)["dispatch_id"], running);
    }
}
