//! `POST /functions/v1/finalize-backup`: the one endpoint the workflow calls.
//!
//! Parse, apply, encode: authenticate the report as `BACKUP_REPORT_AUTH`
//! asks (the Standard Webhooks signature, GitHub's OIDC token naming this
//! very run, or both: [`crate::credentials::oidc`]), validate the report, recognise a
//! retried delivery by its `webhook-id` and body hash, then apply the report
//! through the state machine in `run.rs`.
//!
//! Most reports find their run in progress in the reported attempt: then
//! the decision is made before reading (what [`run::apply_report`] makes of
//! such a run) and one guarded statement applies it and records the
//! delivery ([`Store::apply_to_running`]). Concurrent reports queue on the
//! row lock for that one statement instead of racing and retrying. Anything
//! else (a repeated delivery, a terminal or reopened run, another attempt)
//! is read by that same statement, decided in full, and written guarded by
//! the state it was decided from.
//!
//! Under load, reports that reach an instance while a statement of their
//! kind is in flight share the next one ([`crate::ports::coalesce`]):
//! `progress` reports to one run are written together, reports that would
//! end their run are read together (a repeat to the run it ended recorded
//! on the way, and a success's repeat listed), and the other retention
//! listings of successes are made together.
//!
//! Round trips to PostgreSQL per report, when it has a statement to itself:
//! one when the fast statement applies it (two for a `succeeded`, whose
//! answer lists what retention prunes), and one for a `failed` or
//! `cancelled` report repeated to the run it already ended (the statement
//! that reads the row records the delivery: [`run::ended_by`]). Otherwise a
//! report that ends the run costs two (the statement, which then reads the
//! row, and the write or the record of the delivery; a `succeeded` repeat
//! records its delivery with the retention listing). A `progress` or
//! `started` report that changes nothing of its running run costs one (its
//! statement records the delivery and says so), one that reopens a run
//! three (the statement, the read, the write), and one refused (its run
//! ended, or no such run) two: the statement records a delivery only for
//! a run it finds in progress in the attempt, so that a recorded delivery
//! is always a decided report, whatever fails after it. A report that ends
//! its run and was read together with others costs one more (the read is
//! shared; the write is its own).

use crate::alerts::{self, Raise};
use crate::credentials::oidc;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::coalesce;
use crate::ports::store::{
    in_progress_error, Applied, Delivered, Delivery, Started, Store, ONE_IN_PROGRESS,
};
use crate::ports::{DbError, Host, Level};
use crate::report::{Event, Report};
use crate::retention;
use crate::run::{self, Outcome, Run, Status, TriggerSource};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

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
    if report.event == Event::Pruned {
        return pruned(store, &report, delivery).await;
    }

    let Some(id) = report.dispatch_id else {
        // A scheduled run's registration.
        if let Some((run, Some(seen))) = store.read_for_report(None, webhook_id).await? {
            retry_of(&seen, &body_sha256)?;
            return Ok(answer(200, &run, false));
        }
        return register(host, store, &report, delivery).await;
    };
    // The common case first: the decision for a run in progress in the
    // reported attempt that has nothing yet, written if that is the run's
    // state. The store keeps the row's own start time and progress where it
    // leaves them empty, exactly as apply_report keeps them (a test in
    // `mod flows` below holds the two together).
    let now = host.now_ms();
    let mut blank = Run::manual(id, uuid::Uuid::nil(), None, now);
    blank.run_attempt = report.run_attempt;
    // The run as read, if the statement did not settle the report, and
    // whether the delivery is already recorded.
    let (found, recorded) = match run::apply_report(&blank, &report, now)? {
        Outcome::Changed(next) => {
            let raise = Raise::of(host, &blank, &next, report.verification.as_deref());
            // Under load, progress reports to one run are written together,
            // and reports that would end their run are read together
            // (coalesce.rs); a `started` is written alone.
            let raises = raise.kind.is_some();
            let applied = if coalesce::applies(&next, &raise) {
                coalesce::progress(store, id, &next, delivery).await?
            } else if coalesce::ends(&next) {
                let repeats = run::Repeats::of(&report);
                coalesce::ending(store, id, &next, delivery, raise, repeats).await?
            } else {
                store
                    .apply_to_running(id, &next, delivery, &raise, None)
                    .await?
            };
            match applied {
                Applied::Written => {
                    log_applied(host, &report, &next);
                    let answer =
                        after_success(store, &report, *next, true, Listing::Make(None)).await;
                    if raises {
                        alerts::send_soon(host, store).await;
                    }
                    return answer;
                }
                // A report that brought nothing new, alone or in a batch:
                // the run is in progress as decided, the delivery recorded.
                Applied::Recorded => return Ok(answer(200, &next, false)),
                // The run had already ended as this report ends it, and
                // the delivery is recorded: decided from the row as read.
                Applied::Repeat(run, prune) => match run::apply_report(&run, &report, now)? {
                    Outcome::Unchanged => {
                        let listing = prune.map_or(Listing::Make(None), Listing::Made);
                        return after_success(store, &report, *run, false, listing).await;
                    }
                    // Not reached (run.rs's tests hold both states a
                    // repeat is read in, ended_by's and a success's, to
                    // apply_report); decided in full all the same.
                    Outcome::Changed(_) => (Some((*run, None)), true),
                },
                Applied::Read(found) => (*found, false),
                Applied::Missed => (store.read_for_report(Some(id), webhook_id).await?, false),
            }
        }
        Outcome::Unchanged => (store.read_for_report(Some(id), webhook_id).await?, false),
    };
    // Not the common case: decide in full from the run as read.
    let decided = match found {
        // A repeated delivery: answered with the run as it is now. (With
        // `recorded`, the delivery read is this one's own record.)
        Some((run, Some(seen))) if !recorded => {
            retry_of(&seen, &body_sha256)?;
            Ok((run, false, false, None))
        }
        Some((run, _)) => apply(host, store, &report, delivery, run, recorded).await,
        None => Err(Error::UnknownDispatchId),
    };
    let (run, changed, raised, unrecorded) = match decided {
        Ok(decided) => decided,
        Err(e) => {
            // A refused report leaves no record, so that its retry is
            // refused again rather than answered as a retry.
            if recorded {
                store.forget_delivery(delivery).await?;
            }
            return Err(e);
        }
    };
    let answer = after_success(store, &report, run, changed, Listing::Make(unrecorded)).await;
    if raised {
        alerts::send_soon(host, store).await;
    }
    answer
}

