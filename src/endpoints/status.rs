//! `GET /functions/v1/backup-status`: what the frontend shows.
//!
//! - `?dispatch_id=…` one run; add `&wait=N` (seconds, at most 25) to
//!   long-poll: the answer comes as soon as the run differs from the
//!   client's `If-None-Match`, or when the wait ends (then 304). Wake-ups
//!   come from PostgreSQL `LISTEN backup_history` (the migration's trigger
//!   notifies on every change), not from a sleep loop, except where LISTEN
//!   cannot work: then the run is re-read every second ([`change_feed`]).
//! - no `dispatch_id`: the history, newest first, `limit` (1–100, default
//!   20) rows per page, `cursor` from the previous page's `next_cursor`,
//!   and `sweeper`: whether the scheduled sweep that ends silent runs is
//!   alive, `{"last_run_at", "healthy", "problem"}`. `last_run_at` is the
//!   last sweep `reconcile-backups` ran (ISO 8601, or null: never);
//!   `healthy` is whether that was within [`SWEEPER_STALE_MS`] (3 minutes:
//!   pg_cron calls it every minute); `problem` is why the database could
//!   not call it (pg_net not enabled, a Vault secret not set), or null. It
//!   is in the history answer only: the one-run answer is what long-polls
//!   compare, and a field that changes with the clock would end every wait.
//!
//! The history answer also lists the newest notifications
//! (`notifications`, at most [`NOTIFICATIONS_SHOWN`]) and their delivery
//! state ([`crate::alerts`]).
//!
//! Every answer carries an `ETag`; a matching `If-None-Match` gets 304.
//!
//! `POST` with `{"action":"send_test_alert"}` queues a test alert to every
//! configured destination and sends it at once; the answer is what was sent
//! and the newest notifications, as in the history answer.
//!
//! A successful run whose object retention has not deleted carries
//! `download_url`, a presigned S3 GET valid five minutes ([`crate::presign`]),
//! when download links are configured; otherwise the member is absent.
//! The link is signed afresh for every 200 and is left out of the ETag:
//! it changes every second, and a tag that did would end every long-poll
//! at once. A client that needs a fresh link asks without `If-None-Match`.

use crate::alerts;
use crate::config;
use crate::credentials::auth;
use crate::dispatch_id::DispatchId;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::change_feed;
use crate::ports::store::{Cursor, Store, SweeperRecord};
use crate::ports::{Host, Level};
use crate::presign::S3Download;
use crate::progress;
use crate::run::{FailureReason, Run, Status, TriggerSource};
use crate::time::iso8601;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use uuid::Uuid;

/// The longest long-poll, in seconds: well inside the Edge Function
/// wall-clock limit (150 s) and the usual proxy idle timeouts (60 s).
pub const MAX_WAIT_SECONDS: u32 = 25;
/// The largest page.
pub const MAX_LIMIT: u32 = 100;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 20;
/// How long after its last sweep the sweeper still counts as healthy.
/// pg_cron calls it every minute: a late or failed minute or two (a
/// restart, a slow GitHub) is not yet worth a warning; three are.
pub const SWEEPER_STALE_MS: i64 = 3 * 60_000;
/// How many of the newest notifications the history answer lists.
pub const NOTIFICATIONS_SHOWN: u32 = 20;

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    One { id: DispatchId, wait_ms: u32 },
    Page { limit: u32, before: Option<Cursor> },
}

/// Parses the query string.
///
/// # Errors
/// [`Error::InvalidParameter`] naming the parameter.
pub fn parse_query(req: &Request) -> Result<Query, Error> {
    if let Some(unknown) = req
        .query_names()
        .find(|n| !matches!(*n, "dispatch_id" | "wait" | "limit" | "cursor"))
    {
        return Err(Error::parameter(unknown, "is not a known parameter"));
    }
    let number = |name: &str, min: u32, max: u32| -> Result<Option<u32>, Error> {
        req.query_param(name)
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        Error::parameter(name, format!("must be an integer from {min} to {max}"))
                    })
            })
            .transpose()
    };
    match req.query_param("dispatch_id") {
        Some(id) => {
            if req.query_param("limit").is_some() || req.query_param("cursor").is_some() {
                return Err(Error::parameter(
                    "dispatch_id",
                    "cannot be combined with limit or cursor",
                ));
            }
            let id = DispatchId::parse("dispatch_id", &id).map_err(|_| {
                Error::parameter("dispatch_id", "must be a UUID (8-4-4-4-12 hex digits)")
            })?;
            let wait = number("wait", 0, MAX_WAIT_SECONDS)?.unwrap_or(0);
            Ok(Query::One {
                id,
                wait_ms: wait * 1000,
            })
        }
        None => {
            if req.query_param("wait").is_some() {
                return Err(Error::parameter("wait", "needs a dispatch_id"));
            }
            let limit = number("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
            let before = req
                .query_param("cursor")
                .map(|c| {
                    parse_cursor(&c).ok_or_else(|| {
                        Error::parameter("cursor", "is not a cursor from next_cursor")
                    })
                })
                .transpose()?;
            Ok(Query::Page { limit, before })
        }
    }
}

