//! A backup run and its state machine.
//!
//! ```text
//!                 started / progress (same attempt)
//!                 ┌──────────┐
//!                 ▼          │
//!   issue ──▶ in_progress ───┘
//!                 │  succeeded ─────────────▶ success   (final)
//!                 │  failed / cancelled ────▶ failed    (reason from the report)
//!                 │  dispatch refused ──────▶ failed    dispatch_failed
//!                 │  deadline passed ───────▶ failed    lost / timed_out
//!                 │  GitHub says completed ─▶ failed    step_failed / cancelled / timed_out / lost
//!
//!   failed ──(report from a later run_attempt)──▶ in_progress   (a GitHub re-run)
//!   failed, inferred by the server ──(the workflow's own report)──▶ corrected
//! ```
//!
//! Every function here is pure: (run, input, now) → next run or a named
//! error. The flows persist the result guarded by the state it was decided
//! from (`src/sql/`), so two concurrent reports can never both apply a
//! transition.

use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::report::{Event, Report};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The three statuses frontends depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Success,
    Failed,
}

/// Why a run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// A workflow step failed (the workflow said so, or GitHub's conclusion).
    StepFailed,
    /// The run was cancelled.
    Cancelled,
    /// The run exceeded its max runtime, or GitHub timed it out.
    TimedOut,
    /// GitHub refused the dispatch.
    DispatchFailed,
    /// The run never started, or finished without reporting its result.
    Lost,
}

/// Who decided a terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSource {
    /// The workflow's own report: the most truthful source.
    Report,
    /// The dispatch call failed.
    Dispatch,
    /// A deadline passed without news.
    Deadline,
    /// GitHub's recorded conclusion of the run.
    Github,
}

impl OutcomeSource {
    /// Outcomes the server inferred rather than heard from the workflow.
    /// The workflow's own late report may correct them.
    pub fn is_inferred(self) -> bool {
        !matches!(self, OutcomeSource::Report)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerSource {
    Manual,
    Schedule,
}

/// A row of `backup_history`. Times are unix milliseconds. Read straight
/// from the object `src/sql/select_run.sql` builds, whose keys are these
/// field names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Run {
    pub id: i64,
    pub dispatch_id: DispatchId,
    pub status: Status,
    pub failure_reason: Option<FailureReason>,
    pub outcome_source: Option<OutcomeSource>,
    pub trigger_source: TriggerSource,
    pub triggered_by: Option<Uuid>,
    pub reason: Option<String>,
    pub workflow_run_id: Option<u64>,
    pub run_attempt: u32,
    pub run_url: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub s3_key: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub error_text: Option<String>,
    /// The latest `progress` report: the canonical JSON text of an object
    /// (read back from jsonb into the same form, whatever path reads it).
    #[serde(deserialize_with = "crate::progress::deserialize_stored")]
    pub progress: Option<String>,
    /// What the workflow's check of the stored object found (JSON text of
    /// an object, [`crate::verification`]); written once, after success.
    #[serde(default)]
    pub verification: Option<String>,
    /// Whether the stored verdict's `ok` is false (select_run.sql reads it).
    #[serde(default)]
    pub verification_failed: bool,
    /// When the object was deleted under the retention policy.
    #[serde(default)]
    pub pruned_at: Option<i64>,
    pub version: i64,
}

impl Run {
    /// A run the button just created, before it is dispatched.
    pub fn manual(dispatch_id: DispatchId, user: Uuid, reason: Option<String>, now: i64) -> Self {
        Run::fresh(dispatch_id, TriggerSource::Manual, Some(user), reason, now)
    }

    /// A scheduled run registering with its `started` report.
    pub fn scheduled(dispatch_id: DispatchId, report: &Report, now: i64) -> Self {
        let mut run = Run::fresh(dispatch_id, TriggerSource::Schedule, None, None, now);
        run.workflow_run_id = Some(report.workflow_run_id);
        run.run_attempt = report.run_attempt;
        run.started_at = Some(now);
        run
    }