/// Checks that an earlier delivery under the same `webhook-id` was this
/// body: the same id with another body is not a retry, and answering it with
/// the first delivery's run would hide a report that was never applied.
///
/// # Errors
/// 409 [`Error::WebhookIdReused`].
fn retry_of(seen: &Delivered, body_sha256: &str) -> Result<(), Error> {
    if seen
        .body_sha256
        .as_deref()
        .is_some_and(|h| h != body_sha256)
    {
        return Err(Error::WebhookIdReused);
    }
    Ok(())
}

/// The SHA-256 of a body, lower-case hex, as a delivery records it.
fn hex_sha256(body: &[u8]) -> String {
    // By hand: `format!("{:02x}")` would pull the formatting machinery in.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(body) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 15)]));
    }
    hex
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

/// The answer to a report: which run, its status now, whether it changed;
/// to a `succeeded` report of a successful run, also the keys retention
/// deletes now (`prune`, possibly empty).
#[derive(Serialize)]
struct Answer<'a> {
    dispatch_id: DispatchId,
    status: Status,
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<&'a RawValue>,
}

impl<'a> Answer<'a> {
    fn of(run: &Run, changed: bool, prune: Option<&'a RawValue>) -> Self {
        Answer {
            dispatch_id: run.dispatch_id,
            status: run.status,
            changed,
            prune,
        }
    }
}

fn answer(status: u16, run: &Run, changed: bool) -> Response {
    Response::json(status, &Answer::of(run, changed, None))
}

/// Whether the answer to `report` about `run` lists what retention prunes:
/// a `succeeded` report of a successful run.
fn prunes(report: &Report, run: &Run) -> bool {
    report.event == Event::Succeeded && run.status == Status::Success
}

/// Where a success's answer gets what retention deletes now.
enum Listing<'d> {
    /// To be listed by a statement of its own, which also stores the
    /// verdict the report carries and records the delivery, if any, that
    /// [`apply`] left to it (a repeat's: one round trip instead of two).
    Make(Option<Delivery<'d>>),
    /// Listed by the statement that read the report as a repeat.
    Made(String),
}

/// Answers a report once the run is saved. After a `succeeded` report of a
/// successful run (first delivery, retry or repeat alike, so a lost answer
/// costs nothing), the answer lists what retention deletes now, as
/// `listing` says. The success is already saved: an error here is a 5xx
/// the workflow retries, and the retry is answered the same way.
async fn after_success(
    store: &impl Store,
    report: &Report,
    run: Run,
    changed: bool,
    listing: Listing<'_>,
) -> Result<Response, Error> {
    if !prunes(report, &run) {
        return Ok(answer(200, &run, changed));
    }
    let prune = match listing {
        Listing::Made(listed) => listed,
        Listing::Make(unrecorded) => {
            let folder = retention::folder(run.s3_key.as_deref().unwrap_or_default());
            coalesce::after_success(
                store,
                run.dispatch_id,
                report.verification.as_deref(),
                folder,
                unrecorded,
            )
            .await?
        }
    };
    let prune = serde_json::from_str(&prune).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Response::json(200, &Answer::of(&run, changed, Some(prune))))
}

/// A `pruned` report: the objects a success's answer listed are deleted.
/// Answered like a report that changed nothing of its own run; the rows
/// it names get `pruned_at` (a repeat marks nothing twice). It must come
/// from the success itself ([`run::accepts_pruned`]), and only keys that
/// retention lists for it are marked (mark_pruned.sql). Its delivery is
/// recorded like any report's: a retry is answered again, and its
/// `webhook-id` reused with another body is refused.
async fn pruned(
    store: &impl Store,
    report: &Report,
    delivery: Delivery<'_>,
) -> Result<Response, Error> {
    let id = report.dispatch_id.ok_or(Error::UnknownDispatchId)?;
    let (run, seen) = store
        .read_for_report(Some(id), delivery.id)
        .await?
        .ok_or(Error::UnknownDispatchId)?;
    if let Some(seen) = seen {
        retry_of(&seen, delivery.body_sha256)?;
        return Ok(answer(200, &run, false));
    }
    run::accepts_pruned(&run, report)?;
    let folder = retention::folder(run.s3_key.as_deref().unwrap_or_default());
    let keys = report.pruned.as_deref().unwrap_or("[]");
    store.mark_pruned(id, folder, keys, delivery).await?;
    Ok(answer(200, &run, false))
}

