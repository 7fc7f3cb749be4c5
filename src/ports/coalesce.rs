//! Statements that arrive together at an instance are sent together.
//!
//! Under load, many reports reach one instance at once, and each would
//! otherwise be a statement of its own: its own round trip, transaction and
//! commit, and, for reports to one run, its own turn on that row's lock.
//! Instead, an instance keeps one statement of each kind in flight per
//! *lane*: reports that arrive meanwhile wait, and when the statement in
//! flight returns, the first of them sends all that are waiting in one
//! statement. Under load a statement carries many reports; alone, a report
//! is sent at once by its one-report statement and waits for nothing. Three
//! kinds are gathered:
//!
//! - [`progress`]: `progress` reports to one run (a lane per run, attempt
//!   and workflow run), written as if one after another
//!   (`apply_progress_batch.sql`), since each is a write of the same row.
//! - [`ending`]: reports that would end their run (`succeeded`, `failed`,
//!   `cancelled`), one lane for all runs. Alone, one is applied by the
//!   guarded statement of its common case. Together, they are read
//!   (`read_reports.sql`), with a repeat to the run it ended recorded on
//!   the way (and, for a success, the retention listing its answer
//!   carries), and each is decided in full from its row, as any report the
//!   guarded statement missed is: under load these are mostly repeats (a
//!   workflow's retries, a re-sent verdict), and the first report to a run
//!   in progress pays one more round trip.
//! - [`after_success`]: the other retention listings a `succeeded`
//!   report's answer carries (`retention.sql`; a first success, one with a
//!   verification verdict), one lane for all runs. Its reports are woken
//!   together by the statement before, so the first lets the others join
//!   it before it sends (`Kind::GATHERS`).
//!
//! Nothing here decides what a report does to a run: the callers pass what
//! `run::apply_report` decided and get back what the store answered. A
//! report that the statement did not answer for (its lane's writer gave up)
//! gets `None` and is handled on its own. Nothing can wait forever: a lane's
//! writer always hands its lane on, also when its future is dropped.

use crate::alerts::Raise;
use crate::dispatch_id::DispatchId;
use crate::ports::store::{
    keeps_running, Applied, Delivery, EndingReport, ProgressReport, Store, Success,
};
use crate::ports::DbError;
use crate::run::{Repeats, Run, Status};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::thread::LocalKey;

/// The most reports one statement carries. The rest wait for the next.
pub const MAX_BATCH: usize = 64;

/// One kind of statement that reports may share.
trait Kind: Sized + 'static {
    /// Which reports may share a statement.
    type Lane: PartialEq + Copy;
    /// One report, as the statement needs it.
    type Item;
    /// What the statement answers for one report.
    type Out: Clone;
    /// This kind's lanes.
    fn lanes() -> &'static LocalKey<RefCell<Vec<LaneState<Self>>>>;
    /// Whether a report that finds its lane free lets the reports already
    /// woken run first, so that those that are about to join it do.
    const GATHERS: bool = false;
    /// Whether `b` may join a statement that carries `a`.
    fn shares(a: &Self::Item, b: &Self::Item) -> bool;
    /// Sends the reports of one statement; an answer for each, in order.
    async fn send<S: Store>(
        store: &S,
        lane: Self::Lane,
        items: &[&Self::Item],
    ) -> Result<Vec<Self::Out>, DbError>;
}

/// One report waiting in a lane.
struct Waiting<K: Kind> {
    item: K::Item,
    slot: RefCell<Slot<K::Out>>,
}

enum Slot<O> {
    Waiting(Option<Waker>),
    /// This report's turn to send its lane's waiting reports.
    Write,
    /// Answered; `None`: not by the statement, so on its own.
    Done(Option<Result<O, DbError>>),
}

/// A lane with a statement in flight (or about to be, by the report at the
/// front of `waiting`, which was handed the lane), and the reports waiting.
/// Lanes without either are removed, so there are about as many as runs
/// being reported on at once: one, usually. Plain vectors, as the lists are
/// short (and the module smaller without a hash map).
struct LaneState<K: Kind> {
    lane: K::Lane,
    waiting: Vec<Rc<Waiting<K>>>,
}

fn position<K: Kind>(lanes: &[LaneState<K>], lane: K::Lane) -> Option<usize> {
    lanes.iter().position(|s| s.lane == lane)
}

