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
use crate::retention;
use crate::run::{self, Outcome, Run, Status, TriggerSource};
use crate::store::{in_progress_error, Started, Store, ONE_IN_PROGRESS};
use serde::Serialize;
use serde_json::value::RawValue;

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
    if report.event == Event::Pruned {
        return pruned(store, &report).await;
    }

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
    // `mod flows` below holds the two together).
    let now = host.now_ms();
    let mut blank = Run::manual(id, uuid::Uuid::nil(), None, now);
    blank.run_attempt = report.run_attempt;
    if let Outcome::Changed(next) = run::apply_report(&blank, &report, now)? {
        if store.apply_to_running(id, &next, webhook_id).await? {
            log_applied(host, &report, &next);
            return after_success(store, &report, *next, true).await;
        }
    }
    // Not the common case: read the run, and decide in full.
    let (run, changed) = match store.read_for_report(Some(id), webhook_id).await? {
        Some((run, None)) => apply(host, store, &report, webhook_id, run).await?,
        // A repeated delivery: answered with the run as it is now.
        Some((run, Some(_))) => (run, false),
        None => return Err(Error::UnknownDispatchId),
    };
    after_success(store, &report, run, changed).await
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

/// Answers a report once the run is saved. After a `succeeded` report of a
/// successful run (first delivery, retry or repeat alike, so a lost answer
/// costs nothing): stores the verdict it carries, and lists what retention
/// deletes now. The success is already saved: an error here is a 5xx the
/// workflow retries, and the retry is answered the same way.
async fn after_success(
    store: &impl Store,
    report: &Report,
    run: Run,
    changed: bool,
) -> Result<Response, Error> {
    if report.event != Event::Succeeded || run.status != Status::Success {
        return Ok(answer(200, &run, changed));
    }
    let folder = retention::folder(run.s3_key.as_deref().unwrap_or_default());
    let prune = store
        .after_success(run.dispatch_id, report.verification.as_deref(), folder)
        .await?;
    let prune = serde_json::from_str(&prune).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Response::json(200, &Answer::of(&run, changed, Some(prune))))
}

/// A `pruned` report: the objects a success's answer listed are deleted.
/// Answered like a report that changed nothing of its own run; the rows
/// it names get `pruned_at` (a repeat marks nothing twice).
async fn pruned(store: &impl Store, report: &Report) -> Result<Response, Error> {
    let id = report.dispatch_id.ok_or(Error::UnknownDispatchId)?;
    let run = store.get(id).await?.ok_or(Error::UnknownDispatchId)?;
    store
        .mark_pruned(report.pruned.as_deref().unwrap_or("[]"))
        .await?;
    Ok(answer(200, &run, false))
}

/// Applies a report to the run its dispatch id names: the run as saved,
/// and whether the report changed it.
async fn apply(
    host: &impl Host,
    store: &impl Store,
    report: &Report,
    webhook_id: &str,
    mut run: Run,
) -> Result<(Run, bool), Error> {
    loop {
        match run::apply_report(&run, report, host.now_ms())? {
            Outcome::Unchanged => {
                store.record_delivery(webhook_id, run.dispatch_id).await?;
                return Ok((run, false));
            }
            Outcome::Changed(next) => match store.update(&run, &next, Some(webhook_id)).await {
                Ok(Some(saved)) => {
                    log_applied(host, report, &saved);
                    return Ok((saved, true));
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
            let (run, changed) = apply(host, store, report, webhook_id, existing).await?;
            return Ok(answer(200, &run, changed));
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

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::run::{OutcomeSource, Run};
    use crate::store::Store;
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
            block_on(Store::update(&store, &read, &verdict, None)),
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
        let saved = block_on(Store::update(&store, &read, &verdict, None))
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

    #[test]
    fn a_success_answer_lists_what_retention_prunes_and_a_pruned_report_marks_it() {
        let (host, store) = (host(), store());
        store.retention.set((Some(30), 2));
        let old = [
            succeeded(&host, &store, 1, 90),
            succeeded(&host, &store, 2, 60),
            succeeded(&host, &store, 3, 40),
        ];
        let id = dispatched(&host, &store);
        let key = format!("backups/20261130T000000Z_{id}.dump");
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
        let view = serde_json::to_value(crate::status::view(&store.only())).unwrap();
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