    fn fresh(
        dispatch_id: DispatchId,
        trigger_source: TriggerSource,
        triggered_by: Option<Uuid>,
        reason: Option<String>,
        now: i64,
    ) -> Self {
        Run {
            id: 0,
            dispatch_id,
            status: Status::InProgress,
            failure_reason: None,
            outcome_source: None,
            trigger_source,
            triggered_by,
            reason,
            workflow_run_id: None,
            run_attempt: 1,
            run_url: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            s3_key: None,
            size_bytes: None,
            sha256: None,
            error_text: None,
            progress: None,
            verification: None,
            verification_failed: false,
            pruned_at: None,
            version: 0,
        }
    }

    /// Whether the run has reached `success` or `failed`.
    pub fn is_terminal(&self) -> bool {
        self.status != Status::InProgress
    }

    fn finish(
        &mut self,
        status: Status,
        reason: Option<FailureReason>,
        source: OutcomeSource,
        now: i64,
    ) {
        self.status = status;
        self.failure_reason = reason;
        self.outcome_source = Some(source);
        self.finished_at = Some(now);
    }

    /// A failure the server inferred (`source` is not `Report`): a refused
    /// dispatch, a passed deadline, GitHub's conclusion. The workflow's own
    /// later report may still correct it (see [`apply_report`]).
    pub fn failed_by(
        mut self,
        reason: FailureReason,
        source: OutcomeSource,
        error_text: &str,
        now: i64,
    ) -> Run {
        debug_assert!(source.is_inferred());
        self.error_text = Some(crate::report::truncate_error_text(error_text));
        self.finish(Status::Failed, Some(reason), source, now);
        self
    }

    /// Clears the outcome of a failed run so that it can run again.
    fn reopen(&mut self) {
        self.status = Status::InProgress;
        self.failure_reason = None;
        self.outcome_source = None;
        self.finished_at = None;
        self.error_text = None;
        self.s3_key = None;
        self.size_bytes = None;
        self.sha256 = None;
        self.progress = None;
    }
}

/// The result of applying an input to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to write: a duplicate, or a report that adds nothing.
    Unchanged,
    /// The next state of the row.
    Changed(Box<Run>),
}

/// Applies a workflow report to its run.
///
/// Rules, in order:
/// 1. A report from an older `run_attempt` never overwrites a newer one.
/// 2. A report from another workflow run than the one recorded is refused.
/// 3. A later attempt (a GitHub re-run keeps its inputs) reopens a failed
///    run; a successful run is final.
/// 4. Within an attempt: `in_progress` accepts everything; a terminal state
///    repeated is a no-op; an outcome the server only inferred (dispatch
///    failure, deadline, GitHub's conclusion) yields to the workflow's own
///    terminal report, and a dispatch failure or a `lost` verdict also yields
///    to a late `started`, since the run evidently exists.
///
/// # Errors
/// [`Error::StaleAttempt`] for rule 1 and [`Error::IllegalTransition`] for
/// every other refused report (409 either way).
pub fn apply_report(run: &Run, report: &Report, now: i64) -> Result<Outcome, Error> {
    reported_by(run, report)?;

    let mut next = run.clone();
    next.workflow_run_id = Some(report.workflow_run_id);

    if report.run_attempt > run.run_attempt {
        match run.status {
            Status::Success => {
                return Err(Error::IllegalTransition(
                    "this run already succeeded; start a new backup instead of re-running it"
                        .into(),
                ))
            }
            Status::Failed => next.reopen(),
            Status::InProgress => {}
        }
        next.run_attempt = report.run_attempt;
        next.started_at = None;
        apply_in_progress(&mut next, report, now);
        return Ok(Outcome::Changed(Box::new(next)));
    }

    match run.status {
        Status::InProgress => {
            apply_in_progress(&mut next, report, now);
        }
        Status::Success => {
            return match report.event {
                Event::Succeeded if report.s3_key == run.s3_key => Ok(Outcome::Unchanged),
                Event::Succeeded => Err(Error::IllegalTransition(
                    "this run already succeeded with another s3_key".into(),
                )),
                other => Err(Error::IllegalTransition(format!(
                    "this run already succeeded; {} is not accepted",
                    other.as_str()
                ))),
            };
        }
        Status::Failed => {
            let inferred = run.outcome_source.is_some_and(OutcomeSource::is_inferred);
            let same_verdict = matches!(
                (report.event, run.failure_reason),
                (Event::Failed, Some(FailureReason::StepFailed))
                    | (Event::Cancelled, Some(FailureReason::Cancelled))
            );
            match report.event {
                Event::Failed | Event::Cancelled if !inferred && same_verdict => {
                    return Ok(Outcome::Unchanged)
                }
                Event::Succeeded | Event::Failed | Event::Cancelled if inferred => {
                    next.reopen();
                    apply_in_progress(&mut next, report, now);
                }
                Event::Started | Event::Progress
                    if inferred
                        && matches!(
                            run.failure_reason,
                            Some(FailureReason::DispatchFailed | FailureReason::Lost)
                        )
                        && run.outcome_source != Some(OutcomeSource::Github) =>
                {
                    next.reopen();
                    apply_in_progress(&mut next, report, now);
                }
                other => {
                    return Err(Error::IllegalTransition(format!(
                        "this run already failed ({}); {} is not accepted for the same attempt",
                        reason_str(run.failure_reason),
                        other.as_str()
                    )))
                }
            }
        }
    }

    if next == *run {
        Ok(Outcome::Unchanged)
    } else {
        Ok(Outcome::Changed(Box::new(next)))
    }
}