/// The latest history position a cursor may name: the end of year 9999,
/// in microseconds. PostgreSQL's own limit is near year 294,276; anything
/// past this is no position we ever issued, and must be a 400 rather than
/// reach SQL as a timestamp out of range.
const MAX_CURSOR_US: i64 = 253_402_300_799_999_999;

/// `{created_us}_{id}` as `next_cursor` writes it, range-checked: times from
/// the epoch to [`MAX_CURSOR_US`], ids from 1 (a `bigserial`).
fn parse_cursor(s: &str) -> Option<Cursor> {
    let (us, id) = s.split_once('_')?;
    let us: i64 = us.parse().ok()?;
    let id: i64 = id.parse().ok()?;
    ((0..=MAX_CURSOR_US).contains(&us) && id >= 1).then_some((us, id))
}

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
    auth::admin(host, store, req).await?;
    if req.method == "POST" {
        return action(host, store, req).await;
    }
    let seen = req.header("if-none-match").map(str::to_string);
    let links = download_signer(host);
    match parse_query(req)? {
        Query::Page { limit, before } => {
            let runs = store.list(limit + 1, before).await?;
            let more = runs.len() > limit as usize;
            let page = &runs[..runs.len().min(limit as usize)];
            let next = if more {
                page.last().map(|(_, (us, id))| format!("{us}_{id}"))
            } else {
                None
            };
            let sweeper = store.sweeper().await?;
            let notes = store.notifications(NOTIFICATIONS_SHOWN).await?;
            let mut answer = Page {
                runs: page.iter().map(|(r, _)| view(r)).collect(),
                next_cursor: next,
                sweeper: sweeper_view(&sweeper, host.now_ms()),
                notifications: notes.iter().map(alerts::view).collect(),
            };
            let mut body = Tagged::new(&answer);
            if let Some(signer) = &links {
                let now = host.now_ms();
                for (v, (r, _)) in answer.runs.iter_mut().zip(page) {
                    v.download_url = signer.link(r, now);
                }
                body = body.with_text(&answer);
            }
            Ok(body.answer(seen.as_deref()))
        }
        Query::One { id, wait_ms } => {
            let deadline = host.now_ms() + i64::from(wait_ms);
            loop {
                // Take the change counter before reading, so a change that
                // lands between the read and the wait still wakes us. `None`:
                // this instance cannot LISTEN (a transaction pooler, or LISTEN
                // failed), so the wait is a re-read every second instead.
                let seq = if wait_ms > 0 {
                    change_feed::watch(host, id).await
                } else {
                    None
                };
                let run = store.get(id).await?.ok_or(Error::UnknownDispatchId)?;
                let mut answer = One { run: view(&run) };
                let body = Tagged::new(&answer);
                let unchanged = body.seen_by(seen.as_deref());
                let remaining = deadline - host.now_ms();
                if !unchanged || remaining <= 0 || wait_ms == 0 {
                    // Signed only for a 200: a 304 carries no body.
                    answer.run.download_url = links
                        .as_ref()
                        .filter(|_| !unchanged)
                        .and_then(|s| s.link(&run, host.now_ms()));
                    let body = match answer.run.download_url {
                        Some(_) => body.with_text(&answer),
                        None => body,
                    };
                    return Ok(body.answer(seen.as_deref()));
                }
                match seq {
                    Some(seq) => {
                        host.wait_for_change(id, seq, remaining as u32).await;
                    }
                    None => {
                        let pause = change_feed::POLL_INTERVAL_MS.min(remaining as u32);
                        host.sleep(pause).await;
                    }
                }
            }
        }
    }
}

crate::json_object! {
    /// The body of a POST: `{"action": "send_test_alert"}`.
    struct ActionBody {
        action: String,
    }
}

