//! In-memory fakes of the ports, and the fixtures ([`kit`]) that the flow
//! tests beside each endpoint (`mod flows` in `trigger.rs`, `finalize.rs`,
//! `status.rs`, `sweep.rs`, `auth.rs`, `app.rs`) use to drive whole requests
//! through them natively (`cargo test`). The same flows run against real
//! PostgreSQL in the Deno tests under `tests/`.

use crate::alerts::{Delivery as AlertDelivery, Event, Notification, Raise, Settled, Transition};
use crate::config::Env;
use crate::credentials::token::SignatureCheck;
use crate::dispatch_id::DispatchId;
use crate::ports::github::{OutboundRequest, OutboundResponse};
use crate::ports::store::{
    keeps_running, AlertClock, Applied, Cursor, Delivered, Delivery, EndingReport, ProgressReport,
    Settings, Started, Store, Success, SweeperRecord, ONE_IN_PROGRESS,
};
use crate::ports::{DbError, Host, Level};
use crate::run::{Ended, FailureReason, OutcomeSource, Repeats, Run, Status};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

/// FakeHost's clock when a test starts (unix ms).
pub const START_MS: i64 = 1_800_000_000_000;

/// What a test has happen elsewhere while the core waits on the host.
pub type Meanwhile = Box<dyn Fn()>;

/// A host with a settable clock, scripted fetch answers and recorded calls.
pub struct FakeHost {
    pub env: HashMap<String, String>,
    pub now: Cell<i64>,
    pub counter: Cell<u8>,
    pub fetch_answers: RefCell<VecDeque<Result<OutboundResponse, String>>>,
    pub fetched: RefCell<Vec<OutboundRequest>>,
    pub slept: RefCell<Vec<u32>>,
    pub logs: RefCell<Vec<String>>,
    pub signature_ok: Cell<bool>,
    /// Runs as each request goes out: what happens elsewhere meanwhile.
    pub on_fetch: RefCell<Option<Meanwhile>>,
}

impl FakeHost {
    pub fn new(env: &[(&str, &str)]) -> Self {
        FakeHost {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now: Cell::new(START_MS),
            counter: Cell::new(0),
            fetch_answers: RefCell::new(VecDeque::new()),
            fetched: RefCell::new(Vec::new()),
            slept: RefCell::new(Vec::new()),
            logs: RefCell::new(Vec::new()),
            signature_ok: Cell::new(false),
            on_fetch: RefCell::new(None),
        }
    }

    pub fn answer(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.fetch_answers
            .borrow_mut()
            .push_back(Ok(OutboundResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.to_string(),
            }));
    }
}

impl Env for FakeHost {
    fn var(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

thread_local! {
    /// The database's clock (`now()`), for what MemStore stamps with it: the
    /// host's time as the core last read it, so that the two clocks move
    /// together as on a real deployment. Per thread, as each test runs on
    /// its own.
    static DB_NOW: Cell<i64> = const { Cell::new(START_MS) };
}

impl Host for FakeHost {
    fn now_ms(&self) -> i64 {
        let now = self.now.get();
        DB_NOW.with(|db| db.set(now));
        now
    }
    fn random(&self) -> [u8; 10] {
        self.counter.set(self.counter.get() + 1);
        [self.counter.get(); 10]
    }
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push(format!("{level:?} {message}"));
    }
    async fn fetch(&self, request: OutboundRequest) -> Result<OutboundResponse, String> {
        self.fetched.borrow_mut().push(request);
        if let Some(meanwhile) = self.on_fetch.borrow().as_ref() {
            meanwhile();
        }
        self.fetch_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err("no scripted answer".into()))
    }
    async fn sleep(&self, ms: u32) {
        self.slept.borrow_mut().push(ms);
    }
    async fn verify_signature(&self, _check: &SignatureCheck) -> Result<bool, String> {
        Ok(self.signature_ok.get())
    }
    async fn watch(&self, _id: DispatchId) -> Result<u64, DbError> {
        Ok(0)
    }
    async fn wait_for_change(&self, _id: DispatchId, _since: u64, timeout_ms: u32) -> bool {
        // No one else can write while a native test awaits: time passes.
        self.now.set(self.now.get() + i64::from(timeout_ms));
        false
    }
}