/// The ended run to which a report is a repeat: failed, in the report's
/// attempt and workflow run, for the reason the report gives, on the
/// workflow's own word. [`apply_report`] changes nothing of such a run, so
/// the store may record the delivery in the same statement that finds the
/// run ended, one round trip instead of two (`apply_report.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub failure_reason: FailureReason,
    pub run_attempt: u32,
    pub workflow_run_id: u64,
}

impl Ended {
    /// Whether `run` is in this state.
    pub fn matches(&self, run: &Run) -> bool {
        run.status == Status::Failed
            && run.failure_reason == Some(self.failure_reason)
            && run.outcome_source == Some(OutcomeSource::Report)
            && run.run_attempt == self.run_attempt
            && run.workflow_run_id == Some(self.workflow_run_id)
    }
}

/// Rules 1 and 2 of [`apply_report`]: the report comes from the run's
/// current attempt or a later one, and from the workflow run recorded on it.
fn reported_by(run: &Run, report: &Report) -> Result<(), Error> {
    if report.run_attempt < run.run_attempt {
        return Err(Error::StaleAttempt {
            reported: report.run_attempt,
            current: run.run_attempt,
        });
    }
    if let Some(recorded) = run.workflow_run_id {
        if recorded != report.workflow_run_id {
            return Err(Error::IllegalTransition(format!(
                "this dispatch_id belongs to workflow run {recorded}, not {}",
                report.workflow_run_id
            )));
        }
    }
    Ok(())
}

/// Whether `run` may send a `pruned` report: that the objects its
/// success's answer listed are deleted. It changes no state of its own run,
/// so it is decided here rather than by [`apply_report`], by the same first
/// two rules, and only from the run that succeeded, in the attempt that
/// succeeded. A report names its own run: a token or a signature made for
/// one run cannot mark objects deleted by naming another.
///
/// # Errors
/// [`Error::StaleAttempt`] for an older attempt, and
/// [`Error::IllegalTransition`] otherwise (409 either way).
pub fn accepts_pruned(run: &Run, report: &Report) -> Result<(), Error> {
    reported_by(run, report)?;
    if run.status != Status::Success {
        return Err(Error::IllegalTransition(format!(
            "only a successful run prunes, and this run is {}",
            status_str(run.status)
        )));
    }
    if report.run_attempt != run.run_attempt {
        return Err(Error::IllegalTransition(format!(
            "this run succeeded in attempt {}; pruned comes from that attempt",
            run.run_attempt
        )));
    }
    Ok(())
}