/// Sends `item` through its lane: at once if the lane is free, else with
/// the reports that wait with it once the statement in flight returns.
async fn through<K: Kind, S: Store>(
    store: &S,
    lane: K::Lane,
    item: K::Item,
) -> Option<Result<K::Out, DbError>> {
    let me = Rc::new(Waiting::<K> {
        item,
        slot: RefCell::new(Slot::Waiting(None)),
    });
    let leads = K::lanes().with_borrow_mut(|lanes| match position(lanes, lane) {
        Some(i) => {
            lanes[i].waiting.push(Rc::clone(&me));
            false
        }
        None => {
            lanes.push(LaneState {
                lane,
                waiting: vec![Rc::clone(&me)],
            });
            true
        }
    });
    if !leads {
        let turn = Turn {
            lane,
            me: &me,
            finished: false,
        };
        if let Some(done) = turn.await {
            return done;
        }
        // Handed the lane: send what waits.
    } else if K::GATHERS {
        // The lane is this report's, as if handed to it: dropped while it
        // lets the others run, it hands the lane on as a waiting report
        // would (`Turn`'s drop).
        *me.slot.borrow_mut() = Slot::Write;
        let mut turn = Turn {
            lane,
            me: &me,
            finished: false,
        };
        YieldOnce(false).await;
        turn.finished = true;
    }
    let batch = take_batch::<K>(lane);
    let _hand_on = HandOn {
        lane,
        batch: &batch,
    };
    let items: Vec<&K::Item> = batch.iter().map(|w| &w.item).collect();
    let result = K::send(store, lane, &items).await;
    for (i, w) in batch.iter().enumerate() {
        let r = match &result {
            Ok(out) => out.get(i).cloned().map(Ok),
            Err(e) => Some(Err(e.clone())),
        };
        settle(w, Slot::Done(r));
    }
    let mine = me.slot.replace(Slot::Waiting(None));
    match mine {
        Slot::Done(r) => r,
        _ => None,
    }
}

/// Up to [`MAX_BATCH`] waiting reports of `lane`, from the front, each of
/// which [`Kind::shares`] a statement with those taken before it (a
/// webhook-id seen twice waits for the next statement, so that it is told
/// apart from the first as a retry).
fn take_batch<K: Kind>(lane: K::Lane) -> Vec<Rc<Waiting<K>>> {
    K::lanes().with_borrow_mut(|lanes| {
        let Some(i) = position(lanes, lane) else {
            return Vec::new();
        };
        let mut batch: Vec<Rc<Waiting<K>>> = Vec::new();
        lanes[i].waiting.retain(|w| {
            let take = batch.len() < MAX_BATCH && batch.iter().all(|b| K::shares(&b.item, &w.item));
            if take {
                batch.push(Rc::clone(w));
            }
            !take
        });
        batch
    })
}

fn settle<K: Kind>(w: &Waiting<K>, to: Slot<K::Out>) {
    let before = w.slot.replace(to);
    if let Slot::Waiting(Some(waker)) = before {
        waker.wake();
    }
}

/// Hands the lane to the first report still waiting, or frees it; and, if
/// the statement was abandoned (its future dropped), answers its reports
/// with `None`, so that each is handled on its own.
struct HandOn<'a, K: Kind> {
    lane: K::Lane,
    batch: &'a [Rc<Waiting<K>>],
}

impl<K: Kind> Drop for HandOn<'_, K> {
    fn drop(&mut self) {
        for w in self.batch {
            if !matches!(*w.slot.borrow(), Slot::Done(_)) {
                settle(w, Slot::Done(None));
            }
        }
        let next = K::lanes().with_borrow_mut(|lanes| {
            let i = position(lanes, self.lane)?;
            match lanes[i].waiting.first() {
                Some(w) => Some(Rc::clone(w)),
                None => {
                    lanes.swap_remove(i);
                    None
                }
            }
        });
        if let Some(w) = next {
            settle(&w, Slot::Write);
        }
    }
}

/// Pending once, waking itself: the tasks already woken run first.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Resolves when the waiting report's statement has answered (`Some`), or
/// when the lane is handed to it (`None`).
struct Turn<'a, K: Kind> {
    lane: K::Lane,
    me: &'a Rc<Waiting<K>>,
    finished: bool,
}

// Nothing in a `Turn` relies on staying in place.
impl<K: Kind> Unpin for Turn<'_, K> {}