/// Applies a report to the run its dispatch id names: the run as saved,
/// whether the report changed it, whether the change raised alerts, and
/// the delivery if it is still to be recorded: a report that changed
/// nothing and whose answer lists what retention prunes has it recorded
/// by that listing ([`after_success`]), one round trip instead of two.
async fn apply<'d>(
    host: &impl Host,
    store: &impl Store,
    report: &Report,
    delivery: Delivery<'d>,
    mut run: Run,
    recorded: bool,
) -> Result<(Run, bool, bool, Option<Delivery<'d>>), Error> {
    loop {
        match run::apply_report(&run, report, host.now_ms())? {
            Outcome::Unchanged if recorded => return Ok((run, false, false, None)),
            Outcome::Unchanged if prunes(report, &run) => {
                return Ok((run, false, false, Some(delivery)));
            }
            Outcome::Unchanged => {
                store.record_delivery(delivery, run.dispatch_id).await?;
                return Ok((run, false, false, None));
            }
            Outcome::Changed(next) => {
                let raise = Raise::of(host, &run, &next, report.verification.as_deref());
                match store.update(&run, &next, Some(delivery), &raise).await {
                    Ok(Some(saved)) => {
                        log_applied(host, report, &saved);
                        return Ok((saved, true, raise.kind.is_some(), None));
                    }
                    Ok(None) => {}
                    // Reopening a failed run while another backup runs.
                    Err(DbError::UniqueViolation(c)) if c == ONE_IN_PROGRESS => {
                        return Err(in_progress_error(store).await)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
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
            let (run, changed, raised, _) =
                apply(host, store, report, delivery, existing, false).await?;
            if raised {
                alerts::send_soon(host, store).await;
            }
            return Ok(answer(200, &run, changed));
        }
        if lost_race {
            // Another backup runs; this scheduled run cannot start now.
            return Err(in_progress_error(store).await);
        }
        let now = host.now_ms();
        let id = DispatchId::issue(now as u64, host.random());
        match store
            .start(&Run::scheduled(id, report, now), Some(delivery))
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

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::ports::store::Store;
    use crate::run::{OutcomeSource, Run};
    use crate::testing::kit::*;
    use crate::testing::merge_into_running;

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
            json!({"dispatch_id": id, "status": "success", "changed": true, "prune": []})
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
    fn a_failure_repeated_to_its_failed_run_is_recorded_by_the_statement_that_reads_it() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let failed = json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "dump failed"});
        assert_eq!(
            body(&finalize(&host, &store, "f1", &failed))["changed"],
            true
        );
        let version = store.only().version;
        // The same report under a new webhook-id: a repeat.
        let again = finalize(&host, &store, "f2", &failed);
        assert_eq!(
            body(&again),
            json!({"dispatch_id": id, "status": "failed", "changed": false})
        );
        assert_eq!(store.repeats_recorded.get(), 1);
        assert!(store.deliveries.borrow().contains_key("f2"));
        // Its retry is told apart by the read, and records nothing again.
        let retry = finalize(&host, &store, "f2", &failed);
        assert_eq!(body(&retry)["changed"], false);
        assert_eq!(store.repeats_recorded.get(), 1);
        // Another verdict for the same attempt is refused, and not recorded.
        let cancelled = json!({"event": "cancelled", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1});
        assert_eq!(finalize(&host, &store, "c1", &cancelled).status, 409);
        assert!(!store.deliveries.borrow().contains_key("c1"));
        assert_eq!(store.only().version, version, "nothing written");
    }

    #[test]
    fn a_progress_report_that_changes_nothing_is_recorded_by_its_one_statement() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let progress = json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"bytes": 1}});
        assert_eq!(
            body(&finalize(&host, &store, "p1", &progress))["changed"],
            true
        );
        let version = store.only().version;
        let same = finalize(&host, &store, "p2", &progress);
        assert_eq!(
            body(&same),
            json!({"dispatch_id": id, "status": "in_progress", "changed": false})
        );
        assert!(store.deliveries.borrow().contains_key("p2"));
        assert_eq!(store.only().version, version);
    }

    #[test]
    fn a_report_recorded_and_then_refused_leaves_no_record_so_its_retry_is_refused_again() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        // Just before the progress statement locked the row, the run
        // succeeded.
        let mut succeeded = store.only();
        succeeded.status = Status::Success;
        succeeded.workflow_run_id = Some(4242);
        succeeded.outcome_source = Some(run::OutcomeSource::Report);
        succeeded.s3_key = Some("backups/x.dump".into());
        succeeded.finished_at = Some(host.now_ms());
        *store.overtaken_by.borrow_mut() = Some(succeeded);
        let late = json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"bytes": 9}});
        let refused = finalize(&host, &store, "late", &late);
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(!store.deliveries.borrow().contains_key("late"));
        let again = finalize(&host, &store, "late", &late);
        assert_eq!(again.status, 409, "{}", again.body);
    }

    #[test]
    fn a_report_cut_off_by_a_database_error_is_applied_by_its_retry_not_taken_for_a_repeat() {
        // A late `started` to a run the deadline failed as lost, and a
        // progress report from a re-run of a failed run: neither is in the
        // state the progress statement writes, so the core reads the row
        // next. The database goes down in between; the retry must still
        // apply the report.
        for (late, reopened_attempt) in [
            (
                json!({"event": "started", "dispatch_id": "", "workflow_run_id": 4242, "run_attempt": 1}),
                1,
            ),
            (
                json!({"event": "progress", "dispatch_id": "", "workflow_run_id": 4242, "run_attempt": 2, "progress": {"phase": "dump"}}),
                2,
            ),
        ] {
            let (host, store) = (host(), store());
            let id = dispatched(&host, &store);
            let lost = store.only().failed_by(
                FailureReason::Lost,
                OutcomeSource::Deadline,
                "never started",
                host.now_ms(),
            );
            *store.runs.borrow_mut() = vec![lost];
            let mut late = late;
            late["dispatch_id"] = json!(id);
            store.down_after_progress.set(true);
            let cut = finalize(&host, &store, "late", &late);
            assert_eq!(
                (cut.status, error_code(&cut)),
                (503, json!("database_unavailable"))
            );
            assert!(
                !store.deliveries.borrow().contains_key("late"),
                "no record without its report"
            );
            store.down.set(false);
            let retried = finalize(&host, &store, "late", &late);
            assert_eq!(
                body(&retried),
                json!({"dispatch_id": id, "status": "in_progress", "changed": true})
            );
            let row = store.only();
            assert_eq!(
                (row.status, row.run_attempt),
                (Status::InProgress, reopened_attempt)
            );
            assert!(store.deliveries.borrow().contains_key("late"));
        }
    }

    #[test]
    fn a_progress_report_that_changes_nothing_is_answered_by_its_statement_alone() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let report = json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "dump"}});
        assert_eq!(
            body(&finalize(&host, &store, "p1", &report))["changed"],
            true
        );
        // Down after the statement: a read would fail, and none is needed.
        store.down_after_progress.set(true);
        assert_eq!(
            body(&finalize(&host, &store, "p2", &report)),
            json!({"dispatch_id": id, "status": "in_progress", "changed": false})
        );
        assert!(store.deliveries.borrow().contains_key("p2"));
    }

    #[test]
    fn a_progress_report_to_an_ended_or_unknown_run_is_refused_and_leaves_no_record() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let failed = json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "dump failed"});
        assert_eq!(finalize(&host, &store, "f1", &failed).status, 200);
        // The progress statement records a delivery only for a run in
        // progress in the attempt: a refused report leaves none.
        let late = json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"bytes": 9}});
        let refused = finalize(&host, &store, "late", &late);
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert!(!store.deliveries.borrow().contains_key("late"));
        assert_eq!(store.only().status, Status::Failed);
        let unknown = DispatchId::issue(1, [1; 10]).to_string();
        let stray = json!({"event": "progress", "dispatch_id": unknown, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"bytes": 9}});
        let missing = finalize(&host, &store, "stray", &stray);
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert!(!store.deliveries.borrow().contains_key("stray"));
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

    /// Every report a run in progress can get, in the reported attempt.
    fn reports(id: &str) -> Vec<Value> {
        let base = json!({"dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 2});
        let with = |extra: Value| {
            let mut r = base.clone();
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            r
        };
        vec![
            with(json!({"event": "started"})),
            with(json!({"event": "progress"})),
            with(json!({"event": "progress", "progress": {"phase": "dump", "bytes": 7}})),
            with(
                json!({"event": "succeeded", "s3_key": "k.dump", "size_bytes": 3, "sha256": "b".repeat(64)}),
            ),
            with(json!({"event": "failed", "error_text": "pg_dump: boom"})),
            with(json!({"event": "failed"})),
            with(json!({"event": "cancelled"})),
        ]
    }

    #[test]
    fn the_one_statement_merge_is_what_apply_report_decides_for_a_running_run() {
        let now = 1_800_000_000_000;
        let id = DispatchId::issue(now as u64, [7; 10]);
        let mut rows = Vec::new();
        for started in [None, Some(now - 5_000)] {
            for progress in [None, Some(r#"{"phase":"upload"}"#.to_string())] {
                for workflow_run_id in [None, Some(4242)] {
                    let mut row = Run::manual(id, Uuid::nil(), Some("r".into()), now - 9_000);
                    row.run_attempt = 2;
                    row.started_at = started;
                    row.progress.clone_from(&progress);
                    row.workflow_run_id = workflow_run_id;
                    row.run_url = Some("https://github.com/acme/app/actions/runs/4242".into());
                    rows.push(row);
                }
            }
        }
        for wire in reports(&id.to_string()) {
            let report = Report::parse(wire.to_string().as_bytes()).unwrap();
            let mut blank = Run::manual(id, Uuid::nil(), None, now);
            blank.run_attempt = report.run_attempt;
            let Outcome::Changed(next) = run::apply_report(&blank, &report, now).unwrap() else {
                panic!("a blank running run always changes: {wire}");
            };
            for row in &rows {
                let merged = merge_into_running(row, &next);
                match run::apply_report(row, &report, now).unwrap() {
                    Outcome::Changed(decided) => assert_eq!(merged, *decided, "{wire} on {row:?}"),
                    Outcome::Unchanged => assert_eq!(merged, *row, "{wire} on {row:?}"),
                }
            }
        }
    }

    #[test]
    fn a_progress_report_applies_in_one_write_and_a_retry_of_it_changes_nothing() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let report = json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "dump"}});
        let first = finalize(&host, &store, "p1", &report);
        assert_eq!(
            body(&first),
            json!({"dispatch_id": id, "status": "in_progress", "changed": true})
        );
        let version = store.only().version;
        let again = finalize(&host, &store, "p1", &report);
        assert_eq!(
            body(&again),
            json!({"dispatch_id": id, "status": "in_progress", "changed": false})
        );
        let same_news = finalize(&host, &store, "p2", &report);
        assert_eq!(body(&same_news)["changed"], false);
        let row = store.only();
        assert_eq!(row.version, version, "neither repeat wrote the row");
        assert_eq!(row.progress.as_deref(), Some(r#"{"phase":"dump"}"#));
        assert!(store.deliveries.borrow().contains_key("p2"));
    }

    #[test]
    fn a_verdict_still_applies_after_a_progress_report_landed_since_the_read() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let read = store.only();
        let verdict = read.clone().failed_by(
            FailureReason::TimedOut,
            OutcomeSource::Deadline,
            "max runtime passed",
            host.now_ms(),
        );
        let r = finalize(
            &host,
            &store,
            "p1",
            &json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "upload"}}),
        );
        assert_eq!(r.status, 200);
        // The progress report started the run: its state is not the one the
        // verdict was made from, so the verdict must be made again.
        assert_eq!(
            block_on(Store::update(
                &store,
                &read,
                &verdict,
                None,
                &crate::alerts::Raise::none()
            )),
            Ok(None)
        );
        let read = store.only();
        finalize(
            &host,
            &store,
            "p2",
            &json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "done"}}),
        );
        let verdict = read.clone().failed_by(
            FailureReason::TimedOut,
            OutcomeSource::Deadline,
            "max runtime passed",
            host.now_ms(),
        );
        let saved = block_on(Store::update(
            &store,
            &read,
            &verdict,
            None,
            &crate::alerts::Raise::none(),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(saved.status, Status::Failed);
        assert_eq!(saved.failure_reason, Some(FailureReason::TimedOut));
        assert_eq!(
            saved.progress.as_deref(),
            Some(r#"{"phase":"done"}"#),
            "the progress acknowledged in between is kept"
        );
    }

    #[test]
    fn a_report_from_a_new_attempt_reopens_through_the_full_path() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let failed = finalize(
            &host,
            &store,
            "f1",
            &json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "x"}),
        );
        assert_eq!(body(&failed)["status"], "failed");
        let rerun = finalize(
            &host,
            &store,
            "s2",
            &json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 2, "progress": {"phase": "dump"}}),
        );
        assert_eq!(
            body(&rerun),
            json!({"dispatch_id": id, "status": "in_progress", "changed": true})
        );
        let row = store.only();
        assert_eq!((row.run_attempt, row.error_text), (2, None));
        assert_eq!(row.progress.as_deref(), Some(r#"{"phase":"dump"}"#));
    }

    /// A run that succeeded `age_days` ago with an object under `backups/`.
    fn succeeded(host: &FakeHost, store: &MemStore, n: u32, age_days: i64) -> String {
        let id = dispatched(host, store);
        let key = format!("backups/2026110{n}T000000Z_{id}.dump");
        let r = finalize(
            host,
            store,
            &format!("s{n}"),
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": key, "size_bytes": 1, "sha256": "b".repeat(64)}),
        );
        assert_eq!(r.status, 200, "{:?}", body(&r));
        for run in store.runs.borrow_mut().iter_mut() {
            if run.dispatch_id.to_string() == id {
                run.finished_at = Some(host.now_ms() - age_days * 86_400_000);
            }
        }
        key
    }

    /// Retention of 30 days keeping the newest 2, three successes 90, 60
    /// and 40 days old, and a new run: the old keys, the new run's dispatch
    /// id and the key it stores.
    fn three_old_successes_and_a_new_run(
        host: &FakeHost,
        store: &MemStore,
    ) -> ([String; 3], String, String) {
        store.retention.set((Some(30), 2));
        let old = [
            succeeded(host, store, 1, 90),
            succeeded(host, store, 2, 60),
            succeeded(host, store, 3, 40),
        ];
        let id = dispatched(host, store);
        let key = format!("backups/20261130T000000Z_{id}.dump");
        (old, id, key)
    }

    #[test]
    fn a_success_answer_lists_what_retention_prunes_and_a_pruned_report_marks_it() {
        let (host, store) = (host(), store());
        let (old, id, key) = three_old_successes_and_a_new_run(&host, &store);
        let done = finalize(
            &host,
            &store,
            "latest",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": key}),
        );
        // Newest two kept (this one and the 40-day-old one); the older two
        // go, oldest first.
        assert_eq!(
            body(&done),
            json!({"dispatch_id": id, "status": "success", "changed": true, "prune": [old[0], old[1]]})
        );
        let pruned = finalize(
            &host,
            &store,
            "pruned-1",
            &json!({"event": "pruned", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "pruned": [old[1], old[0], "backups/not-ours.dump"]}),
        );
        assert_eq!(
            body(&pruned),
            json!({"dispatch_id": id, "status": "success", "changed": false})
        );
        let marked: Vec<_> = store
            .runs
            .borrow()
            .iter()
            .filter(|r| r.pruned_at.is_some())
            .map(|r| r.s3_key.clone().unwrap())
            .collect();
        assert_eq!(marked, vec![old[0].clone(), old[1].clone()]);
        // The same report again changes nothing; the answer to a retried
        // success no longer lists them.
        let again = finalize(
            &host,
            &store,
            "pruned-2",
            &json!({"event": "pruned", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "pruned": [old[1]]}),
        );
        assert_eq!(again.status, 200);
        assert_eq!(
            store
                .runs
                .borrow()
                .iter()
                .filter(|r| r.pruned_at.is_some())
                .count(),
            2
        );
        let retried = finalize(
            &host,
            &store,
            "latest",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": key}),
        );
        assert_eq!(body(&retried)["prune"], json!([]));
    }

    #[test]
    fn a_pruned_report_comes_from_its_own_success_and_marks_only_what_retention_lists_for_it() {
        let (host, store) = (host(), store());
        let (old, id, key) = three_old_successes_and_a_new_run(&host, &store);
        let done = json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": key});
        assert_eq!(
            body(&finalize(&host, &store, "latest", &done))["prune"],
            json!([old[0], old[1]])
        );
        let marked = || -> Vec<String> {
            store
                .runs
                .borrow()
                .iter()
                .filter(|r| r.pruned_at.is_some())
                .map(|r| r.s3_key.clone().unwrap())
                .collect()
        };
        let pruned = |webhook_id: &str,
                      run: &str,
                      workflow_run: u64,
                      attempt: u32,
                      keys: &[&String]| {
            finalize(
                &host,
                &store,
                webhook_id,
                &json!({"event": "pruned", "dispatch_id": run, "workflow_run_id": workflow_run, "run_attempt": attempt, "pruned": keys}),
            )
        };
        // Another workflow run naming this success, a later attempt, and a
        // run still in progress: refused, nothing marked.
        let running = dispatched(&host, &store);
        for (refused, code) in [
            (
                pruned("p-other-run", &id, 9999, 1, &[&old[0]]),
                "illegal_transition",
            ),
            (
                pruned("p-attempt", &id, 4242, 2, &[&old[0]]),
                "illegal_transition",
            ),
            (
                pruned("p-running", &running, 4242, 1, &[&old[0]]),
                "illegal_transition",
            ),
        ] {
            assert_eq!((refused.status, error_code(&refused)), (409, json!(code)));
        }
        assert_eq!(marked(), Vec::<String>::new());
        assert!(!store.deliveries.borrow().contains_key("p-other-run"));
        // Its own report: the key retention keeps (the 40-day-old one, among
        // the newest two) and its own key are not marked, whatever it says.
        let own = pruned("p1", &id, 4242, 1, &[&old[2], &old[0], &key]);
        assert_eq!(
            body(&own),
            json!({"dispatch_id": id, "status": "success", "changed": false})
        );
        assert_eq!(marked(), vec![old[0].clone()]);
        // Retried: answered again. Its webhook-id with another body: refused.
        assert_eq!(
            pruned("p1", &id, 4242, 1, &[&old[2], &old[0], &key]).status,
            200
        );
        let reused = pruned("p1", &id, 4242, 1, &[&old[1]]);
        assert_eq!(
            (reused.status, error_code(&reused)),
            (409, json!("webhook_id_reused"))
        );
        assert_eq!(marked(), vec![old[0].clone()]);
    }

    #[test]
    fn a_repeated_success_records_its_delivery_with_the_retention_listing() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let done = json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump"});
        assert_eq!(body(&finalize(&host, &store, "s1", &done))["changed"], true);
        let version = store.only().version;
        let repeat = finalize(&host, &store, "s2", &done);
        assert_eq!(
            body(&repeat),
            json!({"dispatch_id": id, "status": "success", "changed": false, "prune": []})
        );
        assert_eq!(store.only().version, version, "the repeat wrote no row");
        let recorded = store.deliveries.borrow().get("s2").cloned();
        assert_eq!(recorded.map(|(run, _)| run.to_string()), Some(id.clone()));
        // Recorded with its body: the same id with another body is refused.
        let mut other = done.clone();
        other["s3_key"] = json!("backups/y.dump");
        assert_eq!(
            error_code(&finalize(&host, &store, "s2", &other)),
            "webhook_id_reused"
        );
    }

    #[test]
    fn without_retention_days_nothing_is_pruned() {
        let (host, store) = (host(), store());
        store.retention.set((None, 1));
        succeeded(&host, &store, 1, 900);
        let key = succeeded(&host, &store, 2, 800);
        let id = store.runs.borrow().last().unwrap().dispatch_id;
        let r = finalize(
            &host,
            &store,
            "again",
            &json!({"event": "succeeded", "dispatch_id": id.to_string(), "workflow_run_id": 4242, "run_attempt": 1, "s3_key": key}),
        );
        assert_eq!(body(&r)["prune"], json!([]));
    }

    #[test]
    fn a_success_stores_its_verification_once_and_a_failed_one_is_flagged_by_status() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let verdict = json!({"mode": "restore", "ok": false, "tables": 2, "rows": 1000, "mismatches": [{"table": "public items", "expected": 2000, "actual": 1000}]});
        let done = finalize(
            &host,
            &store,
            "v1",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump", "verification": verdict}),
        );
        assert_eq!(body(&done)["status"], "success");
        let run = store.only();
        assert_eq!(
            serde_json::from_str::<Value>(run.verification.as_deref().unwrap()).unwrap(),
            verdict
        );
        // A later report with another verdict does not replace it.
        finalize(
            &host,
            &store,
            "v2",
            &json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump", "verification": {"mode": "list", "ok": true}}),
        );
        assert_eq!(
            serde_json::from_str::<Value>(store.only().verification.as_deref().unwrap()).unwrap(),
            verdict
        );
        let view = serde_json::to_value(crate::endpoints::status::view(&store.only())).unwrap();
        assert_eq!(view["verification"], verdict);
        assert_eq!(view["verification_failed"], true);
    }

    #[test]
    fn a_malformed_verification_or_pruned_list_is_a_400_naming_it() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        for (field, extra) in [
            (
                "verification",
                json!({"verification": {"mode": "guess", "ok": true}}),
            ),
            ("verification", json!({"verification": "ok"})),
            (
                "pruned",
                json!({"event": "pruned", "pruned": {"key": "backups/x.dump"}}),
            ),
            (
                "pruned",
                json!({"event": "pruned", "pruned": "backups/x.dump"}),
            ),
        ] {
            let mut report = json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "backups/x.dump"});
            for (k, v) in extra.as_object().unwrap() {
                report[k] = v.clone();
            }
            let r = finalize(&host, &store, "bad", &report);
            assert_eq!(r.status, 400, "{report}");
            let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    }
}