/// The state in which `report` is a repeat ([`Ended`]), for `failed` and
/// `cancelled` reports. The statement that applies a report alone records
/// only these: a repeated `succeeded`'s answer lists what retention prunes,
/// and that statement records the delivery anyway. Read together with
/// others, a success's repeat is recorded too ([`Repeats`]).
pub fn ended_by(report: &Report) -> Option<Ended> {
    let failure_reason = match report.event {
        Event::Failed => FailureReason::StepFailed,
        Event::Cancelled => FailureReason::Cancelled,
        _ => return None,
    };
    Some(Ended {
        failure_reason,
        run_attempt: report.run_attempt,
        workflow_run_id: report.workflow_run_id,
    })
}

/// The state in which a report that would end its run changes nothing
/// ([`apply_report`] answers `Unchanged`), so that a store that reads the
/// run may record the report as a repeat on the way
/// (`read_reports.sql` checks the same state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeats {
    /// A `failed` or `cancelled` report: [`ended_by`].
    Failure(Ended),
    /// A `succeeded` report without a verification verdict: a success with
    /// its key, in its attempt and workflow run. One with a verdict may
    /// still store it, so it is never a repeat before it is decided.
    Success {
        s3_key: String,
        run_attempt: u32,
        workflow_run_id: u64,
    },
}

impl Repeats {
    /// The state in which `report` is a repeat, if it can be one.
    pub fn of(report: &Report) -> Option<Self> {
        if let Some(ended) = ended_by(report) {
            return Some(Repeats::Failure(ended));
        }
        match report.event {
            Event::Succeeded if report.verification.is_none() => Some(Repeats::Success {
                s3_key: report.s3_key.clone()?,
                run_attempt: report.run_attempt,
                workflow_run_id: report.workflow_run_id,
            }),
            _ => None,
        }
    }

    /// The failure this report repeats, if it is a failure's repeat.
    pub fn ended(&self) -> Option<Ended> {
        match self {
            Repeats::Failure(ended) => Some(*ended),
            Repeats::Success { .. } => None,
        }
    }

    /// Whether `run` is in this state.
    pub fn matches(&self, run: &Run) -> bool {
        match self {
            Repeats::Failure(ended) => ended.matches(run),
            Repeats::Success {
                s3_key,
                run_attempt,
                workflow_run_id,
            } => {
                run.status == Status::Success
                    && run.s3_key.as_ref() == Some(s3_key)
                    && run.run_attempt == *run_attempt
                    && run.workflow_run_id == Some(*workflow_run_id)
            }
        }
    }
}

/// Applies a report to a run that is (now) in progress.
fn apply_in_progress(next: &mut Run, report: &Report, now: i64) {
    match report.event {
        Event::Started => {
            next.started_at.get_or_insert(now);
        }
        Event::Progress => {
            next.started_at.get_or_insert(now);
            if report.progress.is_some() {
                next.progress.clone_from(&report.progress);
            }
        }
        Event::Succeeded => {
            next.s3_key.clone_from(&report.s3_key);
            next.size_bytes = report.size_bytes;
            next.sha256.clone_from(&report.sha256);
            next.error_text = None;
            next.finish(Status::Success, None, OutcomeSource::Report, now);
        }
        // finalize answers a `pruned` report before the state machine: it
        // is about other runs' objects, not a step of this one.
        Event::Pruned => {}
        Event::Failed | Event::Cancelled => {
            let reason = if report.event == Event::Failed {
                FailureReason::StepFailed
            } else {
                FailureReason::Cancelled
            };
            next.error_text = report.error_text.clone().or_else(|| {
                Some(format!(
                    "the workflow reported {} without error_text",
                    report.event.as_str()
                ))
            });
            next.finish(Status::Failed, Some(reason), OutcomeSource::Report, now);
        }
    }
}

/// Marks a run whose dispatch GitHub refused.
///
/// Returns `Unchanged` when a report already arrived (the run evidently
/// exists, so the dispatch answer was wrong or lost) or the run is terminal.
pub fn dispatch_failed(run: &Run, error_text: &str, now: i64) -> Outcome {
    if run.is_terminal() || run.started_at.is_some() {
        return Outcome::Unchanged;
    }
    Outcome::Changed(Box::new(run.clone().failed_by(
        FailureReason::DispatchFailed,
        OutcomeSource::Dispatch,
        error_text,
        now,
    )))
}