/// `backup_history` in memory, with the database's single-flight rule and
/// version checks.
#[derive(Default)]
pub struct MemStore {
    pub runs: RefCell<Vec<Run>>,
    pub admins: RefCell<Vec<Uuid>>,
    /// webhook-id -> (run, body SHA-256).
    pub deliveries: RefCell<HashMap<String, (DispatchId, String)>>,
    pub down: Cell<bool>,
    pub settings: Cell<Settings>,
    /// Recorded sweeps: (unix ms, outcome), oldest first.
    pub sweeps: RefCell<Vec<(i64, String)>>,
    /// `backup_settings.sweep_problem`, as the database's scheduler writes it.
    pub sweep_problem: RefCell<Option<String>>,
    /// `backup_settings.retention_days` and `retention_keep`.
    pub retention: Cell<(Option<i64>, i64)>,
    /// `backup_notifications`, each with its lease (`claimed_until`).
    pub notes: RefCell<Vec<(Notification, Option<i64>)>>,
    /// `backup_alert_state`: the open problem, and the silence last raised.
    pub alert_open: Cell<Option<Event>>,
    pub silence_from: Cell<Option<i64>>,
    /// `backup_settings.alert_after_hours` (0 reads as the default, 26).
    pub alert_after_hours: Cell<i64>,
    /// When set, the progress writes (`apply_to_running`, `apply_progress`)
    /// give way once before writing, as a statement in flight would.
    pub slow_writes: Cell<bool>,
    /// The number of reports of each `apply_progress` call, in order.
    pub progress_batches: RefCell<Vec<usize>>,
    /// The number of reports of each `read_reports` call, in order.
    pub ending_batches: RefCell<Vec<usize>>,
    /// The number of successes of each `after_success` call, in order.
    pub success_batches: RefCell<Vec<usize>>,
    /// Deliveries recorded as repeats by `apply_to_running` and
    /// `read_reports`.
    pub repeats_recorded: Cell<u32>,
    /// When set, the next progress write finds this run in the row instead
    /// (another writer got there before apply_progress.sql's row lock).
    pub overtaken_by: RefCell<Option<Run>>,
    /// When set, the database goes down right after the next progress
    /// statement (`apply_to_running`) answers.
    pub down_after_progress: Cell<bool>,
}

/// Returns `Pending` once (waking itself), so that other futures run.
struct GiveWay(bool);

impl std::future::Future for GiveWay {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// What `update_run.sql` guards on: the state a decision was made from.
type State = (
    Status,
    u32,
    Option<u64>,
    Option<FailureReason>,
    Option<OutcomeSource>,
    bool,
);

fn state(r: &Run) -> State {
    (
        r.status,
        r.run_attempt,
        r.workflow_run_id,
        r.failure_reason,
        r.outcome_source,
        r.started_at.is_some(),
    )
}

/// The fast statement's merge: `next` (what a report makes of a run in
/// progress that has nothing yet) over the row, which keeps its own start
/// time and progress where `next` has none. A `next` still in progress is
/// `apply_progress.sql`'s: it writes the workflow run, the start time and
/// the progress only; any other is `apply_report.sql`'s.
pub fn merge_into_running(row: &Run, next: &Run) -> Run {
    let mut merged = row.clone();
    if next.status == Status::InProgress {
        merged.workflow_run_id = next.workflow_run_id;
        merged.started_at = row.started_at.or(next.started_at);
        if next.progress.is_some() {
            merged.progress.clone_from(&next.progress);
        }
        return merged;
    }
    merged.status = next.status;
    merged.failure_reason = next.failure_reason;
    merged.outcome_source = next.outcome_source;
    merged.workflow_run_id = next.workflow_run_id;
    merged.started_at = row.started_at.or(next.started_at);
    merged.finished_at = next.finished_at;
    merged.s3_key.clone_from(&next.s3_key);
    merged.size_bytes = next.size_bytes;
    merged.sha256.clone_from(&next.sha256);
    merged.error_text.clone_from(&next.error_text);
    if next.progress.is_some() {
        merged.progress.clone_from(&next.progress);
    }
    merged
}

/// Whether `row` is run `id` in progress in the attempt and workflow run
/// that `next` was decided for: the guard of the statements that write a
/// decision to a running run (apply_report.sql, apply_progress.sql).
fn running_as_decided(row: &Run, id: DispatchId, next: &Run) -> bool {
    row.dispatch_id == id
        && row.status == Status::InProgress
        && row.run_attempt == next.run_attempt
        && row
            .workflow_run_id
            .is_none_or(|w| Some(w) == next.workflow_run_id)
}

impl MemStore {
    /// The fast statements' write: `next` merged into the run `id` if it is
    /// in progress in `next`'s attempt, of its workflow run or of none yet,
    /// and the merge changes something; the row as written.
    fn merge_running(&self, id: DispatchId, next: &Run) -> Option<Run> {
        let mut runs = self.runs.borrow_mut();
        let row = runs.iter_mut().find(|r| running_as_decided(r, id, next))?;
        let merged = merge_into_running(row, next);
        if merged == *row {
            return None;
        }
        *row = merged;
        row.version += 1;
        Some(row.clone())
    }