/// The one action: send a test alert to every destination.
async fn action(host: &impl Host, store: &impl Store, req: &Request) -> Result<Response, Error> {
    req.check_size()?;
    req.require_json()?;
    let body: ActionBody = crate::body::parse(&req.body, |_| "must be a string")?;
    if let Some(unknown) = body.unknown {
        return Err(Error::field(
            &unknown,
            "is not a known field (only action is accepted)",
        ));
    }
    match body.action.as_deref() {
        Some("send_test_alert") => {}
        Some(_) => return Err(Error::field("action", "must be send_test_alert")),
        None => return Err(Error::field("action", "is required")),
    }
    let sent = alerts::send_test(host, store).await?;
    let notes = store.notifications(NOTIFICATIONS_SHOWN).await?;
    Ok(Response::json(
        200,
        &TestAlert {
            sent,
            notifications: notes.iter().map(alerts::view).collect(),
        },
    ))
}

/// The answer to a test alert.
#[derive(Serialize)]
struct TestAlert<'a> {
    sent: alerts::Sent,
    notifications: Vec<alerts::NotificationView<'a>>,
}

/// A JSON body, serialized once, with its strong ETag (the first 96 bits
/// of its SHA-256).
struct Tagged {
    text: String,
    tag: String,
}

impl Tagged {
    fn new(body: &impl Serialize) -> Self {
        // Only maps with non-string keys fail to serialize; no answer has one.
        let text = serde_json::to_string(body).unwrap_or_default();
        let digest = Sha256::digest(text.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut tag = String::with_capacity(26);
        tag.push('"');
        for b in &digest[..12] {
            tag.push(char::from(HEX[usize::from(b >> 4)]));
            tag.push(char::from(HEX[usize::from(b & 15)]));
        }
        tag.push('"');
        Tagged { text, tag }
    }

    /// The same tag with the text of `body`: the tagged body plus what the
    /// tag leaves out (download links).
    fn with_text(self, body: &impl Serialize) -> Self {
        Tagged {
            text: serde_json::to_string(body).unwrap_or_default(),
            tag: self.tag,
        }
    }

    /// Whether `If-None-Match` (a list, weak or strong) names this body.
    fn seen_by(&self, if_none_match: Option<&str>) -> bool {
        if_none_match.is_some_and(|s| {
            s.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == self.tag)
        })
    }

    /// 304 when the client has this body, else 200 with it; both tagged.
    fn answer(self, if_none_match: Option<&str>) -> Response {
        let response = if self.seen_by(if_none_match) {
            Response::empty(304).with_header("cache-control", "no-cache")
        } else {
            Response::json_text(200, self.text)
        };
        response.with_header("etag", self.tag)
    }
}

/// The history answer.
#[derive(Serialize)]
struct Page<'a> {
    runs: Vec<RunView<'a>>,
    next_cursor: Option<String>,
    sweeper: SweeperView<'a>,
    notifications: Vec<alerts::NotificationView<'a>>,
}

/// The one-run answer (no sweeper: its ETag must change only with the run).
#[derive(Serialize)]
struct One<'a> {
    run: RunView<'a>,
}

/// A run as the frontend shows it: everything useful in the row, times in
/// ISO 8601, the duration, and the phase a progress bar can show.
#[derive(Debug, Serialize)]
pub struct RunView<'a> {
    pub dispatch_id: DispatchId,
    pub status: Status,
    pub phase: Cow<'a, str>,
    pub failure_reason: Option<FailureReason>,
    pub error_text: Option<&'a str>,
    pub trigger_source: TriggerSource,
    pub triggered_by: Option<Uuid>,
    pub reason: Option<&'a str>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: String,
    pub duration_ms: Option<i64>,
    pub s3_key: Option<&'a str>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<&'a str>,
    pub workflow_run_id: Option<u64>,
    pub run_attempt: u32,
    pub run_url: Option<&'a str>,
    /// The open `progress` object, written out as the workflow sent it.
    pub progress: Option<&'a RawValue>,
    /// The workflow's check of the stored object, as it reported it.
    pub verification: Option<&'a RawValue>,
    /// Present, and true, only when the check failed: the run is still a
    /// success (the object exists), and this is what a client must not miss.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verification_failed: bool,
    /// When retention deleted the object.
    pub pruned_at: Option<String>,
    /// A presigned GET of the object, valid [`crate::presign::EXPIRES_SECONDS`]:
    /// absent unless links are configured and the run is a success whose
    /// object still exists. Set by the endpoint, never by [`view`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