/// Reports bound to their GitHub run by its OIDC token (`crate::credentials::oidc`),
/// through whole requests. The RS256 arithmetic is the host's (here
/// `FakeHost::signature_ok`); everything decided is the core's.
#[cfg(test)]
mod oidc_flows {
    use crate::testing::kit::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const ISSUER: &str = "http://127.0.0.1:9/oidc";
    const AUD: &str = "https://ref.supabase.co/functions/v1/finalize-backup";

    fn oidc_host(mode: &str) -> FakeHost {
        let mut h = host();
        for (k, v) in [
            ("BACKUP_REPORT_AUTH", mode),
            ("GITHUB_OIDC_ISSUER", ISSUER),
            ("SUPABASE_URL", "https://ref.supabase.co/"),
        ] {
            h.env.insert(k.into(), v.into());
        }
        if mode == "oidc" {
            h.env.remove("BACKUP_WEBHOOK_SECRET");
        }
        h.signature_ok.set(true);
        h
    }

    fn github_keys(host: &FakeHost, kids: &[&str]) {
        let keys: Vec<Value> = kids
            .iter()
            .map(|kid| {
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                              "n": URL_SAFE_NO_PAD.encode([7u8; 256]), "e": "AQAB"})
            })
            .collect();
        host.answer(200, &[], &json!({ "keys": keys }).to_string());
    }

    /// The claims GitHub gives run 4242, attempt 1, of acme/app's backup.yml.
    fn claims(host: &FakeHost) -> Value {
        let now = host.now_ms() / 1000;
        json!({
            "iss": ISSUER, "aud": AUD, "exp": now + 300, "nbf": now - 5, "iat": now - 5,
            "repository": "acme/app", "ref": "refs/heads/main",
            "workflow_ref": "acme/app/.github/workflows/backup.yml@refs/heads/main",
            "event_name": "workflow_dispatch", "run_id": "4242", "run_attempt": "1",
            "sub": "repo:acme/app:ref:refs/heads/main", "jti": "j-1",
        })
    }

    fn jwt(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([9u8; 256])
        )
    }

    fn rs256(claims: &Value) -> String {
        jwt(
            &json!({"alg": "RS256", "kid": "gh-1", "typ": "JWT"}),
            claims,
        )
    }

    /// A report with the bearer `token` and, when `signed`, the signature.
    fn report(
        host: &FakeHost,
        store: &MemStore,
        webhook_id: &str,
        body: &Value,
        token: Option<&str>,
        signed: bool,
    ) -> Response {
        let body = body.to_string();
        let ts = host.now_ms() / 1000;
        let mut headers = vec![
            ("webhook-id".to_string(), webhook_id.to_string()),
            ("content-type".into(), "application/json".into()),
        ];
        if signed {
            let sig = WebhookSecret::parse(WHSEC)
                .unwrap()
                .sign(webhook_id, ts, body.as_bytes());
            headers.push(("webhook-timestamp".into(), ts.to_string()));
            headers.push(("webhook-signature".into(), sig));
        }
        if let Some(t) = token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        let req = Request::new(
            "POST",
            "http://localhost/functions/v1/finalize-backup",
            headers,
            body.into_bytes(),
        );
        block_on(app::handle(host, store, "finalize-backup", &req))
    }

    fn started(id: &str) -> Value {
        json!({"event": "started", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1})
    }

    /// A dispatched run and an OIDC host whose key set is about to be served.
    fn setup(mode: &str) -> (FakeHost, MemStore, String) {
        let (host, store) = (oidc_host(mode), store());
        let id = dispatched(&host, &store);
        github_keys(&host, &["gh-1"]);
        (host, store, id)
    }

    /// The 401 code for a token whose claim `name` is `value`.
    fn refused_with(name: &str, value: Value) -> String {
        let (host, store, id) = setup("oidc");
        let mut c = claims(&host);
        c[name] = value;
        let r = report(&host, &store, "m1", &started(&id), Some(&rs256(&c)), false);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(store.only().status, Status::InProgress);
        assert!(store.only().started_at.is_none(), "nothing applied");
        error_code(&r).as_str().unwrap().to_string()
    }

    #[test]
    fn oidc_mode_accepts_the_run_own_token_without_any_webhook_secret() {
        let (host, store, id) = setup("oidc");
        let r = report(
            &host,
            &store,
            "m1",
            &started(&id),
            Some(&rs256(&claims(&host))),
            false,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            body(&r),
            json!({"dispatch_id": id, "status": "in_progress", "changed": true})
        );
        assert_eq!(
            host.fetched.borrow()[1].url,
            format!("{ISSUER}/.well-known/jwks")
        );
        // The key set is kept: the next report costs no fetch.
        let mut done = started(&id);
        done["event"] = json!("failed");
        let r = report(
            &host,
            &store,
            "m2",
            &done,
            Some(&rs256(&claims(&host))),
            false,
        );
        assert_eq!(body(&r)["status"], "failed");
        assert_eq!(
            host.fetched.borrow().len(),
            2,
            "GitHub's dispatch, one JWKS fetch"
        );
    }

    #[test]
    fn a_token_for_another_repository_is_refused() {
        assert_eq!(
            refused_with("repository", json!("evil/app")),
            "oidc_repository"
        );
    }

    #[test]
    fn a_token_for_another_workflow_file_is_refused() {
        let other = json!("acme/app/.github/workflows/deploy.yml@refs/heads/main");
        assert_eq!(refused_with("workflow_ref", other), "oidc_workflow_ref");
        let other_repo = json!("evil/app/.github/workflows/backup.yml@refs/heads/main");
        assert_eq!(
            refused_with("workflow_ref", other_repo),
            "oidc_workflow_ref"
        );
    }

    #[test]
    fn a_token_for_another_ref_is_refused() {
        assert_eq!(refused_with("ref", json!("refs/heads/feature")), "oidc_ref");
        let at_other_ref = json!("acme/app/.github/workflows/backup.yml@refs/heads/feature");
        assert_eq!(
            refused_with("workflow_ref", at_other_ref),
            "oidc_workflow_ref"
        );
    }

    #[test]
    fn a_token_from_another_event_is_refused() {
        for event in ["push", "pull_request_target", "workflow_run"] {
            assert_eq!(refused_with("event_name", json!(event)), "oidc_event_name");
        }
    }

    #[test]
    fn a_token_for_another_run_id_or_run_attempt_is_refused() {
        assert_eq!(refused_with("run_id", json!("4243")), "oidc_run_id");
        assert_eq!(refused_with("run_attempt", json!("2")), "oidc_run_attempt");
    }

    #[test]
    fn an_expired_token_a_wrong_aud_and_a_wrong_iss_are_refused() {
        let now = 1_800_000_000;
        assert_eq!(refused_with("exp", json!(now - 31)), "oidc_exp");
        assert_eq!(
            refused_with(
                "aud",
                json!("https://other.supabase.co/functions/v1/finalize-backup")
            ),
            "oidc_aud"
        );
        assert_eq!(
            refused_with("iss", json!(crate::credentials::oidc::GITHUB_OIDC_ISSUER)),
            "oidc_iss"
        );
    }

    #[test]
    fn alg_none_and_hs256_alg_confusion_are_refused() {
        let (host, store, id) = setup("oidc");
        let c = claims(&host);
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        // HS256 "signed" with the issuer's public key as the secret.
        let hs = crate::credentials::token::sign_hs256_kid(&[7u8; 256], Some("gh-1"), &c);
        for token in [none, hs] {
            let r = report(&host, &store, "m1", &started(&id), Some(&token), false);
            assert_eq!(r.status, 401);
            assert_eq!(error_code(&r), "oidc_alg");
        }
        assert_eq!(
            host.fetched.borrow().len(),
            1,
            "no key was fetched for them"
        );
    }

    #[test]
    fn an_unknown_kid_is_refused_after_one_refetch() {
        let (host, store, id) = setup("oidc");
        let t = jwt(&json!({"alg": "RS256", "kid": "gh-9"}), &claims(&host));
        for _ in 0..2 {
            let r = report(&host, &store, "m1", &started(&id), Some(&t), false);
            assert_eq!(r.status, 401);
            assert_eq!(error_code(&r), "oidc_kid");
        }
        assert_eq!(
            host.fetched.borrow().len(),
            2,
            "one JWKS fetch for two misses"
        );
    }

    #[test]
    fn a_token_whose_signature_does_not_verify_is_refused() {
        let (host, store, id) = setup("oidc");
        host.signature_ok.set(false);
        let r = report(
            &host,
            &store,
            "m1",
            &started(&id),
            Some(&rs256(&claims(&host))),
            false,
        );
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "oidc_signature");
    }

    #[test]
    fn both_mode_requires_the_signature_and_the_token() {
        let (host, store, id) = setup("both");
        let token = rs256(&claims(&host));
        let r = report(&host, &store, "m1", &started(&id), Some(&token), false);
        assert_eq!(error_code(&r), "invalid_signature");
        let r = report(&host, &store, "m1", &started(&id), None, true);
        assert_eq!(error_code(&r), "missing_token");
        let r = report(&host, &store, "m1", &started(&id), Some(&token), true);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(body(&r)["changed"], true);
    }

    #[test]
    fn oidc_mode_still_needs_a_webhook_id_to_name_the_delivery() {
        let (host, store, id) = setup("oidc");
        let r = report(
            &host,
            &store,
            "",
            &started(&id),
            Some(&rs256(&claims(&host))),
            false,
        );
        assert_eq!(r.status, 400);
        assert_eq!(error_code(&r), "invalid_parameter");
    }

    #[test]
    fn a_bound_run_refuses_another_runs_report_even_with_that_runs_token() {
        let (host, store, id) = setup("oidc");
        let r = report(
            &host,
            &store,
            "m1",
            &started(&id),
            Some(&rs256(&claims(&host))),
            false,
        );
        assert_eq!(r.status, 200);
        // Run 5555's own token and report, about 4242's dispatch id.
        let mut c = claims(&host);
        c["run_id"] = json!("5555");
        let mut other = started(&id);
        other["workflow_run_id"] = json!(5555);
        other["event"] = json!("succeeded");
        other["s3_key"] = json!("x.dump");
        let r = report(&host, &store, "m2", &other, Some(&rs256(&c)), false);
        assert_eq!(r.status, 409);
        assert_eq!(error_code(&r), "illegal_transition");
        assert_eq!(store.only().status, Status::InProgress);
    }

    #[test]
    fn an_unknown_report_auth_mode_is_a_500_naming_it() {
        let (mut host, store) = (oidc_host("oidc"), store());
        host.env.insert("BACKUP_REPORT_AUTH".into(), "hmac".into());
        let r = report(
            &host,
            &store,
            "m1",
            &started(&Uuid::nil().to_string()),
            None,
            true,
        );
        assert_eq!(r.status, 500);
        assert!(body(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BACKUP_REPORT_AUTH"));
    }

    #[test]
    fn a_reused_webhook_id_with_another_body_is_a_409_and_the_same_body_a_200() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let first = json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "dump failed"});
        assert_eq!(finalize(&host, &store, "same", &first).status, 200);
        let again = finalize(&host, &store, "same", &first);
        assert_eq!(
            body(&again),
            json!({"dispatch_id": id, "status": "failed", "changed": false})
        );
        let mut other = first.clone();
        other["error_text"] = json!("something else");
        let r = finalize(&host, &store, "same", &other);
        assert_eq!(r.status, 409);
        assert_eq!(
            body(&r),
            json!({"error": {"code": "webhook_id_reused",
                   "message": "this webhook-id was delivered before with another body"}})
        );
    }

    #[test]
    fn a_signed_report_replayed_to_reconcile_backups_is_refused() {
        let (host, store) = (host(), store());
        let body = json!({"event": "started", "workflow_run_id": 1, "run_attempt": 1}).to_string();
        let ts = host.now_ms() / 1000;
        let sign = |body: &str| {
            vec![
                ("webhook-id".to_string(), "m1".to_string()),
                ("webhook-timestamp".into(), ts.to_string()),
                (
                    "webhook-signature".into(),
                    WebhookSecret::parse(WHSEC)
                        .unwrap()
                        .sign("m1", ts, body.as_bytes()),
                ),
            ]
        };
        let sweep = |body: &str| {
            let req = Request::new(
                "POST",
                "http://x/functions/v1/reconcile-backups",
                sign(body),
                body.as_bytes().to_vec(),
            );
            block_on(app::handle(&host, &store, "reconcile-backups", &req))
        };
        let r = sweep(&body);
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "invalid_signature");
        assert_eq!(sweep(r#"{"sweep":true}"#).status, 200);
    }

    #[test]
    fn a_lowercase_method_is_a_405() {
        let (host, store) = (host(), store());
        let req = Request::new(
            "post",
            "http://x/functions/v1/finalize-backup",
            vec![],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "finalize-backup", &req));
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
    }
}
