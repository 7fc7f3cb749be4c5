//! Progress reports to one run that arrive together are written together.
//!
//! A backup in progress may send many `progress` reports, and each is a
//! write of the same `backup_history` row. Written one statement each, they
//! queue on that row's lock in PostgreSQL, each paying for a statement, a
//! transaction and a commit of its own. Instead, an instance keeps one write
//! per run in flight (a *lane*): reports that arrive meanwhile wait, and
//! when the write in flight returns, the first of them writes all that are
//! waiting in one statement (`apply_progress_batch.sql`), as if they had
//! been applied one after another in arrival order. Under load a statement
//! carries many reports; alone, a report is written at once by the
//! one-report statement (`apply_progress.sql`) and waits for nothing.
//!
//! Nothing here decides what a report does to a run: the caller passes the
//! decision `run::apply_report` made (a run in progress, its progress
//! replaced) and gets back what [`Store::apply_to_running`] answers for one
//! report, or, from a batch, [`Applied::Written`], [`Applied::Recorded`]
//! (new, but nothing new for the run) or [`Applied::Missed`]; a report that
//! missed is decided in full from the row by the caller. Nothing can wait forever: a
//! lane's writer always hands its lane on, also when its future is dropped.

use crate::alerts::Raise;
use crate::dispatch_id::DispatchId;
use crate::ports::store::{keeps_running, Applied, Delivery, ProgressReport, Store};
use crate::ports::DbError;
use crate::run::Run;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The most reports one statement carries. The rest wait for the next.
pub const MAX_BATCH: usize = 64;

/// Reports that may share a statement: one run, one attempt, one workflow
/// run (the statement's guard is the same for all of them).
type Lane = (DispatchId, u32, Option<u64>);

/// Whether `next`, a decision for a run in progress, may be written through
/// a lane: it keeps the run in progress, raises nothing, and brings a
/// progress (a repeated `started` brings none and is written alone).
pub fn applies(next: &Run, raise: &Raise) -> bool {
    keeps_running(next, raise) && next.progress.is_some()
}

/// One report waiting in a lane: its delivery and its decision.
struct Waiting {
    webhook_id: String,
    body_sha256: String,
    next: Run,
    slot: RefCell<Slot>,
}

enum Slot {
    Waiting(Option<Waker>),
    /// This report's turn to write its lane's waiting reports.
    Write,
    Done(Result<Applied, DbError>),
}

/// A lane with a write in flight (or about to be, by the report at the
/// front of `waiting`, which was handed the lane), and the reports waiting.
/// Lanes without either are removed, so there are about as many as runs
/// being reported on at once: one, usually. Plain vectors, as the lists are
/// short (and the module smaller without a hash map).
struct LaneState {
    lane: Lane,
    waiting: Vec<Rc<Waiting>>,
}

thread_local! {
    static LANES: RefCell<Vec<LaneState>> = const { RefCell::new(Vec::new()) };
}

fn position(lanes: &[LaneState], lane: Lane) -> Option<usize> {
    lanes.iter().position(|s| s.lane == lane)
}

/// Writes `next` (see [`applies`]: it raises nothing) for the run `id`
/// through its lane.
///
/// # Errors
/// The database's error, for every report of the statement that failed.
pub async fn apply<S: Store>(
    store: &S,
    id: DispatchId,
    next: &Run,
    delivery: Delivery<'_>,
) -> Result<Applied, DbError> {
    let lane = (id, next.run_attempt, next.workflow_run_id);
    let me = Rc::new(Waiting {
        webhook_id: delivery.id.to_owned(),
        body_sha256: delivery.body_sha256.to_owned(),
        next: next.clone(),
        slot: RefCell::new(Slot::Waiting(None)),
    });
    let leads = LANES.with_borrow_mut(|lanes| match position(lanes, lane) {
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
        // Handed the lane: write what waits.
    }
    let batch = take_batch(lane);
    let _hand_on = HandOn {
        lane,
        batch: &batch,
    };
    let result = if let [only] = batch.as_slice() {
        let delivery = Delivery {
            id: &only.webhook_id,
            body_sha256: &only.body_sha256,
        };
        store
            .apply_to_running(id, &only.next, delivery, &Raise::none(), None)
            .await
            .map(|a| vec![a])
    } else {
        let reports: Vec<ProgressReport<'_>> = batch
            .iter()
            .map(|w| ProgressReport {
                webhook_id: &w.webhook_id,
                progress: w.next.progress.as_deref().unwrap_or_default(),
                body_sha256: &w.body_sha256,
            })
            .collect();
        store.apply_progress(id, &batch[0].next, &reports).await
    };
    for (i, w) in batch.iter().enumerate() {
        let r = match &result {
            Ok(applied) => Ok(applied.get(i).cloned().unwrap_or(Applied::Missed)),
            Err(e) => Err(e.clone()),
        };
        settle(w, Slot::Done(r));
    }
    let mine = me.slot.replace(Slot::Waiting(None));
    match mine {
        Slot::Done(r) => r,
        _ => Ok(Applied::Missed),
    }
}

/// Up to [`MAX_BATCH`] waiting reports of `lane`, from the front, with
/// distinct webhook-ids (a repeat waits for the next statement, so that it
/// is told apart from the first as a retry).
fn take_batch(lane: Lane) -> Vec<Rc<Waiting>> {
    LANES.with_borrow_mut(|lanes| {
        let Some(i) = position(lanes, lane) else {
            return Vec::new();
        };
        let mut batch: Vec<Rc<Waiting>> = Vec::new();
        lanes[i].waiting.retain(|w| {
            let take =
                batch.len() < MAX_BATCH && batch.iter().all(|b| b.webhook_id != w.webhook_id);
            if take {
                batch.push(Rc::clone(w));
            }
            !take
        });
        batch
    })
}

fn settle(w: &Waiting, to: Slot) {
    let before = w.slot.replace(to);
    if let Slot::Waiting(Some(waker)) = before {
        waker.wake();
    }
}

/// Hands the lane to the first report still waiting, or frees it; and, if
/// the write was abandoned (its future dropped), answers its reports as
/// missed so that each is decided on its own.
struct HandOn<'a> {
    lane: Lane,
    batch: &'a [Rc<Waiting>],
}