/// The view of `run`.
pub fn view(run: &Run) -> RunView<'_> {
    // Only a finished run has a duration: a running one's would change
    // every millisecond, and so would its ETag, and a long-poll could never
    // wait. Clients show the elapsed time from started_at themselves.
    let begun = run.started_at.unwrap_or(run.created_at);
    RunView {
        dispatch_id: run.dispatch_id,
        status: run.status,
        phase: phase(run),
        failure_reason: run.failure_reason,
        error_text: run.error_text.as_deref(),
        trigger_source: run.trigger_source,
        triggered_by: run.triggered_by,
        reason: run.reason.as_deref(),
        created_at: iso8601(run.created_at),
        started_at: run.started_at.map(iso8601),
        finished_at: run.finished_at.map(iso8601),
        updated_at: iso8601(run.updated_at),
        duration_ms: run.finished_at.map(|end| (end - begun).max(0)),
        s3_key: run.s3_key.as_deref(),
        size_bytes: run.size_bytes,
        sha256: run.sha256.as_deref(),
        workflow_run_id: run.workflow_run_id,
        run_attempt: run.run_attempt,
        run_url: run.run_url.as_deref(),
        // Stored from a validated object; text that no longer parses is
        // left out rather than sent broken.
        progress: run
            .progress
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        verification: run
            .verification
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok()),
        verification_failed: run.verification_failed,
        pruned_at: run.pruned_at.map(iso8601),
        download_url: None,
    }
}

/// What signs download links, when they are configured. Settings given in
/// part are logged by name and leave links off: the history and a run's
/// progress matter more than a link, and must not fail with them.
fn download_signer(host: &impl Host) -> Option<S3Download> {
    config::s3_download(host).unwrap_or_else(|e| {
        host.log(
            Level::Warn,
            &format!("backup-status: no download links: {e}"),
        );
        None
    })
}

/// Whether the sweeper ran within the last [`SWEEPER_STALE_MS`]. A sweep
/// recorded in the future (the function's clock behind the one that wrote
/// it) counts as recent.
pub fn sweeper_healthy(last_run_at: Option<i64>, now_ms: i64) -> bool {
    last_run_at.is_some_and(|at| now_ms - at <= SWEEPER_STALE_MS)
}

/// The history answer's `sweeper` object.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct SweeperView<'a> {
    pub last_run_at: Option<String>,
    pub healthy: bool,
    pub problem: Option<&'a str>,
}

/// The view of the sweeper's record at `now_ms`.
pub fn sweeper_view(record: &SweeperRecord, now_ms: i64) -> SweeperView<'_> {
    SweeperView {
        last_run_at: record.last_run_at.map(iso8601),
        healthy: sweeper_healthy(record.last_run_at, now_ms),
        problem: record.problem.as_deref(),
    }
}