    /// raise_alerts.sql over the rows in memory, for a write of `next` that
    /// happened (`saved`, the row as written).
    fn raise(&self, next: &Run, saved: &Run, raise: &Raise) {
        let event = match raise.kind {
            None => return,
            Some(Transition::Failed) => Event::Failed,
            Some(Transition::VerificationFailed) => Event::VerificationFailed,
            Some(Transition::Succeeded) => match self.alert_open.get() {
                None => return,
                Some(_) => Event::Recovery,
            },
        };
        self.alert_open.set(match event {
            Event::Recovery => None,
            other => Some(other),
        });
        let mut facts: serde_json::Value =
            serde_json::from_str(&raise.facts(next)).unwrap_or_default();
        facts["run"]["run_url"] = serde_json::json!(saved.run_url);
        facts["run"]["started_at"] = serde_json::json!(saved.started_at.map(crate::time::iso8601));
        self.queue(
            event,
            Some(saved.dispatch_id),
            &facts.to_string(),
            &raise.to,
        );
    }

    /// Inserts one pending row per destination, as the SQL does: the facts
    /// with the event and the last success (as of before this write).
    fn queue(&self, event: Event, dispatch_id: Option<DispatchId>, facts: &str, to: &str) {
        let last = self
            .runs
            .borrow()
            .iter()
            .filter(|r| r.status == Status::Success && Some(r.dispatch_id) != dispatch_id)
            .max_by_key(|r| r.finished_at)
            .map(|r| {
                serde_json::json!({
                    "dispatch_id": r.dispatch_id.to_string(),
                    "s3_key": r.s3_key,
                    "finished_at": r.finished_at.map(crate::time::iso8601),
                })
            });
        let mut payload: serde_json::Value = serde_json::from_str(facts).unwrap_or_default();
        payload["event"] = serde_json::json!(event.as_str());
        payload["last_success"] = last.unwrap_or_default();
        let labels: Vec<String> = serde_json::from_str(to).unwrap_or_default();
        let mut notes = self.notes.borrow_mut();
        for destination in labels {
            let id = notes.len() as i64 + 1;
            notes.push((
                Notification {
                    id,
                    event,
                    dispatch_id: dispatch_id.map(|d| d.to_string()),
                    destination,
                    payload: payload.to_string(),
                    webhook_id: format!("msg_{id}"),
                    status: AlertDelivery::Pending,
                    attempts: 0,
                    created_at: DB_NOW.with(Cell::get),
                    next_attempt_at: DB_NOW.with(Cell::get),
                    last_error: None,
                    delivered_at: None,
                },
                None,
            ));
        }
    }

    /// The outbox, oldest first, without the leases.
    pub fn outbox(&self) -> Vec<Notification> {
        self.notes.borrow().iter().map(|(n, _)| n.clone()).collect()
    }

    /// retention.sql for one success, over the rows in memory.
    fn after_one(&self, success: &Success<'_>) -> String {
        let (id, verdict, folder) = (success.dispatch_id, success.verification, success.folder);
        if let (Some(webhook_id), Some(body_sha256)) = (success.webhook_id, success.body_sha256) {
            let d = Delivery {
                id: webhook_id,
                body_sha256,
            };
            self.record(d, id);
        }
        for run in self.runs.borrow_mut().iter_mut() {
            let Some(verdict) = verdict else { break };
            if run.dispatch_id == id && run.status == Status::Success && run.verification.is_none()
            {
                run.verification = Some(verdict.to_string());
                // What select_run.sql reads from the stored object.
                run.verification_failed = crate::verification::failed(verdict);
                run.version += 1;
            }
        }
        serde_json::to_string(&self.listed(id, folder)).unwrap_or_default()
    }

