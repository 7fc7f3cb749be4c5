//! Bringing silent runs to a truthful end: deadlines and GitHub's record.
//!
//! Some runs never report: a runner dies, a job is killed at its timeout,
//! GitHub drops the dispatch, the last curl is lost. [`decide`] is the pure
//! rule that ends them, from (row, what GitHub says, now):
//!
//! | situation | outcome |
//! |---|---|
//! | GitHub: completed more than the grace period ago, no final report | `failed`, reason from the conclusion (below), source `github` |
//! | no `started` report within the start deadline (and GitHub does not say it is running) | `failed` / `lost`, source `deadline` |
//! | no final report within the max runtime after the start | `failed` / `timed_out`, source `deadline` |
//! | anything else, including GitHub unreachable | unchanged |
//!
//! Conclusions: `failure` and `startup_failure` → `step_failed`;
//! `cancelled` → `cancelled`; `timed_out` → `timed_out`; `success` without
//! a report → `lost` (the object is unknown, so success is never claimed);
//! anything else → `lost`.
//!
//! Only an observed fact or a passed deadline changes a row. The workflow's
//! own late report may still correct these outcomes (see `run.rs`).

use crate::ports::github::{Conclusion, RunStatus, WorkflowRun};
use crate::run::{FailureReason, Outcome, OutcomeSource, Run, Status};
use crate::time::iso8601;

/// The deadlines of `backup_settings`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Dispatched, but no `started` report: `lost` after this long.
    pub start_ms: i64,
    /// Started, but no final report: `timed_out` after this long.
    pub max_runtime_ms: i64,
    /// GitHub says completed: wait this long for the report first.
    pub grace_ms: i64,
}

impl Default for Deadlines {
    /// The migration's defaults: 10 min, 2 h, 60 s.
    fn default() -> Self {
        Deadlines {
            start_ms: 600_000,
            max_runtime_ms: 7_200_000,
            grace_ms: 60_000,
        }
    }
}

/// What GitHub said about the run, if it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubFact {
    /// Not asked, not answerable (no run id, outage, rate limit).
    Unknown,
    /// The run as GitHub records it.
    Run(WorkflowRun),
}

fn fail(run: &Run, reason: FailureReason, source: OutcomeSource, text: &str, now: i64) -> Outcome {
    Outcome::Changed(Box::new(run.clone().failed_by(reason, source, text, now)))
}

/// Decides whether a run must end now. Pure; see the module table.
pub fn decide(run: &Run, deadlines: &Deadlines, github: &GitHubFact, now: i64) -> Outcome {
    if run.status != Status::InProgress {
        return Outcome::Unchanged;
    }
    let mut github_says_running = false;
    if let GitHubFact::Run(w) = github {
        let same_run = run.workflow_run_id == Some(w.id) && w.run_attempt >= run.run_attempt;
        if same_run && w.status == RunStatus::Completed {
            let completed = w.updated_at.unwrap_or(run.updated_at);
            if now - completed >= deadlines.grace_ms {
                return from_conclusion(run, w, completed, deadlines, now);
            }
            // Completed moments ago: the final report may still be in flight.
            github_says_running = true;
        } else if same_run && w.status == RunStatus::InProgress {
            github_says_running = true;
        }
    }
    match run.started_at {
        None if !github_says_running => {
            let due = run.created_at + deadlines.start_ms;
            if now >= due {
                return fail(
                    run,
                    FailureReason::Lost,
                    OutcomeSource::Deadline,
                    &format!(
                        "start deadline passed: no started report within {} s of the dispatch at {} (deadline {})",
                        deadlines.start_ms / 1000,
                        iso8601(run.created_at),
                        iso8601(due)
                    ),
                    now,
                );
            }
        }
        started => {
            let since = started.unwrap_or(run.created_at);
            let due = since + deadlines.max_runtime_ms;
            if now >= due {
                return fail(
                    run,
                    FailureReason::TimedOut,
                    OutcomeSource::Deadline,
                    &format!(
                        "max runtime passed: no final report within {} s of the start at {} (deadline {})",
                        deadlines.max_runtime_ms / 1000,
                        iso8601(since),
                        iso8601(due)
                    ),
                    now,
                );
            }
        }
    }
    Outcome::Unchanged
}

