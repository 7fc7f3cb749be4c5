//! In-memory fakes of the ports, and flow tests that drive whole requests
//! through them natively (`cargo test`). The same flows run against real
//! PostgreSQL in the Deno tests under `tests/`.

use crate::config::Env;
use crate::dispatch_id::DispatchId;
use crate::github::{OutboundRequest, OutboundResponse};
use crate::ports::{DbError, Host, Level};
use crate::run::{FailureReason, OutcomeSource, Run, Status};
use crate::store::{Cursor, Settings, Started, Store, SweeperRecord, ONE_IN_PROGRESS};
use crate::token::SignatureCheck;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

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
}

impl FakeHost {
    pub fn new(env: &[(&str, &str)]) -> Self {
        FakeHost {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            now: Cell::new(1_800_000_000_000),
            counter: Cell::new(0),
            fetch_answers: RefCell::new(VecDeque::new()),
            fetched: RefCell::new(Vec::new()),
            slept: RefCell::new(Vec::new()),
            logs: RefCell::new(Vec::new()),
            signature_ok: Cell::new(false),
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

impl Host for FakeHost {
    fn now_ms(&self) -> i64 {
        self.now.get()
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
    pub deliveries: RefCell<HashMap<String, DispatchId>>,
    pub down: Cell<bool>,
    pub settings: Cell<Settings>,
    /// Recorded sweeps: (unix ms, outcome), oldest first.
    pub sweeps: RefCell<Vec<(i64, String)>>,
    /// `backup_settings.sweep_problem`, as the database's scheduler writes it.
    pub sweep_problem: RefCell<Option<String>>,
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

/// `apply_report.sql`'s merge: `next` (what a report makes of a run in
/// progress that has nothing yet) over the row, which keeps its own start
/// time and progress where `next` has none.
pub fn merge_into_running(row: &Run, next: &Run) -> Run {
    let mut merged = row.clone();
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

impl MemStore {
    fn up(&self) -> Result<(), DbError> {
        if self.down.get() {
            Err(DbError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
    /// Inserts, as the single-flight index allows (the raw insert that
    /// [`Store::start`] guards).
    pub async fn insert(&self, run: &Run, webhook_id: Option<&str>) -> Result<Run, DbError> {
        self.up()?;
        let mut runs = self.runs.borrow_mut();
        if run.status == Status::InProgress && runs.iter().any(|r| r.status == Status::InProgress) {
            return Err(DbError::UniqueViolation(ONE_IN_PROGRESS.into()));
        }
        let mut saved = run.clone();
        saved.id = runs.len() as i64 + 1;
        runs.push(saved.clone());
        if let Some(w) = webhook_id {
            self.deliveries
                .borrow_mut()
                .insert(w.into(), run.dispatch_id);
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
        webhook_id: Option<&str>,
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
        if let Some(w) = webhook_id {
            self.deliveries
                .borrow_mut()
                .entry(w.into())
                .or_insert(row.dispatch_id);
        }
        Ok(Some(row.clone()))
    }
    async fn apply_to_running(
        &self,
        id: DispatchId,
        next: &Run,
        webhook_id: &str,
    ) -> Result<bool, DbError> {
        self.up()?;
        if self.deliveries.borrow().contains_key(webhook_id) {
            return Ok(false);
        }
        let mut runs = self.runs.borrow_mut();
        let Some(row) = runs.iter_mut().find(|r| {
            r.dispatch_id == id
                && r.status == Status::InProgress
                && r.run_attempt == next.run_attempt
                && r.workflow_run_id
                    .is_none_or(|w| Some(w) == next.workflow_run_id)
        }) else {
            return Ok(false);
        };
        let merged = merge_into_running(row, next);
        if merged == *row {
            return Ok(false);
        }
        *row = merged;
        row.version += 1;
        self.deliveries.borrow_mut().insert(webhook_id.into(), id);
        Ok(true)
    }
    async fn read_for_report(
        &self,
        id: Option<DispatchId>,
        webhook_id: &str,
    ) -> Result<Option<(Run, Option<DispatchId>)>, DbError> {
        self.up()?;
        let delivered = self.deliveries.borrow().get(webhook_id).copied();
        let Some(id) = id.or(delivered) else {
            return Ok(None);
        };
        Ok(self.get(id).await?.map(|run| (run, delivered)))
    }
    async fn start(&self, run: &Run, webhook_id: Option<&str>) -> Result<Started, DbError> {
        if let Some(running) = self.running().await? {
            return Ok(Started::Running(running));
        }
        self.insert(run, webhook_id).await.map(Started::Inserted)
    }
    async fn record_delivery(&self, webhook_id: &str, id: DispatchId) -> Result<(), DbError> {
        self.up()?;
        self.deliveries
            .borrow_mut()
            .entry(webhook_id.into())
            .or_insert(id);
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
}

#[cfg(test)]
mod flows {
    use super::*;
    use crate::app;
    use crate::http::{Request, Response};
    use crate::report::Report;
    use crate::run::{self, Outcome};
    use crate::token::sign_hs256;
    use crate::webhook::WebhookSecret;
    use futures::executor::block_on;
    use serde_json::{json, Value};

    const JWT_SECRET: &str = "local-dev-jwt-secret-at-least-32-characters";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ADMIN: &str = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    fn host() -> FakeHost {
        FakeHost::new(&[
            ("BACKUP_JWT_SECRET", JWT_SECRET),
            ("BACKUP_WEBHOOK_SECRET", WHSEC),
            ("GITHUB_TOKEN", "ghp_test"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("ALLOWED_ORIGINS", "http://localhost:3000"),
        ])
    }

    fn store() -> MemStore {
        let s = MemStore::default();
        s.admins.borrow_mut().push(Uuid::parse_str(ADMIN).unwrap());
        s
    }

    fn token(host: &FakeHost, sub: &str) -> String {
        sign_hs256(
            JWT_SECRET.as_bytes(),
            &json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": host.now_ms() / 1000 + 600}),
        )
    }

    fn trigger(host: &FakeHost, store: &MemStore, sub: &str, body: &str) -> Response {
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

    fn finalize(host: &FakeHost, store: &MemStore, webhook_id: &str, body: &Value) -> Response {
        let body = body.to_string();
        let ts = host.now_ms() / 1000;
        let sig = WebhookSecret::parse(WHSEC)
            .unwrap()
            .sign(webhook_id, ts, body.as_bytes());
        let req = Request::new(
            "POST",
            "http://localhost/functions/v1/finalize-backup",
            vec![
                ("webhook-id".into(), webhook_id.into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), sig),
                ("content-type".into(), "application/json".into()),
            ],
            body.into_bytes(),
        );
        block_on(app::handle(host, store, "finalize-backup", &req))
    }

    fn body(r: &Response) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    fn dispatched(host: &FakeHost, store: &MemStore) -> String {
        host.answer(200, &[], r#"{"workflow_run_id": 4242, "run_url": "https://api.github.com/repos/acme/app/actions/runs/4242", "html_url": "https://github.com/acme/app/actions/runs/4242"}"#);
        let r = trigger(host, store, ADMIN, "");
        assert_eq!(r.status, 202, "{}", r.body);
        body(&r)["dispatch_id"].as_str().unwrap().to_string()
    }

    #[test]
    fn trigger_inserts_dispatches_and_records_the_run() {
        let (host, store) = (host(), store());
        host.answer(200, &[], r#"{"workflow_run_id": 4242, "html_url": "https://github.com/acme/app/actions/runs/4242"}"#);
        let r = trigger(&host, &store, ADMIN, r#"{"reason":"before deploy"}"#);
        assert_eq!(r.status, 202);
        let b = body(&r);
        assert_eq!(b["status"], "in_progress");
        assert_eq!(b["workflow_run_id"], 4242);
        assert_eq!(
            b["run_url"],
            "https://github.com/acme/app/actions/runs/4242"
        );
        let run = store.only();
        assert_eq!(run.dispatch_id.to_string(), b["dispatch_id"]);
        assert_eq!(run.reason.as_deref(), Some("before deploy"));
        assert_eq!(run.triggered_by.unwrap().to_string(), ADMIN);
        let sent = &host.fetched.borrow()[0];
        let sent_body: Value = serde_json::from_str(sent.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent_body["inputs"]["dispatch_id"], b["dispatch_id"]);
    }

    #[test]
    fn trigger_accepts_a_204_without_run_details() {
        let (host, store) = (host(), store());
        host.answer(204, &[], "");
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202);
        assert_eq!(body(&r)["workflow_run_id"], Value::Null);
        assert_eq!(body(&r)["run_url"], Value::Null);
    }

    #[test]
    fn trigger_returns_409_with_the_running_dispatch_id() {
        let (host, store) = (host(), store());
        let first = dispatched(&host, &store);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 409);
        assert_eq!(body(&r)["error"]["code"], "backup_in_progress");
        assert_eq!(body(&r)["dispatch_id"], first);
        assert_eq!(host.fetched.borrow().len(), 1, "no second dispatch");
    }

    #[test]
    fn trigger_refuses_non_admins_and_missing_tokens() {
        let (host, store) = (host(), store());
        assert_eq!(trigger(&host, &store, OTHER, "").status, 403);
        let req = Request::new(
            "POST",
            "http://x/functions/v1/trigger-backup",
            vec![],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "trigger-backup", &req));
        assert_eq!(r.status, 401);
        assert_eq!(body(&r)["error"]["code"], "missing_token");
        assert!(store.runs.borrow().is_empty());
    }

    #[test]
    fn dispatch_is_retried_on_5xx_then_succeeds() {
        let (host, store) = (host(), store());
        host.answer(502, &[], "bad gateway");
        host.answer(429, &[("retry-after", "1")], "");
        host.answer(204, &[], "");
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202);
        assert_eq!(host.fetched.borrow().len(), 3);
        assert_eq!(*host.slept.borrow(), vec![250, 1000]);
    }

    #[test]
    fn dispatch_refused_leaves_a_failed_row_and_answers_502() {
        let (host, store) = (host(), store());
        host.answer(422, &[], r#"{"message":"No ref found for: nope"}"#);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 502);
        assert_eq!(body(&r)["error"]["code"], "dispatch_failed");
        let run = store.only();
        assert_eq!(body(&r)["dispatch_id"], run.dispatch_id.to_string());
        assert_eq!(run.status, Status::Failed);
        assert_eq!(run.failure_reason, Some(FailureReason::DispatchFailed));
        assert_eq!(
            run.error_text.as_deref(),
            Some("GitHub did not accept the workflow dispatch: HTTP 422: No ref found for: nope")
        );
        assert!(!r.body.contains("ghp_test"));
    }

    #[test]
    fn dispatch_gives_up_after_bounded_retries() {
        let (host, store) = (host(), store());
        for _ in 0..3 {
            host.answer(503, &[], "");
        }
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 502);
        assert_eq!(host.fetched.borrow().len(), 3);
        assert_eq!(
            store.only().failure_reason,
            Some(FailureReason::DispatchFailed)
        );
        assert!(store.only().error_text.unwrap().contains("HTTP 503"));
    }

    #[test]
    fn missing_github_config_is_a_500_naming_it_and_writes_nothing() {
        let mut host = host();
        host.env.remove("GITHUB_TOKEN");
        let store = store();
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: GITHUB_TOKEN is not set"
        );
        assert!(store.runs.borrow().is_empty());
    }

    #[test]
    fn database_down_is_a_503() {
        let (host, store) = (host(), store());
        store.down.set(true);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 503);
        assert_eq!(body(&r)["error"]["code"], "database_unavailable");
        assert!(!r.body.contains("connection refused"));
    }

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

    #[test]
    fn other_methods_get_405_and_unknown_functions_404() {
        let (host, store) = (host(), store());
        let get = Request::new(
            "GET",
            "http://x/functions/v1/finalize-backup",
            vec![],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "finalize-backup", &get));
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(
            block_on(app::handle(&host, &store, "nope", &get)).status,
            404
        );
    }

    #[test]
    fn cors_preflight_and_error_responses_carry_allowed_origins_only() {
        let (host, store) = (host(), store());
        let pre = Request::new(
            "OPTIONS",
            "http://x/functions/v1/trigger-backup",
            vec![("origin".into(), "http://localhost:3000".into())],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "trigger-backup", &pre));
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:3000")
        );
        let evil = Request::new(
            "OPTIONS",
            "http://x/functions/v1/trigger-backup",
            vec![("origin".into(), "https://evil.test".into())],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "trigger-backup", &evil));
        assert_eq!(r.status, 403);
        assert_eq!(r.header("access-control-allow-origin"), None);
        let unauth = Request::new(
            "POST",
            "http://x/functions/v1/trigger-backup",
            vec![("origin".into(), "http://localhost:3000".into())],
            vec![],
        );
        let r = block_on(app::handle(&host, &store, "trigger-backup", &unauth));
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:3000")
        );
    }

    fn sweep_req(host: &FakeHost, store: &MemStore, key: &str) -> Response {
        let req = Request::new(
            "POST",
            "http://x/functions/v1/reconcile-backups",
            vec![("authorization".into(), format!("Bearer {key}"))],
            vec![],
        );
        block_on(app::handle(host, store, "reconcile-backups", &req))
    }

    fn service_host() -> FakeHost {
        let mut h = host();
        h.env
            .insert("SUPABASE_SERVICE_ROLE_KEY".into(), "service-key".into());
        h
    }

    #[test]
    fn a_stuck_run_no_longer_blocks_the_button() {
        let (host, store) = (host(), store());
        let stuck = dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        host.answer(500, &[], "");
        host.answer(200, &[], r#"{"workflow_run_id": 5000}"#);
        let r = trigger(&host, &store, ADMIN, "");
        assert_eq!(r.status, 202, "{}", r.body);
        let runs = store.runs.borrow();
        let old = runs
            .iter()
            .find(|r| r.dispatch_id.to_string() == stuck)
            .unwrap();
        assert_eq!(old.failure_reason, Some(FailureReason::Lost));
        assert_eq!(
            old.outcome_source,
            Some(crate::run::OutcomeSource::Deadline)
        );
    }

    #[test]
    fn the_sweep_needs_the_service_role_key() {
        let (host, store) = (service_host(), store());
        assert_eq!(sweep_req(&host, &store, "wrong").status, 401);
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(r.status, 200);
        assert_eq!(
            body(&r),
            json!({"checked": 0, "changed": [], "github": "skipped"})
        );
    }

    #[test]
    fn the_sweep_ends_a_run_github_finished_without_a_report() {
        let (host, store) = (service_host(), store());
        let id = dispatched(&host, &store);
        finalize(
            &host,
            &store,
            "s",
            &json!({"event": "started", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1}),
        );
        let completed = host.now.get() + 60_000;
        host.now.set(completed + 61_000);
        host.answer(200, &[], &json!({"id": 4242, "run_attempt": 1, "status": "completed", "conclusion": "cancelled", "updated_at": crate::time::iso8601(completed)}).to_string());
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(
            body(&r),
            json!({"checked": 1, "changed": [{"dispatch_id": id, "status": "failed", "failure_reason": "cancelled"}], "github": "ok"})
        );
        assert_eq!(
            host.fetched.borrow().last().unwrap().url,
            "https://api.github.com/repos/acme/app/actions/runs/4242"
        );
        // The workflow's own late report still has the last word.
        let late = finalize(
            &host,
            &store,
            "late",
            &json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "error_text": "pg_dump: killed"}),
        );
        assert_eq!(body(&late)["changed"], true);
        assert_eq!(store.only().failure_reason, Some(FailureReason::StepFailed));
    }

    #[test]
    fn a_rate_limited_sweep_changes_nothing_and_backs_off() {
        let (host, store) = (service_host(), store());
        dispatched(&host, &store);
        host.now.set(host.now.get() + 120_000);
        host.answer(
            403,
            &[("x-ratelimit-remaining", "0"), ("retry-after", "600")],
            "",
        );
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&r)["github"], "rate_limited");
        assert_eq!(body(&r)["changed"], json!([]));
        assert_eq!(store.only().status, Status::InProgress);
        let calls = host.fetched.borrow().len();
        let again = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&again)["github"], "rate_limited");
        assert_eq!(
            host.fetched.borrow().len(),
            calls,
            "no GitHub call during the backoff"
        );
    }

    #[test]
    fn status_pages_through_the_history_newest_first() {
        let (host, store) = (host(), store());
        for _ in 0..5 {
            host.answer(204, &[], "");
            let id = body(&trigger(&host, &store, ADMIN, ""))["dispatch_id"]
                .as_str()
                .unwrap()
                .to_string();
            finalize(
                &host,
                &store,
                &format!("f{id}"),
                &json!({"event": "failed", "dispatch_id": id, "workflow_run_id": 1, "run_attempt": 1}),
            );
            host.now.set(host.now.get() + 1000);
        }
        let get = |q: &str| {
            let req = Request::new(
                "GET",
                &format!("http://x/functions/v1/backup-status?{q}"),
                vec![(
                    "authorization".into(),
                    format!("Bearer {}", token(&host, ADMIN)),
                )],
                vec![],
            );
            block_on(app::handle(&host, &store, "backup-status", &req))
        };
        let first = body(&get("limit=2"));
        assert_eq!(first["runs"].as_array().unwrap().len(), 2);
        let cursor = first["next_cursor"].as_str().unwrap().to_string();
        let second = body(&get(&format!("limit=3&cursor={cursor}")));
        assert_eq!(second["runs"].as_array().unwrap().len(), 3);
        assert_eq!(second["next_cursor"], Value::Null);
        let all: Vec<Value> = first["runs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["runs"].as_array().unwrap())
            .map(|r| r["created_at"].clone())
            .collect();
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| b.as_str().cmp(&a.as_str()));
        assert_eq!(all, sorted, "newest first");
    }

    fn status_get(
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

    #[test]
    fn a_long_poll_waits_for_a_weak_etag_as_for_a_strong_one() {
        let (host, store) = (host(), store());
        let id = dispatched(&host, &store);
        let first = status_get(&host, &store, &format!("dispatch_id={id}"), None);
        assert_eq!(first.status, 200);
        let tag = first.header("etag").unwrap().to_string();
        for seen in [tag.clone(), format!("W/{tag}")] {
            let before = host.now.get();
            let r = status_get(
                &host,
                &store,
                &format!("dispatch_id={id}&wait=5"),
                Some(&seen),
            );
            assert_eq!(r.status, 304, "{seen}");
            assert_eq!(r.header("etag"), Some(tag.as_str()));
            assert!(
                host.now.get() - before >= 5_000,
                "{seen}: it waited for the full 5 s"
            );
        }
    }
    #[test]
    fn reconcile_backups_records_its_sweeps_and_trigger_backups_quick_sweep_does_not() {
        let (host, store) = (service_host(), store());
        let stuck = dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        // The quick sweep before a 409 ends the stuck run, unrecorded.
        host.answer(500, &[], "");
        host.answer(200, &[], r#"{"workflow_run_id": 5000}"#);
        assert_eq!(trigger(&host, &store, ADMIN, "").status, 202);
        assert_eq!(
            store.runs.borrow()[0].dispatch_id.to_string(),
            stuck,
            "the stuck run"
        );
        assert_eq!(
            store.runs.borrow()[0].failure_reason,
            Some(FailureReason::Lost)
        );
        assert_eq!(*store.sweeps.borrow(), vec![]);

        let first = host.now.get();
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        host.now.set(first + 30_000);
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        // The new run is younger than the grace period: GitHub is not asked.
        assert_eq!(
            *store.sweeps.borrow(),
            vec![
                (first, "skipped".into()),
                (first + 30_000, "skipped".into())
            ]
        );
        // A refused caller is not a sweep.
        assert_eq!(sweep_req(&host, &store, "wrong").status, 401);
        assert_eq!(store.sweeps.borrow().len(), 2);
    }

    #[test]
    fn a_sweep_that_ends_a_run_is_recorded_as_changed() {
        let (host, store) = (service_host(), store());
        dispatched(&host, &store);
        host.now.set(host.now.get() + 11 * 60_000);
        host.answer(404, &[], "");
        let r = sweep_req(&host, &store, "service-key");
        assert_eq!(body(&r)["changed"].as_array().unwrap().len(), 1);
        assert_eq!(
            *store.sweeps.borrow(),
            vec![(host.now.get(), "changed".into())]
        );
    }

    #[test]
    fn the_history_reports_the_sweeper_and_the_single_run_answer_does_not() {
        let (host, store) = (service_host(), store());
        let page = |host: &FakeHost| body(&status_get(host, &store, "", None))["sweeper"].clone();
        assert_eq!(
            page(&host),
            json!({"last_run_at": null, "healthy": false, "problem": null})
        );
        *store.sweep_problem.borrow_mut() = Some("pg_net is not enabled".into());
        let ran = host.now.get();
        sweep_req(&host, &store, "service-key");
        assert_eq!(
            page(&host),
            json!({"last_run_at": crate::time::iso8601(ran), "healthy": true, "problem": "pg_net is not enabled"})
        );
        host.now.set(ran + 4 * 60_000);
        assert_eq!(
            page(&host),
            json!({"last_run_at": crate::time::iso8601(ran), "healthy": false, "problem": "pg_net is not enabled"})
        );
        let id = dispatched(&host, &store);
        let one = body(&status_get(
            &host,
            &store,
            &format!("dispatch_id={id}"),
            None,
        ));
        assert_eq!(one.as_object().unwrap().keys().collect::<Vec<_>>(), ["run"]);
    }

    // --- user tokens without a held secret, key rotation, service keys ---

    const AUTH_URL: &str = "https://ref.supabase.co";
    const PUBLISHABLE: &str = "sb_publishable_test";

    /// A host configured as hosted Supabase configures a function: no JWT
    /// secret, an injected key set, the project URL and its API keys.
    fn hosted(jwks: &Value) -> FakeHost {
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

    fn status_with(host: &FakeHost, store: &MemStore, token: &str) -> Response {
        let req = Request::new(
            "GET",
            "http://x/functions/v1/backup-status?limit=1",
            vec![("authorization".into(), format!("Bearer {token}"))],
            vec![],
        );
        block_on(app::handle(host, store, "backup-status", &req))
    }

    fn hs256_claims(host: &FakeHost, sub: &str, ttl_secs: i64) -> Value {
        json!({"sub": sub, "role": "authenticated", "aud": "authenticated", "exp": host.now_ms() / 1000 + ttl_secs})
    }

    fn ec_key(kid: &str) -> Value {
        use base64::Engine;
        let b64 = |b: [u8; 32]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": b64([1; 32]), "y": b64([2; 32])})
    }

    /// An ES256 token under `kid`; its signature is the host's to judge
    /// (`FakeHost::signature_ok`).
    fn es256_token(host: &FakeHost, kid: &str, sub: &str) -> String {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = b64(json!({"alg": "ES256", "kid": kid}).to_string().as_bytes());
        let claims = b64(hs256_claims(host, sub, 600).to_string().as_bytes());
        format!("{header}.{claims}.{}", b64(&[9; 64]))
    }

    fn auth_says_user(host: &FakeHost, id: &str) {
        host.answer(
            200,
            &[],
            &json!({"id": id, "aud": "authenticated", "role": "authenticated"}).to_string(),
        );
    }

    fn error_code(r: &Response) -> Value {
        body(r)["error"]["code"].clone()
    }

    #[test]
    fn an_hs256_token_verifies_against_an_oct_key_of_the_injected_jwks() {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JWT_SECRET);
        let (host, store) = (
            hosted(&json!({"keys": [ec_key("es-1"), {"kty": "oct", "k": k}]})),
            store(),
        );
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 200, "{}", r.body);
        let r = status_with(&host, &store, &token(&host, OTHER));
        assert_eq!(r.status, 403);
        let forged = sign_hs256(
            b"not-the-project-secret-not-the-project",
            &hs256_claims(&host, ADMIN, 600),
        );
        let r = status_with(&host, &store, &forged);
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "invalid_token");
        assert!(
            host.fetched.borrow().is_empty(),
            "no JWKS fetch, no Auth call"
        );
    }

    #[test]
    fn an_hs256_token_without_a_held_key_is_accepted_when_auth_answers_for_its_sub() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        let t = token(&host, ADMIN);
        auth_says_user(&host, ADMIN);
        let r = status_with(&host, &store, &t);
        assert_eq!(r.status, 200, "{}", r.body);
        let fetched = host.fetched.borrow();
        assert_eq!(fetched.len(), 1);
        assert_eq!(fetched[0].method, "GET");
        assert_eq!(fetched[0].url, "https://ref.supabase.co/auth/v1/user");
        let header = |n: &str| {
            fetched[0]
                .headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("authorization"), Some(format!("Bearer {t}")));
        assert_eq!(header("apikey").as_deref(), Some(PUBLISHABLE));
    }

    #[test]
    fn auth_is_asked_with_the_legacy_anon_key_when_there_is_no_publishable_key() {
        let (mut host, store) = (hosted(&json!({"keys": []})), store());
        host.env.remove("SUPABASE_PUBLISHABLE_KEYS");
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &token(&host, ADMIN)).status, 200);
        let fetched = host.fetched.borrow();
        assert!(fetched[0]
            .headers
            .contains(&("apikey".into(), "eyJ-legacy-anon".into())));
    }

    #[test]
    fn a_token_auth_refuses_is_a_401_and_auth_down_is_a_502() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        for status in [401, 403] {
            host.answer(
                status,
                &[],
                r#"{"code":401,"error_code":"bad_jwt","msg":"invalid JWT"}"#,
            );
            let r = status_with(&host, &store, &token(&host, ADMIN));
            assert_eq!(r.status, 401, "Auth answered {status}");
            assert_eq!(
                body(&r),
                json!({"error": {"code": "invalid_token", "message": "the access token is invalid or expired"}})
            );
        }
        host.fetch_answers
            .borrow_mut()
            .push_back(Err("connection refused".into()));
        host.answer(503, &[], "upstream connect error");
        for _ in 0..2 {
            let r = status_with(&host, &store, &token(&host, ADMIN));
            assert_eq!(r.status, 502);
            assert_eq!(
                body(&r),
                json!({"error": {"code": "upstream_unavailable", "message": "an upstream service is unavailable"}})
            );
        }
        assert_eq!(
            host.fetched.borrow().len(),
            4,
            "refusals are not remembered"
        );
    }

    #[test]
    fn auth_answering_for_another_user_is_a_401() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        auth_says_user(&host, OTHER);
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "invalid_token");
    }

    #[test]
    fn auths_yes_is_remembered_for_60_seconds_and_never_past_exp() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        let t = token(&host, ADMIN);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        host.now.set(host.now.get() + 59_000);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        assert_eq!(host.fetched.borrow().len(), 1, "served from memory");
        host.now.set(host.now.get() + 2_000);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        assert_eq!(host.fetched.borrow().len(), 2, "asked again after 60 s");

        // A token expiring in 20 s is remembered for 20 s only (the 30 s
        // leeway on exp still lets its claims pass after that).
        let short = sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, 20));
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &short).status, 200);
        host.now.set(host.now.get() + 21_000);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &short).status, 200);
        assert_eq!(
            host.fetched.borrow().len(),
            4,
            "asked again once exp passed"
        );

        // Another token of the same user is another question.
        host.answer(401, &[], "{}");
        let other = sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, 601));
        assert_eq!(status_with(&host, &store, &other).status, 401);
    }

    #[test]
    fn junk_never_reaches_auth() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        let mut bad = vec![
            sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, -120)),
            sign_hs256(
                JWT_SECRET.as_bytes(),
                &hs256_claims(&host, "not-a-uuid", 600),
            ),
            "not.a.jwt".to_string(),
        ];
        let mut anon = hs256_claims(&host, ADMIN, 600);
        anon["role"] = json!("anon");
        bad.push(sign_hs256(JWT_SECRET.as_bytes(), &anon));
        for t in bad {
            let r = status_with(&host, &store, &t);
            assert_eq!(r.status, 401, "{t}");
        }
        assert!(host.fetched.borrow().is_empty());
    }

    #[test]
    fn auth_cannot_be_asked_without_an_api_key_or_a_project_url() {
        let (mut host, store) = (hosted(&json!({"keys": []})), store());
        host.env.remove("SUPABASE_PUBLISHABLE_KEYS");
        host.env.remove("SUPABASE_ANON_KEY");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: SUPABASE_PUBLISHABLE_KEYS (or SUPABASE_ANON_KEY) is not set: \
             Supabase Auth cannot be asked about HS256 access tokens without an API key"
        );
        host.env.remove("SUPABASE_URL");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 401, "no key and no one to ask: refused");
        assert!(host.fetched.borrow().is_empty());
    }

    #[test]
    fn no_key_source_at_all_is_a_500_naming_backup_jwt_secret() {
        let (mut host, store) = (host(), store());
        host.env.remove("BACKUP_JWT_SECRET");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 500);
        assert_eq!(error_code(&r), "config_missing");
        assert!(body(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BACKUP_JWT_SECRET"));
    }

    #[test]
    fn a_kid_missing_from_the_injected_jwks_is_found_by_one_refetch() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(
            200,
            &[],
            &json!({"keys": [ec_key("es-1"), ec_key("es-2")]}).to_string(),
        );
        let rotated = es256_token(&host, "es-2", ADMIN);
        assert_eq!(status_with(&host, &store, &rotated).status, 200);
        assert_eq!(
            host.fetched.borrow()[0].url,
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
        );
        // Injected keys still count, and the fetched set is kept.
        assert_eq!(
            status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
            200
        );
        assert_eq!(status_with(&host, &store, &rotated).status, 200);
        assert_eq!(host.fetched.borrow().len(), 1);
    }

    #[test]
    fn the_jwks_is_refetched_at_most_once_a_minute() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(200, &[], &json!({"keys": [ec_key("es-1")]}).to_string());
        for _ in 0..3 {
            let r = status_with(&host, &store, &es256_token(&host, "unknown", ADMIN));
            assert_eq!(r.status, 401);
            assert_eq!(error_code(&r), "invalid_token");
        }
        assert_eq!(host.fetched.borrow().len(), 1, "one fetch for three misses");
        host.now.set(host.now.get() + 60_000);
        host.answer(200, &[], &json!({"keys": [ec_key("unknown")]}).to_string());
        let r = status_with(&host, &store, &es256_token(&host, "unknown", ADMIN));
        assert_eq!(r.status, 200, "a minute later the set is fetched again");
        assert_eq!(host.fetched.borrow().len(), 2);
    }

    #[test]
    fn a_failed_refetch_is_a_502_until_the_next_attempt_is_due() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(503, &[], "");
        for _ in 0..2 {
            let r = status_with(&host, &store, &es256_token(&host, "es-2", ADMIN));
            assert_eq!(r.status, 502);
            assert_eq!(error_code(&r), "upstream_unavailable");
        }
        assert_eq!(host.fetched.borrow().len(), 1);
        assert_eq!(
            status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
            200,
            "injected keys keep working"
        );
    }

    #[test]
    fn without_an_injected_jwks_the_fetched_set_is_kept_ten_minutes() {
        let (mut host, store) = (hosted(&json!({})), store());
        host.env.remove("SUPABASE_JWKS");
        host.signature_ok.set(true);
        host.answer(200, &[], &json!({"keys": [ec_key("es-1")]}).to_string());
        for _ in 0..3 {
            assert_eq!(
                status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
                200
            );
        }
        assert_eq!(host.fetched.borrow().len(), 1);
        host.now.set(host.now.get() + 10 * 60_000);
        host.answer(200, &[], &json!({"keys": [ec_key("es-3")]}).to_string());
        let r = status_with(&host, &store, &es256_token(&host, "es-1", ADMIN));
        assert_eq!(
            r.status, 401,
            "a key dropped from the set is no longer accepted"
        );
        assert_eq!(host.fetched.borrow().len(), 2);
    }

    fn sweep_with(host: &FakeHost, store: &MemStore, headers: &[(&str, &str)]) -> Response {
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

    fn secret_keys_host() -> FakeHost {
        let mut h = host();
        h.env.insert(
            "SUPABASE_SECRET_KEYS".into(),
            json!({"default": "sb_secret_default_0123456789", "cron": "sb_secret_cron_0123456789"})
                .to_string(),
        );
        h
    }

    #[test]
    fn the_sweep_accepts_any_secret_key_in_apikey_or_as_a_bearer_token() {
        let (host, store) = (secret_keys_host(), store());
        for key in ["sb_secret_default_0123456789", "sb_secret_cron_0123456789"] {
            let bearer = format!("Bearer {key}");
            for headers in [
                vec![("apikey", key)],
                vec![("authorization", bearer.as_str())],
                vec![("authorization", bearer.as_str()), ("apikey", key)],
                // A client library sends the publishable key beside it.
                vec![("authorization", bearer.as_str()), ("apikey", PUBLISHABLE)],
            ] {
                let r = sweep_with(&host, &store, &headers);
                assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
                assert_eq!(
                    body(&r),
                    json!({"checked": 0, "changed": [], "github": "skipped"})
                );
            }
        }
    }

    #[test]
    fn the_sweep_refuses_a_wrong_or_partial_key() {
        let (mut host, store) = (secret_keys_host(), store());
        host.env
            .insert("SUPABASE_SERVICE_ROLE_KEY".into(), "eyJ-service".into());
        for wrong in [
            "sb_secret_default_012345678",
            "sb_secret_default_01234567890",
            "sb_publishable_test",
            "",
            "eyJ-servic",
        ] {
            let r = sweep_with(
                &host,
                &store,
                &[("apikey", wrong), ("authorization", "Bearer nope")],
            );
            assert_eq!(r.status, 401, "{wrong:?}");
            assert_eq!(error_code(&r), "invalid_token");
        }
        assert_eq!(
            sweep_with(&host, &store, &[("apikey", "eyJ-service")]).status,
            200
        );
        let none = sweep_with(&host, &store, &[("authorization", "Basic x")]);
        assert_eq!(none.status, 401);
        assert_eq!(error_code(&none), "missing_token");
    }

    #[test]
    fn the_sweep_without_any_service_key_configured_is_a_500_naming_the_secret_keys() {
        let (host, store) = (host(), store());
        let r = sweep_with(&host, &store, &[("apikey", "sb_secret_x")]);
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: SUPABASE_SECRET_KEYS (or the legacy SUPABASE_SERVICE_ROLE_KEY) \
             is not set (or sign the request with BACKUP_WEBHOOK_SECRET)"
        );
        let r = sweep_with(&host, &store, &[]);
        assert_eq!(
            r.status, 401,
            "no credentials: 401 before any configuration question"
        );
        assert_eq!(error_code(&r), "missing_token");
    }

    // --- writes under contention (issue 10) --------------------------------

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
            for progress in [None, Some(json!({"phase": "upload"}))] {
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
        assert_eq!(row.progress, Some(json!({"phase": "dump"})));
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
        assert_eq!(block_on(store.update(&read, &verdict, None)), Ok(None));
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
        let saved = block_on(store.update(&read, &verdict, None))
            .unwrap()
            .unwrap();
        assert_eq!(saved.status, Status::Failed);
        assert_eq!(saved.failure_reason, Some(FailureReason::TimedOut));
        assert_eq!(
            saved.progress,
            Some(json!({"phase": "done"})),
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
        assert_eq!(row.progress, Some(json!({"phase": "dump"})));
    }
}