impl Drop for HandOn<'_> {
    fn drop(&mut self) {
        for w in self.batch {
            if !matches!(*w.slot.borrow(), Slot::Done(_)) {
                settle(w, Slot::Done(Ok(Applied::Missed)));
            }
        }
        let next = LANES.with_borrow_mut(|lanes| {
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

/// Resolves when the waiting report's statement has answered (`Some`), or
/// when the lane is handed to it (`None`).
struct Turn<'a> {
    lane: Lane,
    me: &'a Rc<Waiting>,
    finished: bool,
}

impl Future for Turn<'_> {
    type Output = Option<Result<Applied, DbError>>;
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

impl Drop for Turn<'_> {
    /// A report that stops waiting (its request dropped) leaves its lane,
    /// and hands the lane on if it had just been handed it.
    fn drop(&mut self) {
        if self.finished || matches!(*self.me.slot.borrow(), Slot::Done(_)) {
            return;
        }
        let me = Rc::clone(self.me);
        LANES.with_borrow_mut(|lanes| {
            if let Some(i) = position(lanes, self.lane) {
                lanes[i].waiting.retain(|w| !Rc::ptr_eq(w, &me));
            }
        });
        if matches!(*self.me.slot.borrow(), Slot::Write) {
            drop(HandOn {
                lane: self.lane,
                batch: &[],
            });
        }
    }
}

/// Whole requests through the in-memory ports, several in flight at once.
#[cfg(test)]
mod tests {
    use crate::testing::kit::*;
    use futures::future::join_all;

    fn progress(id: &str, bytes: u64) -> Value {
        json!({"event": "progress", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "progress": {"phase": "dump", "bytes": bytes}})
    }

    /// Sends `reports` (webhook-id, body) to finalize-backup all at once.
    fn at_once(host: &FakeHost, store: &MemStore, reports: &[(&str, Value)]) -> Vec<Response> {
        let requests: Vec<Request> = reports
            .iter()
            .map(|(w, b)| report_request(host, w, b))
            .collect();
        block_on(join_all(
            requests
                .iter()
                .map(|r| app::handle(host, store, "finalize-backup", r)),
        ))
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
        let refs: Vec<(&str, Value)> = reports
            .iter()
            .map(|(w, b)| (w.as_str(), b.clone()))
            .collect();
        let answers = at_once(&host, &store, &refs);
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
        let changed: Vec<Value> = answers.iter().map(|a| body(a)["changed"].clone()).collect();
        assert_eq!(
            changed,
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
        let changed: Vec<Value> = answers.iter().map(|a| body(a)["changed"].clone()).collect();
        assert_eq!(
            changed,
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

    #[test]
    fn a_writer_whose_request_is_dropped_hands_its_lane_on() {
        use std::future::Future;
        use std::task::{Context, Poll};
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        store.slow_writes.set(true);
        let first = report_request(&host, "gone", &progress(&id, 1));
        let second = report_request(&host, "kept", &progress(&id, 2));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut writer = Box::pin(app::handle(&host, &store, "finalize-backup", &first));
        assert!(
            matches!(writer.as_mut().poll(&mut cx), Poll::Pending),
            "in flight"
        );
        let mut waiter = Box::pin(app::handle(&host, &store, "finalize-backup", &second));
        assert!(
            matches!(waiter.as_mut().poll(&mut cx), Poll::Pending),
            "waiting"
        );
        drop(writer);
        let answer = block_on(waiter);
        assert_eq!(body(&answer)["changed"], true, "{}", answer.body);
        assert_eq!(
            store.only().progress.as_deref(),
            Some(r#"{"bytes":2,"phase":"dump"}"#)
        );
    }
}
