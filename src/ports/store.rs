//! Persistence of runs: the typed [`Store`] port and its PostgreSQL
//! implementation.
//!
//! Every write is a single SQL statement, so it is one transaction: the
//! history row, the delivery record and (through the migration's trigger)
//! `backup_settings` change together or not at all. No lock is held across
//! round trips to the host. Writes are guarded by the state the core's
//! decision depended on, never by a bare version counter, so a write that
//! only landed in between (a progress report) costs nobody a retry:
//!
//! - [`Store::apply_to_running`] is a report's common case in one round
//!   trip: the decision for a run in progress is made before reading, and
//!   the statement applies it only if the row is in that state. If not,
//!   the core reads the row and the delivery ([`Store::read_for_report`])
//!   and decides in full; a decision that ends the run has that read
//!   folded into its statement, as such a report is the one that comes
//!   again (a retry, a repeat to a finished run).
//! - [`Store::update`] writes a decision made from a row read earlier, if
//!   the row's state is still the one read. `None` means the state changed
//!   (a transition happened), so the flow reads again and decides again; as
//!   a run has few transitions, that loop ends without a bound.
//! - [`Store::start`] inserts the button's run or returns the running one.
//!
//! The SQL itself lives in `sql/` next to this file so it can be read as SQL.

use crate::alerts::{Notification, Raise, Settled};
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::ports::{Db, DbError};
use crate::reconcile::Deadlines;
use crate::run::{Ended, Repeats, Run, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of the partial unique index that allows one running backup.
pub const ONE_IN_PROGRESS: &str = "backup_history_one_in_progress";

/// A page position in the history: (created_at in microseconds, id) of the
/// last row seen. Microseconds, because that is what PostgreSQL stores:
/// a millisecond cursor would skip rows written within the same millisecond.
pub type Cursor = (i64, i64);

/// A report's delivery: its `webhook-id`, and the SHA-256 (hex) of its
/// body, so that the id re-used with another body is told from a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub id: &'a str,
    pub body_sha256: &'a str,
}

/// A `progress` report as [`Store::apply_progress`] writes it: its delivery
/// and the progress it brings (canonical JSON text of an object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProgressReport<'a> {
    pub webhook_id: &'a str,
    #[serde(serialize_with = "raw_json")]
    pub progress: &'a str,
    pub body_sha256: &'a str,
}

/// A report that would end its run, as [`Store::read_reports`] reads it:
/// its run, its delivery, and the state in which it is a repeat, if it can
/// be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndingReport<'a> {
    pub dispatch_id: DispatchId,
    pub delivery: Delivery<'a>,
    pub repeats: Option<&'a Repeats>,
}

/// As `read_reports.sql` reads a report: `reason` (a failure's repeat), or
/// `key` and `folder` (a success's), with `attempt` and `workflow_run`; all
/// null if it cannot be a repeat.
impl Serialize for EndingReport<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (reason, key, attempt, workflow_run) = match self.repeats {
            Some(Repeats::Failure(e)) => (
                Some(e.failure_reason.as_str()),
                None,
                Some(e.run_attempt),
                Some(e.workflow_run_id),
            ),
            Some(Repeats::Success {
                s3_key,
                run_attempt,
                workflow_run_id,
            }) => (
                None,
                Some(s3_key.as_str()),
                Some(*run_attempt),
                Some(*workflow_run_id),
            ),
            None => (None, None, None, None),
        };
        let mut r = s.serialize_struct("EndingReport", 8)?;
        r.serialize_field("dispatch_id", &self.dispatch_id)?;
        r.serialize_field("webhook_id", self.delivery.id)?;
        r.serialize_field("body_sha256", self.delivery.body_sha256)?;
        r.serialize_field("reason", &reason)?;
        r.serialize_field("key", &key)?;
        r.serialize_field("folder", &key.map(crate::retention::folder))?;
        r.serialize_field("attempt", &attempt)?;
        r.serialize_field("workflow_run", &workflow_run)?;
        r.end()
    }
}

/// A success whose answer lists what retention prunes, as
/// [`Store::after_success`] takes it: the verdict its report carried (JSON
/// text), the folder of its key, and the delivery to record, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Success<'a> {
    pub dispatch_id: DispatchId,
    pub verification: Option<&'a str>,
    pub folder: &'a str,
    pub webhook_id: Option<&'a str>,
    pub body_sha256: Option<&'a str>,
}

/// Writes text that is already JSON (a validated progress object) as is.
fn raw_json<S: serde::Serializer>(json: &str, s: S) -> Result<S::Ok, S::Error> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(json).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// What an earlier delivery under a `webhook-id` was.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Delivered {
    #[serde(rename = "id")]
    pub dispatch_id: DispatchId,
    /// None for deliveries recorded before the hash was.
    pub body_sha256: Option<String>,
}