    /// The keys retention lists for the success `id` (its key's `folder`):
    /// retention.sql's rule, over the rows in memory.
    fn listed(&self, id: DispatchId, folder: &str) -> Vec<String> {
        let (days, keep) = self.retention.get();
        let Some(days) = days else {
            return Vec::new();
        };
        let mut stored: Vec<Run> = self
            .runs
            .borrow()
            .iter()
            .filter(|r| r.status == Status::Success && r.pruned_at.is_none())
            .cloned()
            .collect();
        stored.sort_by_key(|r| std::cmp::Reverse((r.finished_at, r.id)));
        // The database's now(): FakeHost's clock as it starts.
        let cutoff = START_MS - days * 86_400_000;
        let mut keys: Vec<(i64, String)> = stored
            .into_iter()
            .skip(usize::try_from(keep).unwrap_or(0))
            .filter(|r| r.dispatch_id != id && r.finished_at.unwrap_or(0) < cutoff)
            .filter_map(|r| {
                let key = r.s3_key?;
                let name = key.strip_prefix(folder)?;
                let ours = !name.contains('/') && name.contains(&format!("_{}.", r.dispatch_id));
                ours.then_some((r.finished_at.unwrap_or(0), key))
            })
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Records a delivery unless its `webhook-id` was seen (as the
    /// statements do: `on conflict do nothing`).
    fn record(&self, d: Delivery<'_>, id: DispatchId) {
        self.deliveries
            .borrow_mut()
            .entry(d.id.into())
            .or_insert((id, d.body_sha256.into()));
    }

    fn up(&self) -> Result<(), DbError> {
        if self.down.get() {
            Err(DbError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
    /// Inserts, as the single-flight index allows (the raw insert that
    /// [`Store::start`] guards).
    pub async fn insert(&self, run: &Run, delivery: Option<Delivery<'_>>) -> Result<Run, DbError> {
        self.up()?;
        let mut runs = self.runs.borrow_mut();
        if run.status == Status::InProgress && runs.iter().any(|r| r.status == Status::InProgress) {
            return Err(DbError::UniqueViolation(ONE_IN_PROGRESS.into()));
        }
        let mut saved = run.clone();
        saved.id = runs.len() as i64 + 1;
        runs.push(saved.clone());
        if let Some(d) = delivery {
            self.record(d, run.dispatch_id);
        }
        Ok(saved)
    }
    pub fn only(&self) -> Run {
        let runs = self.runs.borrow();
        assert_eq!(runs.len(), 1, "expected exactly one run");
        runs[0].clone()
    }
}

impl Store for MemStore {
    async fn is_admin(&self, user: Uuid) -> Result<bool, DbError> {
        self.up()?;
        Ok(self.admins.borrow().contains(&user))
    }
    async fn get(&self, id: DispatchId) -> Result<Option<Run>, DbError> {
        self.up()?;
        Ok(self
            .runs
            .borrow()
            .iter()
            .find(|r| r.dispatch_id == id)
            .cloned())
    }
    async fn running(&self) -> Result<Option<Run>, DbError> {
        self.up()?;
        Ok(self
            .runs
            .borrow()
            .iter()
            .find(|r| r.status == Status::InProgress)
            .cloned())
    }
    async fn by_workflow_run(&self, workflow_run_id: u64) -> Result<Option<Run>, DbError> {
        self.up()?;
        Ok(self
            .runs
            .borrow()
            .iter()
            .rev()
            .find(|r| r.workflow_run_id == Some(workflow_run_id))
            .cloned())
    }
    async fn update(
        &self,
        prev: &Run,
        next: &Run,
        delivery: Option<Delivery<'_>>,
        raise: &Raise,
    ) -> Result<Option<Run>, DbError> {
        self.up()?;
        let mut runs = self.runs.borrow_mut();
        if next.status == Status::InProgress
            && runs
                .iter()
                .any(|r| r.status == Status::InProgress && r.id != prev.id)
        {
            return Err(DbError::UniqueViolation(ONE_IN_PROGRESS.into()));
        }
        let Some(row) = runs
            .iter_mut()
            .find(|r| r.id == prev.id && state(r) == state(prev))
        else {
            return Ok(None);
        };
        // As update_run.sql writes: run_url and progress, which writes that
        // change no state may change meanwhile, only if the decision did.
        let (run_url, progress) = (row.run_url.clone(), row.progress.clone());
        *row = Run {
            id: row.id,
            version: row.version,
            ..next.clone()
        };
        if next.run_url == prev.run_url {
            row.run_url = run_url;
        }
        if next.progress == prev.progress {
            row.progress = progress;
        }
        row.version += 1;
        if let Some(d) = delivery {
            self.record(d, row.dispatch_id);
        }
        let saved = row.clone();
        drop(runs);
        self.raise(next, &saved, raise);
        Ok(Some(saved))
    }
    async fn apply_to_running(
        &self,
        id: DispatchId,
        next: &Run,
        delivery: Delivery<'_>,
        raise: &Raise,
        ended: Option<Ended>,
    ) -> Result<Applied, DbError> {
        if self.slow_writes.get() {
            GiveWay(false).await;
        }
        self.up()?;
        // apply_progress.sql: if the run is in progress in the attempt
        // (merge_running's guard), its row is locked and a new delivery
        // recorded, then the decision is written if it changes the run.
        if keeps_running(next, raise) {
            // Another writer changed the row before this statement locked it.
            if let Some(other) = self.overtaken_by.borrow_mut().take() {
                if let Some(row) = self
                    .runs
                    .borrow_mut()
                    .iter_mut()
                    .find(|r| r.dispatch_id == id)
                {
                    *row = other;
                }
            }
            let running = self
                .runs
                .borrow()
                .iter()
                .any(|r| running_as_decided(r, id, next));
            if self.down_after_progress.take() {
                self.down.set(true);
            }
            if !running || self.deliveries.borrow().contains_key(delivery.id) {
                return Ok(Applied::Missed);
            }
            self.record(delivery, id);
            return Ok(match self.merge_running(id, next) {
                Some(_) => Applied::Written,
                None => Applied::Recorded,
            });
        }
        let written = (!self.deliveries.borrow().contains_key(delivery.id))
            .then(|| self.merge_running(id, next))
            .flatten();
        if let Some(saved) = written {
            self.record(delivery, id);
            self.raise(next, &saved, raise);
            return Ok(Applied::Written);
        }
        // As store.rs chooses: only a decision that ends the run reads.
        if next.status == Status::InProgress {
            return Ok(Applied::Missed);
        }
        let found = self.read_for_report(Some(id), delivery.id).await?;
        // record_repeat.sql: a new delivery to the run that ended as it is.
        if let (Some(e), Some((run, None))) = (ended, &found) {
            if e.matches(run) {
                self.record(delivery, id);
                self.repeats_recorded.set(self.repeats_recorded.get() + 1);
                return Ok(Applied::Repeat(Box::new(run.clone()), None));
            }
        }
        Ok(Applied::Read(Box::new(found)))
    }
    async fn apply_progress(
        &self,
        id: DispatchId,
        first: &Run,
        reports: &[ProgressReport<'_>],
    ) -> Result<Vec<Applied>, DbError> {
        if self.slow_writes.get() {
            GiveWay(false).await;
        }
        self.up()?;
        self.progress_batches.borrow_mut().push(reports.len());
        // As apply_progress_batch.sql: one after another, each as
        // apply_progress.sql would write it alone; the new deliveries that
        // change nothing are recorded if any report changed the run.
        let before = self.runs.borrow().clone();
        let results: Vec<Applied> = reports
            .iter()
            .map(|r| {
                if self.deliveries.borrow().contains_key(r.webhook_id) {
                    return Applied::Missed;
                }
                let mut next = first.clone();
                next.progress = Some(r.progress.to_owned());
                if self.merge_running(id, &next).is_some() {
                    Applied::Written
                } else {
                    Applied::Recorded
                }
            })
            .collect();
        if !results.contains(&Applied::Written) {
            *self.runs.borrow_mut() = before;
            return Ok(vec![Applied::Missed; reports.len()]);
        }
        for (r, a) in reports.iter().zip(&results) {
            if *a != Applied::Missed {
                self.record(
                    Delivery {
                        id: r.webhook_id,
                        body_sha256: r.body_sha256,
                    },
                    id,
                );
            }
        }
        Ok(results)
    }
    async fn read_reports(&self, reports: &[EndingReport<'_>]) -> Result<Vec<Applied>, DbError> {
        if self.slow_writes.get() {
            GiveWay(false).await;
        }
        self.up()?;
        self.ending_batches.borrow_mut().push(reports.len());
        let mut answers = Vec::new();
        for r in reports {
            let found = self
                .read_for_report(Some(r.dispatch_id), r.delivery.id)
                .await?;
            answers.push(match (found, r.repeats) {
                // read_reports.sql's repeat: the run ended as the report
                // ends it.
                (Some((run, None)), Some(repeats)) if repeats.matches(&run) => {
                    self.record(r.delivery, r.dispatch_id);
                    self.repeats_recorded.set(self.repeats_recorded.get() + 1);
                    let prune = match repeats {
                        Repeats::Success { s3_key, .. } => Some(self.after_one(&Success {
                            dispatch_id: r.dispatch_id,
                            verification: None,
                            folder: crate::retention::folder(s3_key),
                            webhook_id: None,
                            body_sha256: None,
                        })),
                        Repeats::Failure(_) => None,
                    };
                    Applied::Repeat(Box::new(run), prune)
                }
                (found, _) => Applied::Read(Box::new(found)),
            });
        }
        Ok(answers)
    }
    async fn read_for_report(
        &self,
        id: Option<DispatchId>,
        webhook_id: &str,
    ) -> Result<Option<(Run, Option<Delivered>)>, DbError> {
        self.up()?;
        let delivered = self
            .deliveries
            .borrow()
            .get(webhook_id)
            .map(|(id, hash)| Delivered {
                dispatch_id: *id,
                body_sha256: Some(hash.clone()),
            });
        let Some(id) = id.or(delivered.as_ref().map(|d| d.dispatch_id)) else {
            return Ok(None);
        };
        Ok(self.get(id).await?.map(|run| (run, delivered)))
    }
    async fn start(&self, run: &Run, delivery: Option<Delivery<'_>>) -> Result<Started, DbError> {
        if let Some(running) = self.running().await? {
            return Ok(Started::Running(running));
        }
        self.insert(run, delivery).await.map(Started::Inserted)
    }
    async fn forget_delivery(&self, delivery: Delivery<'_>) -> Result<(), DbError> {
        self.up()?;
        let mut deliveries = self.deliveries.borrow_mut();
        if deliveries
            .get(delivery.id)
            .is_some_and(|(_, hash)| hash == delivery.body_sha256)
        {
            deliveries.remove(delivery.id);
        }
        Ok(())
    }
    async fn record_delivery(&self, delivery: Delivery<'_>, id: DispatchId) -> Result<(), DbError> {
        self.up()?;
        self.record(delivery, id);
        Ok(())
    }
    async fn list(
        &self,
        limit: u32,
        before: Option<Cursor>,
    ) -> Result<Vec<(Run, Cursor)>, DbError> {
        self.up()?;
        let mut runs: Vec<(Run, Cursor)> = self
            .runs
            .borrow()
            .iter()
            .map(|r| (r.clone(), (r.created_at * 1000, r.id)))
            .collect();
        runs.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        Ok(runs
            .into_iter()
            .filter(|(_, c)| before.is_none_or(|b| *c < b))
            .take(limit as usize)
            .collect())
    }
    async fn settings(&self) -> Result<Settings, DbError> {
        self.up()?;
        Ok(self.settings.get())
    }
    async fn set_github_backoff(&self, until_ms: i64) -> Result<(), DbError> {
        self.up()?;
        let mut s = self.settings.get();
        s.github_backoff_until = until_ms;
        self.settings.set(s);
        Ok(())
    }
    async fn record_sweep(&self, at_ms: i64, outcome: &str) -> Result<(), DbError> {
        self.up()?;
        self.sweeps.borrow_mut().push((at_ms, outcome.to_string()));
        Ok(())
    }
    async fn sweeper(&self) -> Result<SweeperRecord, DbError> {
        self.up()?;
        Ok(SweeperRecord {
            last_run_at: self.sweeps.borrow().last().map(|(at, _)| *at),
            problem: self.sweep_problem.borrow().clone(),
        })
    }
    async fn after_success(&self, successes: &[Success<'_>]) -> Result<Vec<String>, DbError> {
        if self.slow_writes.get() {
            GiveWay(false).await;
        }
        self.up()?;
        self.success_batches.borrow_mut().push(successes.len());
        Ok(successes.iter().map(|s| self.after_one(s)).collect())
    }
    async fn mark_pruned(
        &self,
        id: DispatchId,
        folder: &str,
        keys: &str,
        delivery: Delivery<'_>,
    ) -> Result<(), DbError> {
        self.up()?;
        self.record(delivery, id);
        let keys: Vec<String> = serde_json::from_str(keys).unwrap_or_default();
        let due = self.listed(id, folder);
        for run in self.runs.borrow_mut().iter_mut() {
            let listed = run
                .s3_key
                .as_ref()
                .is_some_and(|k| keys.contains(k) && due.contains(k));
            if listed && run.status == Status::Success && run.pruned_at.is_none() {
                run.pruned_at = Some(1);
                run.version += 1;
            }
        }
        Ok(())
    }
    async fn alert_clock(&self) -> Result<AlertClock, DbError> {
        self.up()?;
        let last = self
            .runs
            .borrow()
            .iter()
            .filter(|r| r.status == Status::Success)
            .filter_map(|r| r.finished_at)
            .max();
        let hours = self.alert_after_hours.get();
        Ok(AlertClock {
            after_hours: if hours == 0 { 26 } else { hours },
            // Alerting began as the test did.
            silent_since: last.unwrap_or(START_MS),
            raised_for: self.silence_from.get(),
        })
    }
    async fn raise_silence(&self, since_ms: i64, facts: &str, to: &str) -> Result<bool, DbError> {
        self.up()?;
        let silent_since = self.alert_clock().await?.silent_since;
        if self.silence_from.get() == Some(since_ms) || silent_since != since_ms {
            return Ok(false);
        }
        self.silence_from.set(Some(since_ms));
        self.alert_open.set(Some(Event::Silence));
        self.queue(Event::Silence, None, facts, to);
        Ok(true)
    }
    async fn raise_test(&self, to: &str) -> Result<(), DbError> {
        self.up()?;
        self.queue(Event::Test, None, "{}", to);
        Ok(())
    }
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, DbError> {
        self.up()?;
        let mut claimed = Vec::new();
        for (note, lease) in self.notes.borrow_mut().iter_mut() {
            let free = lease.is_none_or(|until| until <= now_ms);
            if claimed.len() < limit as usize
                && note.status == AlertDelivery::Pending
                && note.next_attempt_at <= now_ms
                && free
            {
                *lease = Some(now_ms + lease_ms);
                note.attempts += 1;
                claimed.push(note.clone());
            }
        }
        Ok(claimed)
    }
    async fn settle_notification(
        &self,
        id: i64,
        attempts: u32,
        settled: &Settled,
        now_ms: i64,
    ) -> Result<(), DbError> {
        self.up()?;
        let (status, at, error) = settled.columns();
        for (note, lease) in self.notes.borrow_mut().iter_mut() {
            if note.id == id && note.attempts == attempts && note.status == AlertDelivery::Pending {
                note.status = serde_json::from_value(serde_json::json!(status))
                    .unwrap_or(AlertDelivery::Pending);
                note.next_attempt_at = at.unwrap_or(note.next_attempt_at);
                note.last_error = error.map(str::to_string);
                note.delivered_at = (status == "delivered").then_some(now_ms);
                *lease = None;
            }
        }
        Ok(())
    }
    async fn notifications(&self, limit: u32) -> Result<Vec<Notification>, DbError> {
        self.up()?;
        let mut notes = self.outbox();
        notes.reverse();
        notes.truncate(limit as usize);
        Ok(notes)
    }
}

/// What the flow tests beside each endpoint share: the fixtures below and
/// the crates they use, for `use crate::testing::*`.
pub(crate) mod kit {
    pub(crate) use super::{FakeHost, MemStore};
    pub(crate) use crate::app;
    pub(crate) use crate::credentials::token::sign_hs256;
    pub(crate) use crate::credentials::webhook::WebhookSecret;
    pub(crate) use crate::dispatch_id::DispatchId;
    pub(crate) use crate::http::{Request, Response};
    pub(crate) use crate::ports::Host;
    pub(crate) use crate::report::Report;
    pub(crate) use crate::run::FailureReason;
    pub(crate) use crate::run::{self, Outcome, Status};
    pub(crate) use futures::executor::block_on;
    pub(crate) use serde_json::{json, Value};
    pub(crate) use uuid::Uuid;

    pub(crate) const JWT_SECRET: &str = "local-dev-jwt-secret-at-least-32-characters";

    pub(crate) const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    pub(crate) const ADMIN: &str = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";

    pub(crate) const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    pub(crate) fn host() -> FakeHost {
        FakeHost::new(&[
            ("BACKUP_JWT_SECRET", JWT_SECRET),
            ("BACKUP_WEBHOOK_SECRET", WHSEC),
            // Reports signed only: the flows about runs sign with `finalize`;
            // `oidc_host` adds GitHub's tokens (finalize.rs, `mod oidc_flows`).
            ("BACKUP_REPORT_AUTH", "webhook"),
            ("GITHUB_TOKEN", "ghp_test"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("ALLOWED_ORIGINS", "http://localhost:3000"),
        ])
    }

    pub(crate) fn store() -> MemStore {
        let s = MemStore::default();
        s.admins.borrow_mut().push(Uuid::parse_str(ADMIN).unwrap());
        s
    }

    pub(crate) fn token(host: &FakeHost, sub: &str) -> String {
        sign_hs256(
            JWT_SECRET.as_bytes(),
            &json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": host.now_ms() / 1000 + 600}),
        )
    }

    pub(crate) fn trigger(host: &FakeHost, store: &MemStore, sub: &str, body: &str) -> Response {
        let req = Request::new(
            "POST",
            "http://localhost/functions/v1/trigger-backup",
            vec![(
                "authorization".into(),
                format!("Bearer {}", token(host, sub)),
            )],
            body.as_bytes().to_vec(),
        );
        block_on(app::handle(host, store, "trigger-backup", &req))
    }

    pub(crate) fn finalize(
        host: &FakeHost,
        store: &MemStore,
        webhook_id: &str,
        body: &Value,
    ) -> Response {
        let req = report_request(host, webhook_id, body);
        block_on(app::handle(host, store, "finalize-backup", &req))
    }

    /// A report to finalize-backup, signed as the workflow signs it.
    pub(crate) fn report_request(host: &FakeHost, webhook_id: &str, body: &Value) -> Request {
        let body = body.to_string();
        let ts = host.now_ms() / 1000;
        let sig = WebhookSecret::parse(WHSEC)
            .unwrap()
            .sign(webhook_id, ts, body.as_bytes());
        Request::new(
            "POST",
            "http://localhost/functions/v1/finalize-backup",
            vec![
                ("webhook-id".into(), webhook_id.into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), sig),
                ("content-type".into(), "application/json".into()),
            ],
            body.into_bytes(),
        )
    }

    pub(crate) fn body(r: &Response) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    pub(crate) fn dispatched(host: &FakeHost, store: &MemStore) -> String {
        host.answer(200, &[], r#"{"workflow_run_id": 4242, "run_url": "https://api.github.com/repos/acme/app/actions/runs/4242", "html_url": "https://github.com/acme/app/actions/runs/4242"}"#);
        let r = trigger(host, store, ADMIN, "");
        assert_eq!(r.status, 202, "{}", r.body);
        body(&r)["dispatch_id"].as_str().unwrap().to_string()
    }

    pub(crate) fn sweep_req(host: &FakeHost, store: &MemStore, key: &str) -> Response {
        let req = Request::new(
            "POST",
            "http://x/functions/v1/reconcile-backups",
            vec![("authorization".into(), format!("Bearer {key}"))],
            vec![],
        );
        block_on(app::handle(host, store, "reconcile-backups", &req))
    }

    pub(crate) fn service_host() -> FakeHost {
        let mut h = host();
        h.env
            .insert("SUPABASE_SERVICE_ROLE_KEY".into(), "service-key".into());
        h
    }

    pub(crate) fn status_get(
        host: &FakeHost,

        store: &MemStore,
        query: &str,

        if_none_match: Option<&str>,
    ) -> Response {
        let mut headers = vec![(
            "authorization".into(),
            format!("Bearer {}", token(host, ADMIN)),
        )];
        if let Some(tag) = if_none_match {
            headers.push(("if-none-match".into(), tag.to_string()));
        }
        let req = Request::new(
            "GET",
            &format!("http://x/functions/v1/backup-status?{query}"),
            headers,
            vec![],
        );
        block_on(app::handle(host, store, "backup-status", &req))
    }

    // --- user tokens without a held secret, key rotation, service keys ---

    pub(crate) const AUTH_URL: &str = "https://ref.supabase.co";

    pub(crate) const PUBLISHABLE: &str = "sb_publishable_test";

    /// A host configured as hosted Supabase configures a function: no JWT
    /// secret, an injected key set, the project URL and its API keys.
    pub(crate) fn hosted(jwks: &Value) -> FakeHost {
        let mut h = host();
        h.env.remove("BACKUP_JWT_SECRET");
        for (k, v) in [
            ("SUPABASE_URL", AUTH_URL.to_string()),
            ("SUPABASE_JWKS", jwks.to_string()),
            (
                "SUPABASE_PUBLISHABLE_KEYS",
                json!({ "default": PUBLISHABLE }).to_string(),
            ),
            ("SUPABASE_ANON_KEY", "eyJ-legacy-anon".to_string()),
        ] {
            h.env.insert(k.into(), v);
        }
        h
    }

    pub(crate) fn status_with(host: &FakeHost, store: &MemStore, token: &str) -> Response {
        let req = Request::new(
            "GET",
            "http://x/functions/v1/backup-status?limit=1",
            vec![("authorization".into(), format!("Bearer {token}"))],
            vec![],
        );
        block_on(app::handle(host, store, "backup-status", &req))
    }

    pub(crate) fn hs256_claims(host: &FakeHost, sub: &str, ttl_secs: i64) -> Value {
        json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": host.now_ms() / 1000 + ttl_secs})
    }

    pub(crate) fn ec_key(kid: &str) -> Value {
        use base64::Engine;
        let b64 = |b: [u8; 32]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": b64([1; 32]), "y": b64([2; 32])})
    }

    /// An ES256 token under `kid`; its signature is the host's to judge
    /// (`FakeHost::signature_ok`).
    pub(crate) fn es256_token(host: &FakeHost, kid: &str, sub: &str) -> String {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = b64(json!({"alg": "ES256", "kid": kid}).to_string().as_bytes());
        let claims = b64(hs256_claims(host, sub, 600).to_string().as_bytes());
        format!("{header}.{claims}.{}", b64(&[9; 64]))
    }

    pub(crate) fn auth_says_user(host: &FakeHost, id: &str) {
        host.answer(
            200,
            &[],
            &json!({"id": id, "aud": "authenticated", "role": "authenticated"}).to_string(),
        );
    }

    pub(crate) fn error_code(r: &Response) -> Value {
        body(r)["error"]["code"].clone()
    }

    pub(crate) fn sweep_with(
        host: &FakeHost,
        store: &MemStore,
        headers: &[(&str, &str)],
    ) -> Response {
        let req = Request::new(
            "POST",
            "http://x/functions/v1/reconcile-backups",
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vec![],
        );
        block_on(app::handle(host, store, "reconcile-backups", &req))
    }

    pub(crate) fn secret_keys_host() -> FakeHost {
        let mut h = host();
        h.env.insert(
            "SUPABASE_SECRET_KEYS".into(),
            json!({"default": "sb_secret_default_0123456789", "cron": "sb_secret_cron_0123456789"})
                .to_string(),
        );
        h
    }
}