fn from_conclusion(run: &Run, w: &WorkflowRun, completed: i64, d: &Deadlines, now: i64) -> Outcome {
    let reason = match w.conclusion {
        Some(Conclusion::Failure | Conclusion::StartupFailure) => FailureReason::StepFailed,
        Some(Conclusion::Cancelled) => FailureReason::Cancelled,
        Some(Conclusion::TimedOut) => FailureReason::TimedOut,
        // success without a report, neutral, skipped, stale, new values, none
        _ => FailureReason::Lost,
    };
    let conclusion = w.conclusion.map_or("none", Conclusion::as_str);
    let mut text = format!(
        "GitHub reports workflow run {} (attempt {}) completed with conclusion {conclusion} at {}, and no final report arrived within {} s",
        w.id,
        w.run_attempt,
        iso8601(completed),
        d.grace_ms / 1000
    );
    if w.conclusion == Some(Conclusion::Success) {
        text.push_str(": the workflow succeeded but never reported its object, so the backup cannot be verified");
    }
    // GitHub's verdict is about its latest attempt.
    let latest = Run {
        run_attempt: run.run_attempt.max(w.run_attempt),
        ..run.clone()
    };
    Outcome::Changed(Box::new(latest.failed_by(
        reason,
        OutcomeSource::Github,
        &text,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch_id::DispatchId;
    use uuid::Uuid;

    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    fn run(started: bool, status: Status) -> Run {
        let mut r = Run::manual(DispatchId::issue(T0 as u64, [1; 10]), Uuid::nil(), None, T0);
        r.workflow_run_id = Some(42);
        if started {
            r.started_at = Some(T0 + MIN);
        }
        if status != Status::InProgress {
            r.status = status;
            r.finished_at = Some(T0 + 2 * MIN);
            r.outcome_source = Some(OutcomeSource::Report);
            if status == Status::Failed {
                r.failure_reason = Some(FailureReason::StepFailed);
            } else {
                r.s3_key = Some("k".into());
            }
        }
        r
    }

    fn gh(status: &str, conclusion: Option<&str>, updated_at: i64) -> GitHubFact {
        GitHubFact::Run(WorkflowRun {
            id: 42,
            run_attempt: 1,
            status: serde_json::from_value(serde_json::json!(status)).unwrap(),
            conclusion: conclusion.map(|c| serde_json::from_value(serde_json::json!(c)).unwrap()),
            html_url: None,
            updated_at: Some(updated_at),
        })
    }

    fn verdict(o: Outcome) -> Option<(FailureReason, OutcomeSource)> {
        match o {
            Outcome::Unchanged => None,
            Outcome::Changed(next) => {
                assert_eq!(next.status, Status::Failed);
                assert!(next.finished_at.is_some());
                assert!(next.error_text.is_some());
                Some((next.failure_reason.unwrap(), next.outcome_source.unwrap()))
            }
        }
    }

    const CONCLUSIONS: [(&str, FailureReason); 7] = [
        ("failure", FailureReason::StepFailed),
        ("startup_failure", FailureReason::StepFailed),
        ("cancelled", FailureReason::Cancelled),
        ("timed_out", FailureReason::TimedOut),
        ("success", FailureReason::Lost),
        ("neutral", FailureReason::Lost),
        ("skipped", FailureReason::Lost),
    ];

    /// Every status × every conclusion × grace passed or not × deadline
    /// passed or not.
    #[test]
    fn the_whole_table() {
        let d = Deadlines::default();
        for status in [Status::InProgress, Status::Success, Status::Failed] {
            for started in [false, true] {
                for (conclusion, reason) in CONCLUSIONS {
                    for grace_passed in [false, true] {
                        for deadline_passed in [false, true] {
                            let r = run(started, status);
                            let completed = T0 + 3 * MIN;
                            let mut now = completed
                                + if grace_passed {
                                    d.grace_ms
                                } else {
                                    d.grace_ms - 1
                                };
                            if deadline_passed {
                                now = now.max(T0 + MIN + d.max_runtime_ms).max(T0 + d.start_ms);
                            }
                            let fact = gh("completed", Some(conclusion), completed);
                            let got = verdict(decide(&r, &d, &fact, now));
                            let grace_over = now - completed >= d.grace_ms;
                            let expected = if status != Status::InProgress {
                                None
                            } else if grace_over {
                                Some((reason, OutcomeSource::Github))
                            } else if deadline_passed {
                                // Completed moments ago counts as running: only the max runtime applies.
                                Some((FailureReason::TimedOut, OutcomeSource::Deadline))
                            } else {
                                None
                            };
                            assert_eq!(got, expected, "{status:?} started={started} {conclusion} grace={grace_passed} deadline={deadline_passed}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_run_that_never_started_is_lost_at_the_start_deadline() {
        let d = Deadlines::default();
        let r = run(false, Status::InProgress);
        for fact in [GitHubFact::Unknown, gh("queued", None, T0)] {
            assert_eq!(verdict(decide(&r, &d, &fact, T0 + d.start_ms - 1)), None);
            assert_eq!(
                verdict(decide(&r, &d, &fact, T0 + d.start_ms)),
                Some((FailureReason::Lost, OutcomeSource::Deadline))
            );
        }
    }

    #[test]
    fn a_run_github_shows_running_is_not_lost_but_can_time_out() {
        let d = Deadlines::default();
        let r = run(false, Status::InProgress);
        let running = gh("in_progress", None, T0);
        assert_eq!(verdict(decide(&r, &d, &running, T0 + d.start_ms + 1)), None);
        assert_eq!(
            verdict(decide(&r, &d, &running, T0 + d.max_runtime_ms)),
            Some((FailureReason::TimedOut, OutcomeSource::Deadline))
        );
    }

    #[test]
    fn a_started_run_times_out_at_the_max_runtime() {
        let d = Deadlines::default();
        let r = run(true, Status::InProgress);
        let due = T0 + MIN + d.max_runtime_ms;
        assert_eq!(verdict(decide(&r, &d, &GitHubFact::Unknown, due - 1)), None);
        let Outcome::Changed(next) = decide(&r, &d, &GitHubFact::Unknown, due) else {
            panic!()
        };
        assert_eq!(next.failure_reason, Some(FailureReason::TimedOut));
        assert!(next
            .error_text
            .unwrap()
            .starts_with("max runtime passed: no final report within 7200 s"));
    }

    #[test]
    fn a_github_outage_changes_nothing_before_a_deadline() {
        let d = Deadlines::default();
        for started in [false, true] {
            assert_eq!(
                decide(
                    &run(started, Status::InProgress),
                    &d,
                    &GitHubFact::Unknown,
                    T0 + 5 * MIN
                ),
                Outcome::Unchanged
            );
        }
    }

    #[test]
    fn a_success_without_a_report_is_never_claimed() {
        let d = Deadlines::default();
        let Outcome::Changed(next) = decide(
            &run(true, Status::InProgress),
            &d,
            &gh("completed", Some("success"), T0),
            T0 + 2 * MIN,
        ) else {
            panic!()
        };
        assert_eq!(next.status, Status::Failed);
        assert_eq!(next.failure_reason, Some(FailureReason::Lost));
        assert!(next
            .error_text
            .unwrap()
            .contains("succeeded but never reported its object"));
    }

    #[test]
    fn facts_about_another_run_are_ignored() {
        let d = Deadlines::default();
        let mut r = run(true, Status::InProgress);
        r.workflow_run_id = Some(7);
        assert_eq!(
            decide(&r, &d, &gh("completed", Some("failure"), T0), T0 + 5 * MIN),
            Outcome::Unchanged
        );
        r.workflow_run_id = Some(42);
        r.run_attempt = 2;
        assert_eq!(
            decide(&r, &d, &gh("completed", Some("failure"), T0), T0 + 5 * MIN),
            Outcome::Unchanged,
            "an older attempt's conclusion"
        );
    }
}