/// Typed access to `backup_history` and its companions.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Whether `user` is a backup admin (`public.is_backup_admin`).
    async fn is_admin(&self, user: Uuid) -> Result<bool, DbError>;
    /// The run with this dispatch id.
    async fn get(&self, id: DispatchId) -> Result<Option<Run>, DbError>;
    /// The run in progress, if any.
    async fn running(&self) -> Result<Option<Run>, DbError>;
    /// The newest run recorded for a GitHub workflow run.
    async fn by_workflow_run(&self, workflow_run_id: u64) -> Result<Option<Run>, DbError>;
    /// Writes `next`, decided from `prev`, if the row's state (status,
    /// attempt, workflow run, outcome, started or not) is still `prev`'s;
    /// `None` if not. A `run_url` or `progress` written meanwhile is kept
    /// unless `next` changes it. Records `webhook_id` with it, and inserts
    /// the alerts `raise` decided (`raise_alerts.sql`), in the same
    /// statement.
    async fn update(
        &self,
        prev: &Run,
        next: &Run,
        delivery: Option<Delivery<'_>>,
        raise: &Raise,
    ) -> Result<Option<Run>, DbError>;
    /// A report's common case: merges `next`, what the report makes of a
    /// run in progress in `next.run_attempt` that has nothing yet, into the
    /// run `id`, if that run is in progress in that attempt, of
    /// `next.workflow_run_id` or of none yet, `webhook_id` is new, and the
    /// write changes something. The row keeps a start time and a progress
    /// that `next` does not bring; when `next` keeps the run in progress,
    /// it also keeps its outcome columns (`apply_progress.sql`). Inserts the
    /// alerts `raise` decided in the same statement. If it wrote nothing
    /// and `next` ends the run, what [`Store::read_for_report`] would read,
    /// in the same round trip; and if the run is `ended` (the state the
    /// report repeats, `run::ended_by`), the delivery is recorded too
    /// ([`Applied::Repeat`]).
    async fn apply_to_running(
        &self,
        id: DispatchId,
        next: &Run,
        delivery: Delivery<'_>,
        raise: &Raise,
        ended: Option<Ended>,
    ) -> Result<Applied, DbError>;
    /// Several progress reports to the run `id`, in arrival order, with
    /// distinct webhook-ids, each decided as [`Store::apply_to_running`]'s
    /// `next` (`first` is the first one's decision: its attempt, workflow
    /// run and start time are all of theirs), written in one statement as
    /// if one after another (`apply_progress_batch.sql`): for each,
    /// [`Applied::Written`], [`Applied::Recorded`] (a new delivery that
    /// changed nothing) or [`Applied::Missed`]. All miss if none changes
    /// the run or the row changed meanwhile; each is then decided on its
    /// own.
    async fn apply_progress(
        &self,
        id: DispatchId,
        first: &Run,
        reports: &[ProgressReport<'_>],
    ) -> Result<Vec<Applied>, DbError>;
    /// Several reports that would end their run, with distinct
    /// webhook-ids, read in one statement (`read_reports.sql`): for each,
    /// what [`Store::apply_to_running`] answers when its guarded write
    /// does not apply: [`Applied::Repeat`] if the run was already in the
    /// state the report [`Repeats`] (its delivery then recorded, and for a
    /// success, what retention prunes listed), else [`Applied::Read`].
    /// Nothing is written to a run.
    async fn read_reports(&self, reports: &[EndingReport<'_>]) -> Result<Vec<Applied>, DbError>;
    /// The run `id` (without one: the run an earlier delivery of
    /// `webhook_id` applied to), and the run that delivery applied to.
    async fn read_for_report(
        &self,
        id: Option<DispatchId>,
        webhook_id: &str,
    ) -> Result<Option<(Run, Option<Delivered>)>, DbError>;
    /// Inserts a new run unless a backup is in progress, and then returns
    /// that one; records `webhook_id` as the new run's delivery if given. A
    /// concurrent insert this one could not see is a
    /// [`DbError::UniqueViolation`] on [`ONE_IN_PROGRESS`].
    async fn start(&self, run: &Run, delivery: Option<Delivery<'_>>) -> Result<Started, DbError>;
    /// Records a delivery that changed nothing (so a retry is recognised).
    async fn record_delivery(&self, delivery: Delivery<'_>, id: DispatchId) -> Result<(), DbError>;
    /// Removes the record of this delivery (this body under this
    /// `webhook-id`), made before its report was refused.
    async fn forget_delivery(&self, delivery: Delivery<'_>) -> Result<(), DbError>;
    /// History, newest first, after `before`, each run with its position.
    async fn list(&self, limit: u32, before: Option<Cursor>)
        -> Result<Vec<(Run, Cursor)>, DbError>;
    /// The sweep's settings from `backup_settings`.
    async fn settings(&self) -> Result<Settings, DbError>;
    /// Records until when GitHub asked us not to call it.
    async fn set_github_backoff(&self, until_ms: i64) -> Result<(), DbError>;
    /// Records a sweep that `reconcile-backups` ran: when, and its
    /// [`Swept::outcome`](crate::endpoints::sweep::Swept::outcome).
    async fn record_sweep(&self, at_ms: i64, outcome: &str) -> Result<(), DbError>;
    /// The last recorded sweep, and why the scheduler could not call one.
    async fn sweeper(&self) -> Result<SweeperRecord, DbError>;
    /// After each success (distinct runs): records its delivery (a report
    /// that changed nothing) as [`Store::record_delivery`] would, stores
    /// the verification verdict its report carried (unless the run has
    /// one), and lists, as a JSON array, the keys retention deletes now in
    /// its folder (`retention.sql`). One list per success, in order.
    async fn after_success(&self, successes: &[Success<'_>]) -> Result<Vec<String>, DbError>;
    /// Marks the successes whose objects were deleted, of those retention
    /// lists for the success `id` (its key's `folder`): `keys`, a JSON
    /// array, is what its workflow reported deleted. Records the report's
    /// delivery.
    async fn mark_pruned(
        &self,
        id: DispatchId,
        folder: &str,
        keys: &str,
        delivery: Delivery<'_>,
    ) -> Result<(), DbError>;
    /// What the dead man's switch reads.
    async fn alert_clock(&self) -> Result<AlertClock, DbError>;
    /// Raises the silence that began at `since_ms` unless it was raised
    /// (`raise_silence.sql`); whether this call raised it.
    async fn raise_silence(&self, since_ms: i64, facts: &str, to: &str) -> Result<bool, DbError>;
    /// Queues a `test` alert to each destination in `to` (a JSON array).
    async fn raise_test(&self, to: &str) -> Result<(), DbError>;
    /// Claims up to `limit` due notifications at `now_ms`, leased for
    /// `lease_ms` (`claim_notifications.sql`).
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, DbError>;
    /// Records how the send of claim `attempts` of row `id` ended, if the
    /// row is still under that claim.
    async fn settle_notification(
        &self,
        id: i64,
        attempts: u32,
        settled: &Settled,
        now_ms: i64,
    ) -> Result<(), DbError>;
    /// The newest `limit` notifications.
    async fn notifications(&self, limit: u32) -> Result<Vec<Notification>, DbError>;
}

/// The 409 for a second backup, naming the one that runs (if it still does).
pub async fn in_progress_error(store: &impl Store) -> Error {
    match store.running().await {
        Ok(running) => Error::BackupInProgress {
            dispatch_id: running.map(|r| r.dispatch_id.to_string()),
        },
        Err(e) => e.into(),
    }
}

/// Whether [`Store::apply_to_running`] writes `next` with the lean
/// statement (`apply_progress.sql`): the decision keeps the run in progress
/// (a `progress`, a repeated `started`) and raises nothing.
pub fn keeps_running(next: &Run, raise: &Raise) -> bool {
    next.status == Status::InProgress && raise.kind.is_none()
}

/// What [`Store::apply_to_running`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The write landed, and recorded the delivery.
    Written,
    /// Nothing written; the run as the statement read it, and the run an
    /// earlier delivery of the `webhook-id` applied to (`None`: no such
    /// run).
    Read(Box<Option<(Run, Option<Delivered>)>>),
    /// Nothing written, nothing read: a decision that keeps the run going.
    Missed,
    /// Nothing to write: the report brings nothing new to the run, which is
    /// in progress as decided; its delivery was recorded (a decision that
    /// keeps the run going, alone or in [`Store::apply_progress`]).
    Recorded,
    /// Nothing written: the run, as read, had already ended as the report
    /// ends it (the `ended` state given), and the delivery was recorded;
    /// for a success's repeat read by [`Store::read_reports`], also what
    /// retention prunes now (as [`Store::after_success`] lists it).
    Repeat(Box<Run>, Option<String>),
}

/// What [`Store::start`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// The new run, inserted.
    Inserted(Run),
    /// Nothing inserted: this backup is in progress.
    Running(Run),
}

/// What the sweep reads from `backup_settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub deadlines: Deadlines,
    /// Unix ms before which GitHub must not be called (0: no backoff).
    pub github_backoff_until: i64,
}

/// What the dead man's switch reads (`backup_settings`,
/// `backup_alert_state`). Times are unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct AlertClock {
    /// `alert_after_hours`.
    pub after_hours: i64,
    /// The last success, or when alerting began if there was none.
    pub silent_since: i64,
    /// The start of the silence last raised.
    pub raised_for: Option<i64>,
}

/// What `backup_settings` says about the scheduled sweep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweeperRecord {
    /// Unix ms of the last sweep `reconcile-backups` ran; `None`: never.
    pub last_run_at: Option<i64>,
    /// Why the database's `backup_invoke_sweep()` could not call the
    /// function (pg_net or a Vault secret missing); `None` once it could.
    pub problem: Option<String>,
}

/// [`Store`] over SQL.
pub struct PgStore<'a, D: Db> {
    db: &'a D,
}

impl<'a, D: Db> PgStore<'a, D> {
    /// Wraps a database port.
    pub fn new(db: &'a D) -> Self {
        PgStore { db }
    }

    /// Runs a statement returning `select_run.sql`'s columns: each run
    /// with its position in the history.
    async fn runs(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<(Run, Cursor)>, DbError> {
        let rows: Vec<RunRow> = self.db.query(sql, params).await?;
        rows.into_iter()
            .map(|row| {
                let (Some(run), Some(us)) = (row.run, row.created_us.and_then(|c| c.parse().ok()))
                else {
                    return Err(DbError::Other("unreadable history row".into()));
                };
                let cursor = (us, run.id);
                Ok((run, cursor))
            })
            .collect()
    }

    async fn one(&self, sql: &str, params: &[Option<String>]) -> Result<Option<Run>, DbError> {
        Ok(self
            .runs(sql, params)
            .await?
            .into_iter()
            .next()
            .map(|(run, _)| run))
    }

    /// The one row of `backup_settings` a statement reads.
    async fn settings_row<T: DeserializeOwned>(&self, sql: &str) -> Result<T, DbError> {
        self.db
            .query(sql, &[])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DbError::Other("backup_settings has no row".into()))
    }
}

// The rows the statements below return, by column name.

/// `select_run.sql`: the run, and its exact position in the history
/// (microseconds, as text: a JS number would lose precision). A fast
/// statement that wrote answers one row without them (null).
#[derive(Deserialize)]
struct RunRow {
    run: Option<Run>,
    created_us: Option<String>,
    /// `read_for_report.sql` only: an earlier delivery's run, and its body
    /// hash.
    #[serde(default)]
    delivered: Option<DispatchId>,
    #[serde(default)]
    delivered_sha256: Option<String>,
    /// `record_repeat.sql`: the read's delivery was recorded as a repeat.
    #[serde(default)]
    recorded: bool,
    /// `read_reports.sql`: which report (from 1) the row answers, and a
    /// success's listing (retention_list.sql).
    #[serde(default)]
    ord: Option<usize>,
    #[serde(default)]
    prune: Option<String>,
}

#[derive(Deserialize)]
struct AdminRow {
    ok: bool,
}

/// Seconds as stored; times as unix ms (float8: exact below 2^53).
#[derive(Deserialize)]
struct SettingsRow {
    start: i64,
    max: i64,
    grace: i64,
    backoff_ms: Option<i64>,
}

/// A time and a text: the sweeper's record, and (time null) the one text
/// column of retention.sql. One row shape, because each shape costs the
/// WebAssembly module a deserializer.
#[derive(Deserialize)]
struct SweeperRow {
    last_run_ms: Option<i64>,
    problem: Option<String>,
    /// retention.sql: which success (from 1) the row answers.
    #[serde(default)]
    ord: Option<usize>,
}

/// read_for_report.sql's row: the run, and the earlier delivery if any.
fn found_for_report(r: RunRow) -> Option<(Run, Option<Delivered>)> {
    let seen = r.delivered.map(|dispatch_id| Delivered {
        dispatch_id,
        body_sha256: r.delivered_sha256,
    });
    r.run.map(|run| (run, seen))
}

fn text<T: ToString>(v: T) -> Option<String> {
    Some(v.to_string())
}

fn opt<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

/// A list as the JSON text parameter a batch statement reads with
/// `jsonb_to_recordset` (`what` names it in the error).
fn json_list<T: Serialize>(what: &str, items: &[T]) -> Result<Option<String>, DbError> {
    serde_json::to_string(items)
        .map(Some)
        .map_err(|e| DbError::Other(format!("{what}: {e}")))
}

/// The rows of a batch statement placed by their `ord` (the item's place in
/// the list sent, from 1): one slot per item, `None` where no row answered.
fn by_ord<R>(rows: Vec<R>, n: usize, ord: impl Fn(&R) -> Option<usize>) -> Vec<Option<R>> {
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
    for row in rows {
        if let Some(slot) = ord(&row)
            .and_then(|o| o.checked_sub(1))
            .and_then(|i| slots.get_mut(i))
        {
            *slot = Some(row);
        }
    }
    slots
}

/// `$1..$13` of `insert_run.sql` and `update_run.sql`: the columns a
/// transition may change, in the order those files expect.
fn mutable_params(run: &Run) -> Vec<Option<String>> {
    vec![
        text(run.status.as_str()),
        run.failure_reason.map(|r| r.as_str().to_string()),
        run.outcome_source.map(|s| s.as_str().to_string()),
        opt(&run.workflow_run_id),
        text(run.run_attempt),
        run.run_url.clone(),
        opt(&run.started_at),
        opt(&run.finished_at),
        run.s3_key.clone(),
        opt(&run.size_bytes),
        run.sha256.clone(),
        run.error_text.clone(),
        run.progress.clone(),
    ]
}

/// A SQL fragment appended to a statement, with its named parameters
/// (`$kind`, ...) numbered: each `(name, n)` becomes `$n`.
fn numbered(sql: &str, names: &[(&str, usize)]) -> String {
    names.iter().fold(sql.to_string(), |sql, (name, n)| {
        sql.replace(name, &format!("${n}"))
    })
}

/// raise_alerts.sql with its parameters numbered after `params`, which
/// they are appended to; empty when `raise` raises nothing, so that the
/// common write (a progress report) stays the statement it was.
fn with_raise(params: &mut Vec<Option<String>>, raise: &Raise, next: &Run) -> String {
    if raise.kind.is_none() {
        return String::new();
    }
    let first = params.len() + 1;
    params.extend(raise.params(next));
    numbered(
        RAISE,
        &[("$kind", first), ("$facts", first + 1), ("$to", first + 2)],
    )
}

/// A notification as `notification_columns.sql` builds it.
#[derive(Deserialize)]
struct NoteRow {
    note: Notification,
}

#[derive(Deserialize)]
struct RaisedRow {
    #[allow(dead_code)] // its presence is the answer
    raised: bool,
}

// The files in src/sql/, without their comments (build.rs).
const INSERT: &str = include_str!(concat!(env!("OUT_DIR"), "/insert_run.sql"));
const UPDATE: &str = include_str!(concat!(env!("OUT_DIR"), "/update_run.sql"));
const APPLY: &str = include_str!(concat!(env!("OUT_DIR"), "/apply_report.sql"));
const APPLY_PROGRESS: &str = include_str!(concat!(env!("OUT_DIR"), "/apply_progress.sql"));
const APPLY_PROGRESS_BATCH: &str =
    include_str!(concat!(env!("OUT_DIR"), "/apply_progress_batch.sql"));
const RECORD_REPEAT: &str = include_str!(concat!(env!("OUT_DIR"), "/record_repeat.sql"));
const READ_REPORTS: &str = include_str!(concat!(env!("OUT_DIR"), "/read_reports.sql"));
const READ_FOR_REPORT: &str = include_str!(concat!(env!("OUT_DIR"), "/read_for_report.sql"));
const SELECT: &str = include_str!(concat!(env!("OUT_DIR"), "/select_run.sql"));
/// select_run.sql's select list, for the rows a write returns (CTE `h`).
const RUN_COLUMNS: &str = include_str!(concat!(env!("OUT_DIR"), "/run_columns.sql"));
const RAISE: &str = include_str!(concat!(env!("OUT_DIR"), "/raise_alerts.sql"));
const RAISE_SILENCE: &str = include_str!(concat!(env!("OUT_DIR"), "/raise_silence.sql"));
const CLAIM: &str = include_str!(concat!(env!("OUT_DIR"), "/claim_notifications.sql"));
const SETTLE: &str = include_str!(concat!(env!("OUT_DIR"), "/settle_notification.sql"));
const NOTE_COLUMNS: &str = include_str!(concat!(env!("OUT_DIR"), "/notification_columns.sql"));
const RETENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/retention.sql"));
const MARK_PRUNED: &str = include_str!(concat!(env!("OUT_DIR"), "/mark_pruned.sql"));

impl<D: Db> Store for PgStore<'_, D> {
    async fn is_admin(&self, user: Uuid) -> Result<bool, DbError> {
        let rows: Vec<AdminRow> = self
            .db
            .query(
                "select public.is_backup_admin($1::uuid) as ok",
                &[text(user)],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.ok))
    }

    async fn get(&self, id: DispatchId) -> Result<Option<Run>, DbError> {
        self.one(
            &format!("{SELECT} where h.dispatch_id = $1::uuid"),
            &[text(id)],
        )
        .await
    }

    async fn running(&self) -> Result<Option<Run>, DbError> {
        self.one(&format!("{SELECT} where h.status = 'in_progress'"), &[])
            .await
    }

    async fn by_workflow_run(&self, workflow_run_id: u64) -> Result<Option<Run>, DbError> {
        self.one(
            &format!(
                "{SELECT} where h.workflow_run_id = $1::int8 order by h.created_at desc limit 1"
            ),
            &[text(workflow_run_id)],
        )
        .await
    }

    async fn update(
        &self,
        prev: &Run,
        next: &Run,
        delivery: Option<Delivery<'_>>,
        raise: &Raise,
    ) -> Result<Option<Run>, DbError> {
        let mut params = mutable_params(next);
        params.extend([
            delivery.map(|d| d.id.to_string()),
            text(prev.id),
            text(prev.status.as_str()),
            text(prev.run_attempt),
            opt(&prev.workflow_run_id),
            prev.failure_reason.map(|r| r.as_str().to_string()),
            prev.outcome_source.map(|s| s.as_str().to_string()),
            text(prev.started_at.is_some()),
            text(next.run_url != prev.run_url),
            text(next.progress != prev.progress),
            delivery.map(|d| d.body_sha256.to_string()),
        ]);
        let alerts = with_raise(&mut params, raise, next);
        self.one(&format!("{UPDATE}{alerts}{RUN_COLUMNS} from h"), &params)
            .await
    }

    async fn apply_to_running(
        &self,
        id: DispatchId,
        next: &Run,
        delivery: Delivery<'_>,
        raise: &Raise,
        ended: Option<Ended>,
    ) -> Result<Applied, DbError> {
        let mut params = vec![text(id), text(delivery.id)];
        // A decision that keeps the run going (the hottest: progress) and
        // raises nothing needs only its own three columns written. It
        // seldom misses, so the read is not folded in: the core reads when
        // it missed.
        if keeps_running(next, raise) {
            params.extend([
                text(next.run_attempt),
                opt(&next.workflow_run_id),
                opt(&next.started_at),
                next.progress.clone(),
                text(delivery.body_sha256),
            ]);
            #[derive(Deserialize)]
            struct ProgressRow {
                applied: bool,
                recorded: bool,
            }
            let rows: Vec<ProgressRow> = self.db.query(APPLY_PROGRESS, &params).await?;
            return Ok(match rows.first() {
                Some(ProgressRow { applied: true, .. }) => Applied::Written,
                Some(ProgressRow { recorded: true, .. }) => Applied::Recorded,
                _ => Applied::Missed,
            });
        }
        params.extend(mutable_params(next));
        params.push(text(delivery.body_sha256));
        let body = params.len();
        let alerts = with_raise(&mut params, raise, next);
        let (repeat, recorded) = match ended {
            Some(e) => {
                let first = params.len() + 1;
                params.extend([
                    text(e.failure_reason.as_str()),
                    text(e.run_attempt),
                    text(e.workflow_run_id),
                ]);
                let cte = numbered(
                    RECORD_REPEAT,
                    &[
                        ("$body", body),
                        ("$reason", first),
                        ("$attempt", first + 1),
                        ("$workflow_run", first + 2),
                    ],
                );
                (cte, "exists (select from repeat)")
            }
            None => (String::new(), "false"),
        };
        // One row without a run if the write landed, else the read.
        let sql = format!(
            "{APPLY}{alerts}{repeat}select null::jsonb as run, null::text as created_us, \
             false as recorded, null::text as delivered, null::text as delivered_sha256 \
             from applied union all {RUN_COLUMNS}, {recorded} as recorded\n{READ_FOR_REPORT} \
             and not exists (select from applied)"
        );
        let rows: Vec<RunRow> = self.db.query(&sql, &params).await?;
        let mut rows = rows.into_iter();
        Ok(match rows.next() {
            Some(RunRow { run: None, .. }) => Applied::Written,
            Some(RunRow {
                run: Some(run),
                recorded: true,
                ..
            }) => Applied::Repeat(Box::new(run), None),
            row => Applied::Read(Box::new(row.and_then(found_for_report))),
        })
    }

    async fn apply_progress(
        &self,
        id: DispatchId,
        first: &Run,
        reports: &[ProgressReport<'_>],
    ) -> Result<Vec<Applied>, DbError> {
        #[derive(Deserialize)]
        struct AppliedRow {
            webhook_id: String,
            changes: bool,
        }
        let params = [
            text(id),
            text(first.run_attempt),
            opt(&first.workflow_run_id),
            opt(&first.started_at),
            json_list("progress reports", reports)?,
        ];
        let rows: Vec<AppliedRow> = self.db.query(APPLY_PROGRESS_BATCH, &params).await?;
        Ok(reports
            .iter()
            .map(
                |r| match rows.iter().find(|a| a.webhook_id == r.webhook_id) {
                    Some(AppliedRow { changes: true, .. }) => Applied::Written,
                    Some(_) => Applied::Recorded,
                    None => Applied::Missed,
                },
            )
            .collect())
    }

    async fn read_reports(&self, reports: &[EndingReport<'_>]) -> Result<Vec<Applied>, DbError> {
        let params = [
            json_list("ending reports", reports)?,
            text(crate::retention::MAX_KEYS),
        ];
        let rows: Vec<RunRow> = self.db.query(READ_REPORTS, &params).await?;
        Ok(by_ord(rows, reports.len(), |r| r.ord)
            .into_iter()
            .map(|row| match row {
                Some(RunRow {
                    run: Some(run),
                    recorded: true,
                    prune,
                    ..
                }) => Applied::Repeat(Box::new(run), prune),
                row => Applied::Read(Box::new(row.and_then(found_for_report))),
            })
            .collect())
    }

    async fn read_for_report(
        &self,
        id: Option<DispatchId>,
        webhook_id: &str,
    ) -> Result<Option<(Run, Option<Delivered>)>, DbError> {
        let rows: Vec<RunRow> = self
            .db
            .query(
                &format!("{RUN_COLUMNS}{READ_FOR_REPORT}"),
                &[opt(&id), text(webhook_id)],
            )
            .await?;
        Ok(rows.into_iter().next().and_then(found_for_report))
    }

    async fn start(&self, run: &Run, delivery: Option<Delivery<'_>>) -> Result<Started, DbError> {
        let mut params = mutable_params(run);
        params.extend([
            delivery.map(|d| d.id.to_string()),
            text(run.dispatch_id),
            text(run.trigger_source.as_str()),
            opt(&run.triggered_by),
            run.reason.clone(),
            text(run.created_at),
            delivery.map(|d| d.body_sha256.to_string()),
        ]);
        let found = self
            .one(
                &format!("{INSERT}{RUN_COLUMNS} from h union all {RUN_COLUMNS} from running h"),
                &params,
            )
            .await?
            .ok_or_else(|| DbError::Other("start returned no row".into()))?;
        Ok(if found.dispatch_id == run.dispatch_id {
            Started::Inserted(found)
        } else {
            Started::Running(found)
        })
    }

    async fn forget_delivery(&self, delivery: Delivery<'_>) -> Result<(), DbError> {
        self.db
            .execute(
                "delete from public.backup_report_deliveries \
                 where webhook_id = $1::text and body_sha256 = decode($2::text, 'hex')",
                &[text(delivery.id), text(delivery.body_sha256)],
            )
            .await
    }

    async fn record_delivery(&self, delivery: Delivery<'_>, id: DispatchId) -> Result<(), DbError> {
        self.db
            .execute(
                "insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256) values ($1::text, $2::uuid, decode($3::text, 'hex')) on conflict do nothing",
                &[text(delivery.id), text(id), text(delivery.body_sha256)],
            )
            .await?;
        Ok(())
    }

    async fn settings(&self) -> Result<Settings, DbError> {
        let row: SettingsRow = self
            .settings_row(
                "select start_deadline_seconds as start, max_runtime_seconds as max, \
                 report_grace_seconds as grace, \
                 floor(extract(epoch from github_backoff_until) * 1000)::float8 as backoff_ms \
                 from public.backup_settings where id",
            )
            .await?;
        Ok(Settings {
            deadlines: Deadlines {
                start_ms: row.start * 1000,
                max_runtime_ms: row.max * 1000,
                grace_ms: row.grace * 1000,
            },
            github_backoff_until: row.backoff_ms.unwrap_or(0),
        })
    }

    async fn set_github_backoff(&self, until_ms: i64) -> Result<(), DbError> {
        self.db
            .execute(
                "update public.backup_settings set github_backoff_until = to_timestamp($1::float8 / 1000) where id",
                &[text(until_ms)],
            )
            .await?;
        Ok(())
    }

    async fn record_sweep(&self, at_ms: i64, outcome: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "update public.backup_settings set last_sweep_at = to_timestamp($1::float8 / 1000), \
                 last_sweep_outcome = $2::text where id",
                &[text(at_ms), text(outcome)],
            )
            .await?;
        Ok(())
    }

    async fn sweeper(&self) -> Result<SweeperRecord, DbError> {
        let row: SweeperRow = self
            .settings_row(
                "select floor(extract(epoch from last_sweep_at) * 1000)::float8 as last_run_ms, \
                 sweep_problem as problem from public.backup_settings where id",
            )
            .await?;
        Ok(SweeperRecord {
            last_run_at: row.last_run_ms,
            problem: row.problem,
        })
    }

    async fn after_success(&self, successes: &[Success<'_>]) -> Result<Vec<String>, DbError> {
        let params = [
            json_list("successes", successes)?,
            text(crate::retention::MAX_KEYS),
        ];
        let rows: Vec<SweeperRow> = self.db.query(RETENTION, &params).await?;
        by_ord(rows, successes.len(), |r| r.ord)
            .into_iter()
            .map(|row| {
                row.and_then(|r| r.problem)
                    .ok_or_else(|| DbError::Other("retention.sql answered for no run".into()))
            })
            .collect()
    }

    async fn mark_pruned(
        &self,
        id: DispatchId,
        folder: &str,
        keys: &str,
        delivery: Delivery<'_>,
    ) -> Result<(), DbError> {
        let params = [
            text(id),
            text(crate::retention::MAX_KEYS),
            text(folder),
            text(keys),
            text(delivery.id),
            text(delivery.body_sha256),
        ];
        self.db.execute(MARK_PRUNED, &params).await
    }

    async fn alert_clock(&self) -> Result<AlertClock, DbError> {
        self.settings_row(
            "select st.alert_after_hours as after_hours, \
             floor(extract(epoch from coalesce(st.last_success_at, a.since)) * 1000)::float8 as silent_since, \
             floor(extract(epoch from a.silence_from) * 1000)::float8 as raised_for \
             from public.backup_settings st, public.backup_alert_state a where st.id and a.id",
        )
        .await
    }

    async fn raise_silence(&self, since_ms: i64, facts: &str, to: &str) -> Result<bool, DbError> {
        let rows: Vec<RaisedRow> = self
            .db
            .query(RAISE_SILENCE, &[text(since_ms), text(facts), text(to)])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn raise_test(&self, to: &str) -> Result<(), DbError> {
        self.db
            .execute(
                "insert into public.backup_notifications (event, destination, payload) \
                 select 'test', d.label, jsonb_build_object('event', 'test') \
                 from jsonb_array_elements_text($1::text::jsonb) d(label)",
                &[text(to)],
            )
            .await
    }

    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, DbError> {
        let rows: Vec<NoteRow> = self
            .db
            .query(
                &format!("{CLAIM}{NOTE_COLUMNS} from claimed n order by n.id"),
                &[text(now_ms), text(lease_ms), text(limit)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.note).collect())
    }

    async fn settle_notification(
        &self,
        id: i64,
        attempts: u32,
        settled: &Settled,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let (status, at, error) = settled.columns();
        self.db
            .execute(
                SETTLE,
                &[
                    text(id),
                    text(attempts),
                    text(status),
                    at.map(|a| a.to_string()),
                    error.map(str::to_string),
                    text(now_ms),
                ],
            )
            .await
    }

    async fn notifications(&self, limit: u32) -> Result<Vec<Notification>, DbError> {
        let rows: Vec<NoteRow> = self
            .db
            .query(
                &format!(
                    "{NOTE_COLUMNS} from public.backup_notifications n \
                     order by n.created_at desc, n.id desc limit $1::int4"
                ),
                &[text(limit)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.note).collect())
    }

    async fn list(
        &self,
        limit: u32,
        before: Option<Cursor>,
    ) -> Result<Vec<(Run, Cursor)>, DbError> {
        // Two statements, not one with `$2 is null or ...`: in the generic
        // plan PostgreSQL keeps for a prepared statement after five runs,
        // that `or` cannot be an index condition, and a page deep in the
        // history read every newer row to find its first one (90,001 rows
        // for a page 90,000 runs back). Each form seeks its page in the
        // index (created_at desc, id desc) in either plan.
        let (after, params) = match before {
            None => ("", vec![text(limit)]),
            Some((us, id)) => (
                "where (h.created_at, h.id) < \
                   (timestamptz 'epoch' + $2::int8 * interval '1 microsecond', $3::int8)",
                vec![text(limit), text(us), text(id)],
            ),
        };
        let sql = format!("{SELECT} {after} order by h.created_at desc, h.id desc limit $1::int4");
        self.runs(&sql, &params).await
    }
}