/// The wire name of a failure reason (`-` when there is none).
pub fn reason_str(reason: Option<FailureReason>) -> &'static str {
    reason.map_or("-", FailureReason::as_str)
}

/// The wire name of a status.
pub fn status_str(status: Status) -> &'static str {
    status.as_str()
}

/// Wire names as plain strings, for SQL parameters and log lines. serde
/// reads and writes the same names (`rename_all = "snake_case"`); a test
/// holds the two together.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
    };
}

wire_names!(Status { InProgress = "in_progress", Success = "success", Failed = "failed" });
wire_names!(FailureReason {
    StepFailed = "step_failed",
    Cancelled = "cancelled",
    TimedOut = "timed_out",
    DispatchFailed = "dispatch_failed",
    Lost = "lost",
});
wire_names!(OutcomeSource { Report = "report", Dispatch = "dispatch", Deadline = "deadline", Github = "github" });
wire_names!(TriggerSource { Manual = "manual", Schedule = "schedule" });

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn serde_and_as_str_agree_on_every_wire_name() {
        fn agree<T: Serialize + Copy>(all: &[T], as_str: fn(T) -> &'static str) {
            for &v in all {
                assert_eq!(serde_json::to_value(v).unwrap(), as_str(v));
            }
        }
        agree(
            &[Status::InProgress, Status::Success, Status::Failed],
            Status::as_str,
        );
        agree(
            &[
                FailureReason::StepFailed,
                FailureReason::Cancelled,
                FailureReason::TimedOut,
                FailureReason::DispatchFailed,
                FailureReason::Lost,
            ],
            FailureReason::as_str,
        );
        agree(
            &[
                OutcomeSource::Report,
                OutcomeSource::Dispatch,
                OutcomeSource::Deadline,
                OutcomeSource::Github,
            ],
            OutcomeSource::as_str,
        );
        agree(
            &[TriggerSource::Manual, TriggerSource::Schedule],
            TriggerSource::as_str,
        );
    }

    fn id() -> DispatchId {
        DispatchId::issue(1_764_000_000_000, [3; 10])
    }

    fn report(event: Event, attempt: u32) -> Report {
        Report {
            event,
            dispatch_id: Some(id()),
            workflow_run_id: 77,
            run_attempt: attempt,
            s3_key: (event == Event::Succeeded).then(|| "backups/a.dump".to_string()),
            size_bytes: (event == Event::Succeeded).then_some(123),
            sha256: None,
            error_text: (event == Event::Failed).then(|| "step pg_dump failed".to_string()),
            progress: (event == Event::Progress).then(|| r#"{"phase":"dumped"}"#.to_string()),
            verification: None,
            pruned: None,
        }
    }

    fn fresh() -> Run {
        Run::manual(id(), Uuid::nil(), None, NOW - 1000)
    }

    fn applied(run: &Run, event: Event, attempt: u32) -> Run {
        match apply_report(run, &report(event, attempt), NOW).unwrap() {
            Outcome::Changed(next) => *next,
            Outcome::Unchanged => panic!("expected a change for {event:?}"),
        }
    }

    #[test]
    fn only_the_attempt_that_succeeded_reports_what_it_pruned_from_its_own_workflow_run() {
        for run in every_state() {
            for attempt in 1..=3 {
                let mut pruned = report(Event::Pruned, attempt);
                pruned.pruned = Some(r#"["backups/old.dump"]"#.into());
                let accepted = accepts_pruned(&run, &pruned).is_ok();
                let expected = run.status == Status::Success
                    && run.run_attempt == attempt
                    && run.workflow_run_id.is_none_or(|w| w == 77);
                assert_eq!(accepted, expected, "{run:?} attempt {attempt}");
            }
        }
        let mut run = fresh();
        run.workflow_run_id = Some(78);
        run.finish(Status::Success, None, OutcomeSource::Report, NOW);
        assert_eq!(
            accepts_pruned(&run, &report(Event::Pruned, 1))
                .unwrap_err()
                .code(),
            "illegal_transition"
        );
        run.workflow_run_id = Some(77);
        run.run_attempt = 2;
        assert_eq!(
            accepts_pruned(&run, &report(Event::Pruned, 1))
                .unwrap_err()
                .code(),
            "stale_attempt"
        );
    }

    fn failed_by(source: OutcomeSource, reason: FailureReason) -> Run {
        let mut run = fresh();
        run.workflow_run_id = Some(77);
        run.finish(Status::Failed, Some(reason), source, NOW - 10);
        run
    }

    const EVENTS: [Event; 5] = [
        Event::Started,
        Event::Progress,
        Event::Succeeded,
        Event::Failed,
        Event::Cancelled,
    ];

    /// Every run state the table's constraints allow from these parts: each
    /// status, reason, source, attempt and workflow run.
    fn every_state() -> Vec<Run> {
        let mut runs = Vec::new();
        for status in [Status::InProgress, Status::Success, Status::Failed] {
            for reason in [
                None,
                Some(FailureReason::StepFailed),
                Some(FailureReason::Cancelled),
                Some(FailureReason::TimedOut),
                Some(FailureReason::DispatchFailed),
                Some(FailureReason::Lost),
            ] {
                for source in [
                    None,
                    Some(OutcomeSource::Report),
                    Some(OutcomeSource::Dispatch),
                    Some(OutcomeSource::Deadline),
                    Some(OutcomeSource::Github),
                ] {
                    let valid = match status {
                        Status::InProgress => reason.is_none() && source.is_none(),
                        Status::Success => reason.is_none() && source.is_some(),
                        Status::Failed => reason.is_some() && source.is_some(),
                    };
                    if !valid {
                        continue;
                    }
                    for attempt in 1..=3 {
                        for workflow_run in [None, Some(77), Some(78)] {
                            let mut run = fresh();
                            run.status = status;
                            run.failure_reason = reason;
                            run.outcome_source = source;
                            run.run_attempt = attempt;
                            run.workflow_run_id = workflow_run;
                            if status == Status::Success {
                                run.s3_key = Some("backups/a.dump".into());
                            }
                            runs.push(run);
                        }
                    }
                }
            }
        }
        runs
    }

    #[test]
    fn a_failure_report_changes_nothing_of_exactly_the_run_it_ended() {
        let mut matched = 0;
        for run in every_state() {
            for event in EVENTS {
                for attempt in 1..=3 {
                    for workflow_run in [77, 78] {
                        let mut r = report(event, attempt);
                        r.workflow_run_id = workflow_run;
                        let outcome = apply_report(&run, &r, NOW);
                        match ended_by(&r) {
                            Some(ended) if ended.matches(&run) => {
                                matched += 1;
                                assert_eq!(outcome, Ok(Outcome::Unchanged), "{run:?} {r:?}");
                            }
                            // A failed or cancelled report that changes
                            // nothing of a run with a workflow run finds
                            // exactly its ended state.
                            Some(_) => assert!(
                                run.workflow_run_id.is_none()
                                    || !matches!(outcome, Ok(Outcome::Unchanged)),
                                "{run:?} {r:?}"
                            ),
                            None => assert!(!matches!(event, Event::Failed | Event::Cancelled)),
                        }
                    }
                }
            }
        }
        // Each (reason, attempt, workflow run) with a failed run of it.
        assert_eq!(matched, 2 * 3 * 2);
    }

    #[test]
    fn a_success_report_changes_nothing_of_exactly_the_success_it_repeats() {
        let mut matched = 0;
        for run in every_state() {
            for attempt in 1..=3 {
                for workflow_run in [77, 78] {
                    for key in ["backups/a.dump", "backups/b.dump"] {
                        let mut r = report(Event::Succeeded, attempt);
                        r.workflow_run_id = workflow_run;
                        r.s3_key = Some(key.into());
                        let repeats = Repeats::of(&r).expect("a success without a verdict");
                        if repeats.matches(&run) {
                            matched += 1;
                            let outcome = apply_report(&run, &r, NOW);
                            assert_eq!(outcome, Ok(Outcome::Unchanged), "{run:?} {r:?}");
                        }
                    }
                }
            }
        }
        // Each success (four sources, three attempts, two workflow runs),
        // by the one report that names its key, attempt and workflow run.
        assert_eq!(matched, 4 * 3 * 2);
    }

    #[test]
    fn in_progress_accepts_every_event_of_its_attempt() {
        let expected = [
            (Event::Started, Status::InProgress, None),
            (Event::Progress, Status::InProgress, None),
            (Event::Succeeded, Status::Success, None),
            (
                Event::Failed,
                Status::Failed,
                Some(FailureReason::StepFailed),
            ),
            (
                Event::Cancelled,
                Status::Failed,
                Some(FailureReason::Cancelled),
            ),
        ];
        for (event, status, reason) in expected {
            let next = applied(&fresh(), event, 1);
            assert_eq!(next.status, status, "{event:?}");
            assert_eq!(next.failure_reason, reason, "{event:?}");
            assert_eq!(next.workflow_run_id, Some(77));
            assert_eq!(next.finished_at.is_some(), event.is_terminal());
            assert_eq!(next.outcome_source.is_some(), event.is_terminal());
        }
    }

    #[test]
    fn started_twice_is_unchanged() {
        let started = applied(&fresh(), Event::Started, 1);
        assert_eq!(started.started_at, Some(NOW));
        assert_eq!(
            apply_report(&started, &report(Event::Started, 1), NOW + 5),
            Ok(Outcome::Unchanged)
        );
    }

    #[test]
    fn progress_records_the_phase() {
        let next = applied(&fresh(), Event::Progress, 1);
        assert_eq!(next.progress.as_deref(), Some(r#"{"phase":"dumped"}"#));
        assert_eq!(
            apply_report(&next, &report(Event::Progress, 1), NOW),
            Ok(Outcome::Unchanged)
        );
    }

    #[test]
    fn success_is_final_for_every_event_of_the_same_attempt() {
        let done = applied(&fresh(), Event::Succeeded, 1);
        for event in EVENTS {
            let result = apply_report(&done, &report(event, 1), NOW);
            if event == Event::Succeeded {
                assert_eq!(
                    result,
                    Ok(Outcome::Unchanged),
                    "the same terminal report again"
                );
            } else {
                assert_eq!(
                    result.unwrap_err().code(),
                    "illegal_transition",
                    "{event:?}"
                );
            }
        }
        let mut other_key = report(Event::Succeeded, 1);
        other_key.s3_key = Some("backups/other.dump".into());
        assert_eq!(
            apply_report(&done, &other_key, NOW).unwrap_err().code(),
            "illegal_transition"
        );
    }

    #[test]
    fn success_is_final_for_later_attempts_too() {
        let done = applied(&fresh(), Event::Succeeded, 1);
        for event in EVENTS {
            assert_eq!(
                apply_report(&done, &report(event, 2), NOW)
                    .unwrap_err()
                    .code(),
                "illegal_transition"
            );
        }
    }

    #[test]
    fn a_reported_failure_repeated_is_unchanged_and_other_reports_are_refused() {
        for (first, reason) in [
            (Event::Failed, FailureReason::StepFailed),
            (Event::Cancelled, FailureReason::Cancelled),
        ] {
            let failed = applied(&fresh(), first, 1);
            assert_eq!(failed.failure_reason, Some(reason));
            for event in EVENTS {
                let result = apply_report(&failed, &report(event, 1), NOW);
                if event == first {
                    assert_eq!(result, Ok(Outcome::Unchanged), "{first:?} then {event:?}");
                } else {
                    assert_eq!(
                        result.unwrap_err().code(),
                        "illegal_transition",
                        "{first:?} then {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_older_attempt_never_overwrites_a_newer_one() {
        let second = applied(&fresh(), Event::Started, 2);
        assert_eq!(second.run_attempt, 2);
        for event in EVENTS {
            assert_eq!(
                apply_report(&second, &report(event, 1), NOW),
                Err(Error::StaleAttempt {
                    reported: 1,
                    current: 2
                }),
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_later_attempt_reopens_a_failed_run() {
        let failed = applied(&fresh(), Event::Failed, 1);
        let rerun = applied(&failed, Event::Started, 2);
        assert_eq!(rerun.status, Status::InProgress);
        assert_eq!(rerun.run_attempt, 2);
        assert_eq!(rerun.failure_reason, None);
        assert_eq!(rerun.error_text, None);
        assert_eq!(rerun.finished_at, None);
        let done = applied(&rerun, Event::Succeeded, 2);
        assert_eq!(done.status, Status::Success);
        // Every event of a later attempt is accepted on a failed run.
        for event in EVENTS {
            let next = applied(&failed, event, 3);
            assert_eq!(next.run_attempt, 3, "{event:?}");
        }
    }

    #[test]
    fn a_report_from_another_workflow_run_is_refused() {
        let started = applied(&fresh(), Event::Started, 1);
        let mut other = report(Event::Succeeded, 1);
        other.workflow_run_id = 78;
        assert_eq!(
            apply_report(&started, &other, NOW).unwrap_err().code(),
            "illegal_transition"
        );
    }

    #[test]
    fn the_workflows_terminal_report_corrects_an_inferred_failure() {
        let sources = [
            OutcomeSource::Dispatch,
            OutcomeSource::Deadline,
            OutcomeSource::Github,
        ];
        let reasons = [
            FailureReason::Lost,
            FailureReason::TimedOut,
            FailureReason::DispatchFailed,
            FailureReason::StepFailed,
        ];
        for source in sources {
            for reason in reasons {
                let failed = failed_by(source, reason);
                let late = applied(&failed, Event::Succeeded, 1);
                assert_eq!(late.status, Status::Success, "{source:?}/{reason:?}");
                assert_eq!(late.outcome_source, Some(OutcomeSource::Report));
                assert_eq!(late.failure_reason, None);
                let cancelled = applied(&failed, Event::Cancelled, 1);
                assert_eq!(cancelled.failure_reason, Some(FailureReason::Cancelled));
                assert_eq!(cancelled.outcome_source, Some(OutcomeSource::Report));
            }
        }
    }

    #[test]
    fn a_late_start_reopens_only_a_lost_or_undispatched_run() {
        for (source, reason, reopens) in [
            (OutcomeSource::Dispatch, FailureReason::DispatchFailed, true),
            (OutcomeSource::Deadline, FailureReason::Lost, true),
            (OutcomeSource::Deadline, FailureReason::TimedOut, false),
            (OutcomeSource::Github, FailureReason::Lost, false),
            (OutcomeSource::Github, FailureReason::StepFailed, false),
            (OutcomeSource::Report, FailureReason::StepFailed, false),
        ] {
            for event in [Event::Started, Event::Progress] {
                let result = apply_report(&failed_by(source, reason), &report(event, 1), NOW);
                match result {
                    Ok(Outcome::Changed(next)) => {
                        assert!(reopens, "{source:?}/{reason:?}/{event:?} must not reopen");
                        assert_eq!(next.status, Status::InProgress);
                    }
                    other => {
                        assert!(
                            !reopens,
                            "{source:?}/{reason:?}/{event:?} should reopen: {other:?}"
                        );
                        assert_eq!(other.unwrap_err().code(), "illegal_transition");
                    }
                }
            }
        }
    }

    #[test]
    fn a_failed_report_without_error_text_still_says_something() {
        let mut r = report(Event::Failed, 1);
        r.error_text = None;
        let Outcome::Changed(next) = apply_report(&fresh(), &r, NOW).unwrap() else {
            panic!()
        };
        assert_eq!(
            next.error_text.as_deref(),
            Some("the workflow reported failed without error_text")
        );
    }

    #[test]
    fn dispatch_failure_fails_only_a_run_nobody_has_heard_from() {
        let Outcome::Changed(next) = dispatch_failed(&fresh(), "GitHub answered 422", NOW) else {
            panic!()
        };
        assert_eq!(next.status, Status::Failed);
        assert_eq!(next.failure_reason, Some(FailureReason::DispatchFailed));
        assert_eq!(next.outcome_source, Some(OutcomeSource::Dispatch));
        assert_eq!(next.error_text.as_deref(), Some("GitHub answered 422"));
        let started = applied(&fresh(), Event::Started, 1);
        assert_eq!(dispatch_failed(&started, "x", NOW), Outcome::Unchanged);
        assert_eq!(dispatch_failed(&next, "x", NOW), Outcome::Unchanged);
    }
}