impl<K: Kind> Future for Turn<'_, K> {
    type Output = Option<Option<Result<K::Out, DbError>>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let taken = self.me.slot.replace(Slot::Waiting(None));
        let out = match taken {
            Slot::Waiting(_) => {
                *self.me.slot.borrow_mut() = Slot::Waiting(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            Slot::Write => None,
            Slot::Done(r) => Some(r),
        };
        self.finished = true;
        Poll::Ready(out)
    }
}

impl<K: Kind> Drop for Turn<'_, K> {
    /// A report that stops waiting (its request dropped) leaves its lane,
    /// and hands the lane on if it had just been handed it.
    fn drop(&mut self) {
        if self.finished || matches!(*self.me.slot.borrow(), Slot::Done(_)) {
            return;
        }
        let me = Rc::clone(self.me);
        K::lanes().with_borrow_mut(|lanes| {
            if let Some(i) = position(lanes, self.lane) {
                lanes[i].waiting.retain(|w| !Rc::ptr_eq(w, &me));
            }
        });
        if matches!(*self.me.slot.borrow(), Slot::Write) {
            drop(HandOn::<K> {
                lane: self.lane,
                batch: &[],
            });
        }
    }
}

/// A report as a lane keeps it: its delivery (owned, as it outlives the
/// borrow it came in) and what it needs written.
struct Owned<T> {
    webhook_id: String,
    body_sha256: String,
    what: T,
}

impl<T> Owned<T> {
    fn new(delivery: Delivery<'_>, what: T) -> Self {
        Owned {
            webhook_id: delivery.id.to_owned(),
            body_sha256: delivery.body_sha256.to_owned(),
            what,
        }
    }
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            id: &self.webhook_id,
            body_sha256: &self.body_sha256,
        }
    }
}

/// Distinct webhook-ids share a statement.
fn distinct<T>(a: &Owned<T>, b: &Owned<T>) -> bool {
    a.webhook_id != b.webhook_id
}

// ---- progress reports to one run ----

/// Progress reports that may share a statement: one run, one attempt, one
/// workflow run (the statement's guard is the same for all of them).
struct Progress;

thread_local! {
    static PROGRESS: RefCell<Vec<LaneState<Progress>>> = const { RefCell::new(Vec::new()) };
}

impl Kind for Progress {
    type Lane = (DispatchId, u32, Option<u64>);
    type Item = Owned<Run>;
    type Out = Applied;
    fn lanes() -> &'static LocalKey<RefCell<Vec<LaneState<Self>>>> {
        &PROGRESS
    }
    fn shares(a: &Self::Item, b: &Self::Item) -> bool {
        distinct(a, b)
    }
    async fn send<S: Store>(
        store: &S,
        lane: Self::Lane,
        items: &[&Self::Item],
    ) -> Result<Vec<Applied>, DbError> {
        let first = match items {
            [] => return Ok(Vec::new()),
            [only] => {
                let applied = store
                    .apply_to_running(lane.0, &only.what, only.delivery(), &Raise::none(), None)
                    .await?;
                return Ok(vec![applied]);
            }
            [first, ..] => &first.what,
        };
        let reports: Vec<ProgressReport<'_>> = items
            .iter()
            .map(|w| ProgressReport {
                webhook_id: &w.webhook_id,
                progress: w.what.progress.as_deref().unwrap_or_default(),
                body_sha256: &w.body_sha256,
            })
            .collect();
        store.apply_progress(lane.0, first, &reports).await
    }
}

/// Whether `next`, a decision for a run in progress, may be written through
/// a progress lane: it keeps the run in progress, raises nothing, and
/// brings a progress (a repeated `started` brings none and is written
/// alone).
pub fn applies(next: &Run, raise: &Raise) -> bool {
    keeps_running(next, raise) && next.progress.is_some()
}

/// Writes `next` (see [`applies`]: it raises nothing) for the run `id`
/// through its lane: [`Applied::Written`], [`Applied::Recorded`] (new, but
/// nothing new for the run), or what [`Store::apply_to_running`] answers
/// when written alone; [`Applied::Missed`] if the statement did not answer
/// for it (then the caller decides from the row).
///
/// # Errors
/// The database's error, for every report of the statement that failed.
pub async fn progress<S: Store>(
    store: &S,
    id: DispatchId,
    next: &Run,
    delivery: Delivery<'_>,
) -> Result<Applied, DbError> {
    let lane = (id, next.run_attempt, next.workflow_run_id);
    through::<Progress, S>(store, lane, Owned::new(delivery, next.clone()))
        .await
        .unwrap_or(Ok(Applied::Missed))
}