/// `queued` (dispatched, not started yet), `running`, the latest reported
/// progress phase (e.g. `dumped`, `uploaded`), or the final status.
pub fn phase(run: &Run) -> Cow<'_, str> {
    match run.status {
        Status::InProgress if run.started_at.is_none() => "queued".into(),
        Status::InProgress => run
            .progress
            .as_deref()
            // `progress` is the one open object: the workflow may report any
            // members; `phase`, when it is a short string, is the one shown.
            .and_then(progress::phase)
            .filter(|p| !p.is_empty() && p.len() <= 40)
            .map_or("running".into(), Cow::Owned),
        other => other.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(query: &str) -> Request {
        Request::new(
            "GET",
            &format!("http://x/functions/v1/backup-status?{query}"),
            vec![],
            vec![],
        )
    }

    const ID: &str = "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

    #[test]
    fn a_query_is_one_run_or_a_page() {
        assert_eq!(
            parse_query(&get(&format!("dispatch_id={ID}&wait=25"))),
            Ok(Query::One {
                id: DispatchId::parse("x", ID).unwrap(),
                wait_ms: 25_000
            })
        );
        assert_eq!(
            parse_query(&get("")),
            Ok(Query::Page {
                limit: 20,
                before: None
            })
        );
        assert_eq!(
            parse_query(&get("limit=5&cursor=1700000000000_42")),
            Ok(Query::Page {
                limit: 5,
                before: Some((1_700_000_000_000, 42))
            })
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let name = |q: &str| match parse_query(&get(q)).unwrap_err() {
            Error::InvalidParameter { name, .. } => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(name(&format!("dispatch_id={ID}&wait=26")), "wait");
        assert_eq!(name(&format!("dispatch_id={ID}&wait=-1")), "wait");
        assert_eq!(name(&format!("dispatch_id={ID}&wait=soon")), "wait");
        assert_eq!(name("dispatch_id=12345"), "dispatch_id");
        assert_eq!(name("wait=5"), "wait");
        assert_eq!(name("limit=0"), "limit");
        assert_eq!(name("limit=101"), "limit");
        assert_eq!(name("cursor=abc"), "cursor");
        assert_eq!(name("status=failed"), "status");
        assert_eq!(name(&format!("dispatch_id={ID}&limit=2")), "dispatch_id");
    }

    #[test]
    fn a_bounded_parameter_names_the_range_it_was_refused_for() {
        let message = |q: &str| match parse_query(&get(q)).unwrap_err() {
            Error::InvalidParameter { message, .. } => message,
            other => panic!("{other:?}"),
        };
        for q in ["limit=0", "limit=101"] {
            assert_eq!(message(q), "must be an integer from 1 to 100", "{q}");
        }
        assert_eq!(
            message(&format!("dispatch_id={ID}&wait=26")),
            "must be an integer from 0 to 25"
        );
    }

    #[test]
    fn a_cursor_out_of_range_is_refused_before_it_reaches_sql() {
        assert_eq!(parse_cursor("0_1"), Some((0, 1)));
        assert_eq!(
            parse_cursor("253402300799999999_9223372036854775807"),
            Some((MAX_CURSOR_US, i64::MAX))
        );
        for forged in [
            "9223372036854775807_9223372036854775807",
            "253402300800000000_1",
            "-1_1",
            "1700000000000000_0",
            "1700000000000000_-5",
            "1700000000000000_9223372036854775808",
            "_1",
            "1_",
            "1_2_3",
        ] {
            assert_eq!(parse_cursor(forged), None, "{forged}");
        }
    }

    #[test]
    fn the_sweeper_is_healthy_for_three_minutes_after_its_last_sweep() {
        let now = 1_800_000_000_000;
        assert!(!sweeper_healthy(None, now), "never ran");
        assert!(sweeper_healthy(Some(now), now));
        assert!(sweeper_healthy(Some(now - 60_000), now));
        assert!(sweeper_healthy(Some(now - SWEEPER_STALE_MS), now));
        assert!(!sweeper_healthy(Some(now - SWEEPER_STALE_MS - 1), now));
        assert!(!sweeper_healthy(Some(now - 4 * 60_000), now));
        assert!(sweeper_healthy(Some(now + 5_000), now), "clock skew");
    }

    #[test]
    fn the_sweeper_view_shows_the_last_run_health_and_problem() {
        let now = 1_800_000_000_000;
        assert_eq!(
            serde_json::to_value(sweeper_view(&SweeperRecord::default(), now)).unwrap(),
            json!({"last_run_at": null, "healthy": false, "problem": null})
        );
        let stale = SweeperRecord {
            last_run_at: Some(now - 4 * 60_000),
            problem: Some("pg_net is not enabled".into()),
        };
        assert_eq!(
            serde_json::to_value(sweeper_view(&stale, now)).unwrap(),
            json!({"last_run_at": iso8601(now - 4 * 60_000), "healthy": false, "problem": "pg_net is not enabled"})
        );
    }

    #[test]
    fn a_matching_if_none_match_gets_304() {
        let body = || Tagged::new(&json!({"run": 1}));
        let tag = body().tag;
        assert_eq!(body().answer(Some(&tag)).status, 304);
        assert_eq!(body().answer(Some(&format!("W/{tag}"))).status, 304);
        assert_eq!(body().answer(Some(&format!("\"x\", {tag}"))).status, 304);
        assert_eq!(body().answer(Some("\"other\"")).status, 200);
        assert_eq!(body().answer(None).header("etag"), Some(tag.as_str()));
        assert_eq!(body().answer(None).body, r#"{"run":1}"#);
    }
}

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

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
}

/// Download links through whole requests (in-memory ports).
#[cfg(test)]
mod download_flows {
    use crate::testing::kit::*;

    fn with_links(host: &mut FakeHost) {
        for (k, v) in [
            ("BACKUP_S3_BUCKET", "wf-bucket"),
            ("BACKUP_S3_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("BACKUP_S3_ACCESS_KEY_ID", "AKIDREAD"),
            ("BACKUP_S3_SECRET_ACCESS_KEY", "read-only-secret-value"),
        ] {
            host.env.insert(k.into(), v.into());
        }
    }

    fn finished(host: &FakeHost, store: &MemStore, event: &str) -> String {
        let id = dispatched(host, store);
        let r = finalize(
            host,
            store,
            &format!("s{id}"),
            &json!({"event": event, "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1, "s3_key": "prod/a b.dump", "size_bytes": 3, "sha256": "b".repeat(64)}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        id
    }

    #[test]
    fn a_successful_run_carries_a_five_minute_link_left_out_of_its_etag() {
        let (mut host, store) = (host(), store());
        with_links(&mut host);
        let id = finished(&host, &store, "succeeded");
        let one = status_get(&host, &store, &format!("dispatch_id={id}"), None);
        assert_eq!(one.status, 200);
        let url = body(&one)["run"]["download_url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            url.starts_with("http://127.0.0.1:5000/wf-bucket/prod/a%20b.dump?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDREAD%2F"),
            "{url}"
        );
        assert!(url.contains("&X-Amz-Expires=300&"), "{url}");
        assert!(!one.body.contains("read-only-secret-value"));
        let page = body(&status_get(&host, &store, "", None));
        assert_eq!(page["runs"][0]["download_url"].as_str(), Some(url.as_str()));

        // A second later the link differs, the tag does not: a long-poll
        // with the tag waits, and a plain GET signs a fresh link.
        let tag = one.header("etag").unwrap().to_string();
        host.now.set(host.now.get() + 1000);
        let again = status_get(&host, &store, &format!("dispatch_id={id}"), None);
        assert_eq!(again.header("etag"), Some(tag.as_str()));
        assert_ne!(
            body(&again)["run"]["download_url"].as_str(),
            Some(url.as_str())
        );
        let waited = status_get(
            &host,
            &store,
            &format!("dispatch_id={id}&wait=3"),
            Some(&tag),
        );
        assert_eq!(waited.status, 304);

        let mut plain = self::host();
        plain.env.remove("BACKUP_S3_BUCKET");
        let without = status_get(&plain, &store, &format!("dispatch_id={id}"), None);
        assert_eq!(
            without.header("etag"),
            Some(tag.as_str()),
            "the tag is the run's"
        );
    }

    #[test]
    fn failed_running_and_pruned_runs_and_unconfigured_functions_get_no_link() {
        let (mut host, store) = (host(), store());
        with_links(&mut host);
        let failed = finished(&host, &store, "failed");
        let ok = finished(&host, &store, "succeeded");
        for run in store.runs.borrow_mut().iter_mut() {
            if run.dispatch_id.to_string() == ok {
                run.pruned_at = Some(host.now_ms());
            }
        }
        let r = body(&status_get(
            &host,
            &store,
            &format!("dispatch_id={ok}"),
            None,
        ));
        assert!(r["run"].get("download_url").is_none(), "pruned: {r}");
        let running = dispatched(&host, &store);
        for id in [&failed, &running] {
            let r = body(&status_get(
                &host,
                &store,
                &format!("dispatch_id={id}"),
                None,
            ));
            assert!(r["run"].get("download_url").is_none(), "{r}");
        }

        let plain = self::host();
        let fresh = crate::testing::kit::store();
        let id = finished(&plain, &fresh, "succeeded");
        let r = body(&status_get(
            &plain,
            &fresh,
            &format!("dispatch_id={id}"),
            None,
        ));
        assert_eq!(r["run"]["status"], "success");
        assert!(
            r["run"].get("download_url").is_none(),
            "absent, not null: {r}"
        );
        assert!(plain.logs.borrow().iter().all(|l| !l.contains("download")));
    }

    #[test]
    fn partial_link_settings_are_logged_by_name_and_leave_links_off() {
        let (mut host, store) = (host(), store());
        with_links(&mut host);
        host.env.remove("BACKUP_S3_ACCESS_KEY_ID");
        let id = finished(&host, &store, "succeeded");
        let r = status_get(&host, &store, &format!("dispatch_id={id}"), None);
        assert_eq!(r.status, 200);
        assert!(body(&r)["run"].get("download_url").is_none());
        let logs = host.logs.borrow().join("\n");
        assert!(
            logs.contains("backup-status: no download links: config_missing: server misconfigured: BACKUP_S3_ACCESS_KEY_ID is not set"),
            "{logs}"
        );
        assert!(!logs.contains("read-only-secret-value"), "{logs}");
    }
}