// ---- reports that end their run ----

/// A report that would end its run: the run, the decision for it in
/// progress, the alerts that decision raises, and the state in which the
/// report is a repeat.
struct Ending {
    id: DispatchId,
    next: Run,
    raise: Raise,
    repeats: Option<Repeats>,
}

struct Endings;

thread_local! {
    static ENDINGS: RefCell<Vec<LaneState<Endings>>> = const { RefCell::new(Vec::new()) };
}

impl Kind for Endings {
    type Lane = ();
    type Item = Owned<Ending>;
    type Out = Applied;
    fn lanes() -> &'static LocalKey<RefCell<Vec<LaneState<Self>>>> {
        &ENDINGS
    }
    fn shares(a: &Self::Item, b: &Self::Item) -> bool {
        distinct(a, b)
    }
    async fn send<S: Store>(
        store: &S,
        (): (),
        items: &[&Self::Item],
    ) -> Result<Vec<Applied>, DbError> {
        if let [only] = items {
            let e = &only.what;
            let ended = e.repeats.as_ref().and_then(Repeats::ended);
            let applied = store
                .apply_to_running(e.id, &e.next, only.delivery(), &e.raise, ended)
                .await?;
            return Ok(vec![applied]);
        }
        let reports: Vec<EndingReport<'_>> = items
            .iter()
            .map(|w| EndingReport {
                dispatch_id: w.what.id,
                delivery: w.delivery(),
                repeats: w.what.repeats.as_ref(),
            })
            .collect();
        store.read_reports(&reports).await
    }
}

/// Whether `next`, a decision for a run in progress, ends it: such reports
/// go through [`ending`].
pub fn ends(next: &Run) -> bool {
    next.status != Status::InProgress
}

/// Applies `next`, what a report makes of the run `id` in progress (see
/// [`ends`]), with the alerts it raises: alone, as
/// [`Store::apply_to_running`] applies it (with the failure it `repeats`,
/// if any); together with others, read as [`Store::read_reports`] reads it
/// ([`Applied::Repeat`] when the run is in the state it `repeats`, else
/// [`Applied::Read`]). [`Applied::Missed`] if the statement did not answer
/// for it.
///
/// # Errors
/// The database's error, for every report of the statement that failed.
pub async fn ending<S: Store>(
    store: &S,
    id: DispatchId,
    next: &Run,
    delivery: Delivery<'_>,
    raise: Raise,
    repeats: Option<Repeats>,
) -> Result<Applied, DbError> {
    let item = Ending {
        id,
        next: next.clone(),
        raise,
        repeats,
    };
    through::<Endings, S>(store, (), Owned::new(delivery, item))
        .await
        .unwrap_or(Ok(Applied::Missed))
}

// ---- the retention listing of a success ----

/// What [`Store::after_success`] needs of one success, owned.
struct AfterSuccess {
    id: DispatchId,
    verdict: Option<String>,
    folder: String,
    delivery: Option<(String, String)>,
}

impl AfterSuccess {
    fn new(
        id: DispatchId,
        verdict: Option<&str>,
        folder: &str,
        delivery: Option<Delivery<'_>>,
    ) -> Self {
        AfterSuccess {
            id,
            verdict: verdict.map(str::to_owned),
            folder: folder.to_owned(),
            delivery: delivery.map(|d| (d.id.to_owned(), d.body_sha256.to_owned())),
        }
    }

    fn success(&self) -> Success<'_> {
        Success {
            dispatch_id: self.id,
            verification: self.verdict.as_deref(),
            folder: &self.folder,
            webhook_id: self.delivery.as_ref().map(|d| d.0.as_str()),
            body_sha256: self.delivery.as_ref().map(|d| d.1.as_str()),
        }
    }
}

struct Successes;

thread_local! {
    static SUCCESSES: RefCell<Vec<LaneState<Successes>>> = const { RefCell::new(Vec::new()) };
}

impl Kind for Successes {
    type Lane = ();
    type Item = AfterSuccess;
    type Out = String;
    /// The successes of one shared read are woken together: one listing
    /// for all of them, not one for the first and one for the rest.
    const GATHERS: bool = true;
    fn lanes() -> &'static LocalKey<RefCell<Vec<LaneState<Self>>>> {
        &SUCCESSES
    }
    /// One report per run: the statement stores at most one verdict each.
    fn shares(a: &Self::Item, b: &Self::Item) -> bool {
        a.id != b.id
    }
    async fn send<S: Store>(
        store: &S,
        (): (),
        items: &[&Self::Item],
    ) -> Result<Vec<String>, DbError> {
        let successes: Vec<Success<'_>> = items.iter().map(|s| s.success()).collect();
        store.after_success(&successes).await
    }
}

/// What [`Store::after_success`] answers for the success `id`, sent
/// together with the others that wait (alone, if the statement it waited
/// for did not answer for it).
///
/// # Errors
/// The database's error, for every success of the statement that failed.
pub async fn after_success<S: Store>(
    store: &S,
    id: DispatchId,
    verdict: Option<&str>,
    folder: &str,
    delivery: Option<Delivery<'_>>,
) -> Result<String, DbError> {
    let item = || AfterSuccess::new(id, verdict, folder, delivery);
    if let Some(answer) = through::<Successes, S>(store, (), item()).await {
        return answer;
    }
    let mut answers = Successes::send(store, (), &[&item()]).await?;
    answers
        .pop()
        .ok_or_else(|| DbError::Other("retention.sql answered for no run".into()))
}

/// Whole requests through the in-memory ports, several in flight at once.
#[cfg(test)]
mod tests {
    use super::{through, Kind, LaneState};
    use crate::ports::store::Store;
    use crate::ports::DbError;
    use crate::testing::kit::*;
    use futures::future::join_all;
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::thread::LocalKey;

    fn progress(id: &str, bytes: u64) -> Value {
        json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "dump", "bytes": bytes}})
    }

    /// Sends `reports` (webhook-id, body) to finalize-backup all at once.
    fn at_once(
        host: &FakeHost,
        store: &MemStore,
        reports: &[(impl AsRef<str>, Value)],
    ) -> Vec<Response> {
        let requests: Vec<Request> = reports
            .iter()
            .map(|(w, b)| report_request(host, w.as_ref(), b))
            .collect();
        block_on(join_all(
            requests
                .iter()
                .map(|r| app::handle(host, store, "finalize-backup", r)),
        ))
    }

    /// Each answer's `changed`.
    fn changed(answers: &[Response]) -> Vec<Value> {
        answers.iter().map(|a| body(a)["changed"].clone()).collect()
    }

    #[test]
    fn reports_that_arrive_during_a_write_are_written_in_one_statement() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        let version = store.only().version;
        let reports: Vec<(String, Value)> = (1..=5)
            .map(|i| (format!("p{i}"), progress(&id, i * 100)))
            .collect();
        let answers = at_once(&host, &store, &reports);
        for a in &answers {
            assert_eq!(a.status, 200, "{}", a.body);
            assert_eq!(
                body(a),
                json!({"dispatch_id": id, "status": "in_progress", "changed": true})
            );
        }
        // The first alone (apply_to_running), the four that waited together.
        assert_eq!(*store.progress_batches.borrow(), vec![4]);
        let run = store.only();
        assert_eq!(run.version, version + 5, "one version per report applied");
        assert_eq!(
            run.progress.as_deref(),
            Some(r#"{"bytes":500,"phase":"dump"}"#)
        );
        assert_eq!(store.deliveries.borrow().len(), 5);
        // The lane is free again: a later report is written at once, alone.
        store.slow_writes.set(false);
        assert_eq!(
            body(&finalize(&host, &store, "p6", &progress(&id, 600)))["changed"],
            true
        );
        assert_eq!(store.progress_batches.borrow().len(), 1);
    }

    #[test]
    fn a_report_that_changes_nothing_in_a_batch_is_answered_unchanged() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        let answers = at_once(
            &host,
            &store,
            &[
                ("a", progress(&id, 1)),
                ("b", progress(&id, 2)),
                ("c", progress(&id, 2)),
                ("d", progress(&id, 3)),
            ],
        );
        assert_eq!(
            changed(&answers),
            vec![json!(true), json!(true), json!(false), json!(true)]
        );
        assert_eq!(*store.progress_batches.borrow(), vec![3]);
        // Even unchanged, its delivery is recorded: a retry is recognised.
        assert!(store.deliveries.borrow().contains_key("c"));
        assert_eq!(
            store.only().progress.as_deref(),
            Some(r#"{"bytes":3,"phase":"dump"}"#)
        );
    }

    #[test]
    fn a_repeated_webhook_id_waits_for_the_next_statement_and_is_a_retry() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        let same = progress(&id, 7);
        let answers = at_once(
            &host,
            &store,
            &[
                ("first", progress(&id, 1)),
                ("dup", same.clone()),
                ("other", progress(&id, 8)),
                ("dup", same),
            ],
        );
        assert_eq!(
            changed(&answers),
            vec![json!(true), json!(true), json!(true), json!(false)]
        );
        assert!(answers.iter().all(|a| a.status == 200));
        // `first` alone; `dup` and `other` together; the repeat after them,
        // alone, answered as a retry of the delivery it repeats.
        assert_eq!(*store.progress_batches.borrow(), vec![2]);
        assert_eq!(store.deliveries.borrow().len(), 3);
    }

    #[test]
    fn a_failed_statement_answers_each_of_its_reports_and_frees_the_lane() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        store.down.set(true);
        let answers = at_once(
            &host,
            &store,
            &[
                ("a", progress(&id, 1)),
                ("b", progress(&id, 2)),
                ("c", progress(&id, 3)),
            ],
        );
        for a in &answers {
            assert_eq!(a.status, 503, "{}", a.body);
            assert_eq!(body(a)["error"]["code"], "database_unavailable");
        }
        store.down.set(false);
        let again = at_once(
            &host,
            &store,
            &[("a", progress(&id, 1)), ("b", progress(&id, 2))],
        );
        assert!(again.iter().all(|a| body(a)["changed"] == true));
        assert_eq!(
            store.only().progress.as_deref(),
            Some(r#"{"bytes":2,"phase":"dump"}"#)
        );
    }

    fn failed(id: &str) -> Value {
        json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "dump failed"})
    }

    fn succeeded(id: &str) -> Value {
        json!({"event": "succeeded", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": format!("backups/20261101T000000Z_{id}.dump")})
    }

    /// `n` runs, each dispatched and then ended by `end` (webhook-id
    /// `end-<i>`), one after another.
    fn ended(host: &FakeHost, store: &MemStore, n: usize, end: fn(&str) -> Value) -> Vec<String> {
        (0..n)
            .map(|i| {
                let id = dispatched(host, store);
                let r = finalize(host, store, &format!("end-{i}"), &end(&id));
                assert_eq!(body(&r)["changed"], true, "{}", r.body);
                id
            })
            .collect()
    }

    #[test]
    fn repeated_verdicts_to_many_runs_are_read_in_one_statement_and_recorded() {
        let (host, store) = (host(), store());
        let ids = ended(&host, &store, 4, failed);
        let versions: Vec<i64> = store.runs.borrow().iter().map(|r| r.version).collect();
        store.slow_writes.set(true);
        let reports: Vec<(String, Value)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("again-{i}"), failed(id)))
            .collect();
        let answers = at_once(&host, &store, &reports);
        for (a, id) in answers.iter().zip(&ids) {
            assert_eq!(
                body(a),
                json!({"dispatch_id": id, "status": "failed", "changed": false})
            );
        }
        // The first alone (its guarded write, which found the run ended),
        // the three that waited in one read.
        assert_eq!(*store.ending_batches.borrow(), vec![3]);
        assert_eq!(
            store.repeats_recorded.get(),
            4,
            "each by the statement that read it"
        );
        for (w, _) in &reports {
            assert!(store.deliveries.borrow().contains_key(w), "{w} recorded");
        }
        let after: Vec<i64> = store.runs.borrow().iter().map(|r| r.version).collect();
        assert_eq!(after, versions, "no run written");
        // A retry of one of them is told apart from a new report.
        store.slow_writes.set(false);
        let retry = finalize(&host, &store, "again-2", &failed(&ids[2]));
        assert_eq!(body(&retry)["changed"], false);
    }

    #[test]
    fn a_verdict_read_in_a_batch_still_ends_its_running_run_and_raises_its_alert() {
        let (mut host, store) = (host(), store());
        host.env.insert(
            "BACKUP_ALERT_WEBHOOK_URL".into(),
            "http://127.0.0.1:9/".into(),
        );
        let done = ended(&host, &store, 2, failed);
        let running = dispatched(&host, &store);
        let outbox = store.outbox().len();
        store.slow_writes.set(true);
        let answers = at_once(
            &host,
            &store,
            &[
                ("r0", failed(&done[0])),
                ("end", failed(&running)),
                ("r1", failed(&done[1])),
            ],
        );
        assert_eq!(
            changed(&answers),
            vec![json!(false), json!(true), json!(false)]
        );
        assert_eq!(*store.ending_batches.borrow(), vec![2]);
        let run = store
            .runs
            .borrow()
            .iter()
            .find(|r| r.dispatch_id.to_string() == running)
            .cloned()
            .unwrap();
        assert_eq!(run.status, crate::run::Status::Failed);
        assert_eq!(run.error_text.as_deref(), Some("dump failed"));
        assert_eq!(store.outbox().len(), outbox + 1, "its failure alert");
        assert!(store.deliveries.borrow().contains_key("end"));
    }

    #[test]
    fn a_webhook_id_seen_twice_among_verdicts_waits_and_is_answered_as_a_retry() {
        let (host, store) = (host(), store());
        let ids = ended(&host, &store, 3, failed);
        store.slow_writes.set(true);
        let answers = at_once(
            &host,
            &store,
            &[
                ("a", failed(&ids[0])),
                ("b", failed(&ids[1])),
                ("b", failed(&ids[1])),
                ("c", failed(&ids[2])),
            ],
        );
        assert!(answers.iter().all(|a| a.status == 200));
        // `a` alone; `b` and `c` together; the second `b` after them.
        assert_eq!(*store.ending_batches.borrow(), vec![2]);
        assert_eq!(store.deliveries.borrow().len(), 3 + 3);
        // The same webhook-id with another body is still refused.
        store.slow_writes.set(false);
        let reused = finalize(&host, &store, "b", &failed(&ids[2]));
        assert_eq!(error_code(&reused), "webhook_id_reused");
    }

    /// Four successes, each of a key in `backups/`, finished 40 + i days
    /// ago; their ids, and their keys oldest first.
    fn old_successes(host: &FakeHost, store: &MemStore) -> (Vec<String>, Vec<String>) {
        store.retention.set((Some(30), 0));
        let ids = ended(host, store, 4, succeeded);
        let mut keys = Vec::new();
        for (i, id) in ids.iter().enumerate().rev() {
            for run in store.runs.borrow_mut().iter_mut() {
                if run.dispatch_id.to_string() == *id {
                    run.finished_at = Some(host.now_ms() - (40 + i as i64) * 86_400_000);
                    keys.push(run.s3_key.clone().unwrap());
                }
            }
        }
        (ids, keys)
    }

    /// `s0` to `s3` to the four runs, and `s2b` to the third again, all at
    /// once, each `succeeded` report with `extra` fields; the answers.
    fn successes_at_once(
        host: &FakeHost,
        store: &MemStore,
        ids: &[String],
        extra: &Value,
    ) -> Vec<Value> {
        let report = |i: usize| {
            let mut r = succeeded(&ids[i]);
            r.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            r
        };
        store.slow_writes.set(true);
        let answers = at_once(
            host,
            store,
            &[
                ("s0", report(0)),
                ("s1", report(1)),
                ("s2", report(2)),
                ("s2b", report(2)),
                ("s3", report(3)),
            ],
        );
        store.slow_writes.set(false);
        for w in ["s0", "s1", "s2", "s2b", "s3"] {
            assert!(store.deliveries.borrow().contains_key(w), "{w} recorded");
        }
        answers.iter().map(body).collect()
    }

    /// What each answer lists: every other key, oldest first.
    fn listed(ids: &[String], keys: &[String], runs: &[usize]) -> Vec<Value> {
        runs.iter()
            .map(|&i| {
                let others: Vec<&String> =
                    keys.iter().filter(|k| !k.contains(&ids[i])).collect();
                json!({"dispatch_id": ids[i], "status": "success", "changed": false, "prune": others})
            })
            .collect()
    }

    #[test]
    fn repeated_successes_read_together_are_recorded_and_listed_by_that_read() {
        let (host, store) = (host(), store());
        let (ids, keys) = old_successes(&host, &store);
        let batches = store.success_batches.borrow().len();
        let answers = successes_at_once(&host, &store, &ids, &json!({}));
        assert_eq!(answers, listed(&ids, &keys, &[0, 1, 2, 2, 3]));
        // `s0` read alone and listed by a statement of its own; the other
        // four read, recorded and listed together.
        assert_eq!(*store.ending_batches.borrow(), vec![4]);
        assert_eq!(store.success_batches.borrow()[batches..], [1]);
        assert_eq!(store.repeats_recorded.get(), 4);
    }

    #[test]
    fn successes_with_a_verdict_are_listed_together_one_statement_per_run() {
        let (host, store) = (host(), store());
        let (ids, keys) = old_successes(&host, &store);
        let batches = store.success_batches.borrow().len();
        let verdict =
            json!({"verification": {"mode": "restore", "ok": true, "tables": 2, "rows": 10}});
        let answers = successes_at_once(&host, &store, &ids, &verdict);
        assert_eq!(answers, listed(&ids, &keys, &[0, 1, 2, 2, 3]));
        // Read together, but not as repeats: the verdict is stored once the
        // core has decided. `s0` listed alone; then `s1`, `s2` and `s3`
        // together (the first of them let the others woken by the same
        // read join it), and `s2b` after them: one report per run a
        // statement.
        assert_eq!(*store.ending_batches.borrow(), vec![4]);
        assert_eq!(store.success_batches.borrow()[batches..], [1, 3, 1]);
        assert_eq!(store.repeats_recorded.get(), 0);
        assert!(store.runs.borrow().iter().all(|r| r.verification.is_some()));
    }

    /// A kind that answers each report with itself, for the lanes alone.
    struct Echo;

    thread_local! {
        static ECHO: RefCell<Vec<LaneState<Echo>>> = const { RefCell::new(Vec::new()) };
        static ECHOED: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
    }

    impl Kind for Echo {
        type Lane = ();
        type Item = u32;
        type Out = u32;
        const GATHERS: bool = true;
        fn lanes() -> &'static LocalKey<RefCell<Vec<LaneState<Self>>>> {
            &ECHO
        }
        fn shares(a: &u32, b: &u32) -> bool {
            a != b
        }
        async fn send<S: Store>(_: &S, (): (), items: &[&u32]) -> Result<Vec<u32>, DbError> {
            let items: Vec<u32> = items.iter().map(|i| **i).collect();
            ECHOED.with_borrow_mut(|e| e.push(items.clone()));
            Ok(items)
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = futures::task::noop_waker();
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_gathering_writer_lets_the_reports_woken_with_it_join_its_statement() {
        let store = store();
        let mut first = Box::pin(through::<Echo, _>(&store, (), 1));
        assert!(poll_once(first.as_mut()).is_pending(), "it lets others run");
        let mut second = Box::pin(through::<Echo, _>(&store, (), 2));
        assert!(poll_once(second.as_mut()).is_pending(), "it joins");
        assert!(matches!(
            poll_once(first.as_mut()),
            Poll::Ready(Some(Ok(1)))
        ));
        assert!(matches!(
            poll_once(second.as_mut()),
            Poll::Ready(Some(Ok(2)))
        ));
        assert_eq!(ECHOED.with_borrow(Clone::clone), vec![vec![1, 2]]);
    }

    #[test]
    fn a_gathering_writer_dropped_before_it_sends_hands_its_lane_on() {
        let store = store();
        let mut first = Box::pin(through::<Echo, _>(&store, (), 1));
        assert!(poll_once(first.as_mut()).is_pending());
        let mut second = Box::pin(through::<Echo, _>(&store, (), 2));
        assert!(poll_once(second.as_mut()).is_pending());
        drop(first);
        assert!(matches!(
            poll_once(second.as_mut()),
            Poll::Ready(Some(Ok(2)))
        ));
        // The lane is free again: a later report is sent (after its yield).
        let mut third = Box::pin(through::<Echo, _>(&store, (), 3));
        assert!(poll_once(third.as_mut()).is_pending());
        assert!(matches!(
            poll_once(third.as_mut()),
            Poll::Ready(Some(Ok(3)))
        ));
        assert_eq!(ECHOED.with_borrow(Clone::clone), vec![vec![2], vec![3]]);
    }

    #[test]
    fn a_writer_whose_request_is_dropped_hands_its_lane_on() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        let first = report_request(&host, "gone", &progress(&id, 1));
        let second = report_request(&host, "kept", &progress(&id, 2));
        let mut writer = Box::pin(app::handle(&host, &store, "finalize-backup", &first));
        assert!(poll_once(writer.as_mut()).is_pending(), "in flight");
        let mut waiter = Box::pin(app::handle(&host, &store, "finalize-backup", &second));
        assert!(poll_once(waiter.as_mut()).is_pending(), "waiting");
        drop(writer);
        let answer = block_on(waiter);
        assert_eq!(body(&answer)["changed"], true, "{}", answer.body);
        assert_eq!(
            store.only().progress.as_deref(),
            Some(r#"{"bytes":2,"phase":"dump"}"#)
        );
    }
}
