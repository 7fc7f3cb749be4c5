//! Alerts: what a transition raises, and the sender of the outbox.
//!
//! An alert is a row of `backup_notifications`, inserted by the same SQL
//! statement as the transition that causes it (`sql/raise_alerts.sql`), so
//! it exists exactly when the transition committed. This module decides:
//!
//! - **what alerts** ([`transition`]): a run ending `failed` (for any
//!   reason), a success whose verification failed, and a success after
//!   either, or after a silence (a recovery, raised once by the database's
//!   guard on the singleton `backup_alert_state`); the dead man's switch
//!   ([`silence`]): no success for `alert_after_hours`, once per silence;
//! - **where** ([`labels`], [`destination`]): `BACKUP_ALERT_WEBHOOK_URL`
//!   with `BACKUP_ALERT_FORMAT` (`slack`, the default, or `json`) and
//!   `BACKUP_ALERT_WEBHOOK_SECRET`, and the same three with a suffix `_2` to
//!   `_9` for more destinations. A row names its destination by the URL's
//!   setting name: the URL is a secret;
//! - **what a message says** ([`request`]): Slack's `{"text": ...}` (which
//!   Discord and Mattermost accept too), or the event and the run as JSON,
//!   signed with Standard Webhooks;
//! - **when to try again** ([`settle`]): exponential backoff with jitter from
//!   the host's randomness, until [`GIVE_UP_MS`] after the event, then
//!   `dead`.
//!
//! [`deliver`] claims due rows (`FOR UPDATE SKIP LOCKED`, under a lease),
//! sends each with its fixed `webhook-id`, and settles it. It runs right
//! after a transition in `finalize-backup` ([`send_soon`], bounded) and on
//! every sweep ([`on_sweep`]), the safety net: a sender that dies between
//! sending and settling leaves the lease to expire, and the row is sent
//! again, with the same `webhook-id`. Delivery is at least once.

use crate::config::Env;
use crate::credentials::webhook::WebhookSecret;
use crate::error::Error;
use crate::http;
use crate::ports::github::OutboundRequest;
use crate::ports::store::{AlertClock, Store};
use crate::ports::{Host, Level};
use crate::run::{Run, Status};
use crate::time::iso8601;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How many destinations may be configured (no suffix, then `_2`..`_9`).
pub const MAX_DESTINATIONS: usize = 9;
/// The first retry waits about this long; each further one twice as long.
pub const FIRST_RETRY_MS: i64 = 30_000;
/// No wait between retries is longer than this.
pub const MAX_RETRY_MS: i64 = 3_600_000;
/// After this long since the event, a row that still fails is `dead`: an
/// alert a day late is noise, and the status API shows what was lost.
pub const GIVE_UP_MS: i64 = 24 * 3_600_000;
/// How long a claim keeps other senders off a row: well above a send's
/// timeout, so only a sender that died leaves a row to be claimed again.
pub const LEASE_MS: i64 = 120_000;
/// How long one send may take on the sweep's path.
pub const SEND_TIMEOUT_MS: u32 = 4_000;
/// How many rows a sweep sends at most (the rest wait for the next minute):
/// with the GitHub call before them, a sweep stays well inside a function's
/// time, and a slow receiver costs one minute's sweep 20 s at most.
pub const SWEEP_LIMIT: u32 = 5;
/// How many rows `finalize-backup` sends right after a transition, and how
/// long each may take: the workflow waits for that answer.
pub const SOON_LIMIT: u32 = 4;
pub const SOON_TIMEOUT_MS: u32 = 3_000;
/// How much of a run's error text a message carries: its end, where the
/// cause usually is.
pub const ERROR_TAIL_CHARS: usize = 500;

/// What a transition raises, as the core decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The run ended `failed`.
    Failed,
    /// The run succeeded, but the check of its object failed.
    VerificationFailed,
    /// The run succeeded: a recovery if a problem is open.
    Succeeded,
}

impl Transition {
    /// The name raise_alerts.sql knows.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Failed => "failed",
            Transition::VerificationFailed => "verification_failed",
            Transition::Succeeded => "succeeded",
        }
    }
}

/// What the transition from the run `prev` to `next` raises; `verdict` is
/// the verification the report carries (canonical JSON).
///
/// A failed run that fails again (an inferred failure corrected by the
/// workflow's own report) has already alerted; a successful run is final.
/// A later attempt (a GitHub re-run) reopens the run before its report
/// applies (run::apply_report), so its transition starts in progress: a
/// re-run whose only report is its failure alerts like any failure.
pub fn transition(prev: &Run, next: &Run, verdict: Option<&str>) -> Option<Transition> {
    let from = if next.run_attempt > prev.run_attempt {
        Status::InProgress
    } else {
        prev.status
    };
    match (from, next.status) {
        (_, Status::InProgress) | (Status::Success, _) | (Status::Failed, Status::Failed) => None,
        (Status::InProgress, Status::Failed) => Some(Transition::Failed),
        (_, Status::Success) if verdict.is_some_and(crate::verification::failed) => {
            Some(Transition::VerificationFailed)
        }
        (_, Status::Success) => Some(Transition::Succeeded),
    }
}

/// The alert half of a write: the parameters of `raise_alerts.sql`, less
/// the facts. Those are the run as written, rendered only when the write
/// is sent ([`Raise::params`]): a report that would end its run is decided
/// as a write before it goes through its lane, and under load most such
/// reports are repeats that the lane reads and never writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raise {
    /// What the transition raises; `None`: nothing.
    pub kind: Option<Transition>,
    /// The verdict the report carries, shown in the facts.
    verdict: Option<String>,
    /// The destinations' labels (a JSON array).
    pub to: String,
}

impl Raise {
    /// A write that raises nothing.
    pub fn none() -> Self {
        Raise::default()
    }

    /// What writing `next`, decided from the run `prev`, raises.
    pub fn of(env: &impl Env, prev: &Run, next: &Run, verdict: Option<&str>) -> Self {
        match transition(prev, next, verdict) {
            None => Raise::none(),
            kind => Raise {
                kind,
                verdict: verdict.map(str::to_owned),
                to: labels_json(env),
            },
        }
    }

    /// The facts of the message about `next`, the run as the write that
    /// raises this makes it (a JSON object).
    pub fn facts(&self, next: &Run) -> String {
        run_facts(next, self.verdict.as_deref())
    }

    /// `$kind`, `$facts`, `$to` of raise_alerts.sql, for the write of
    /// `next`.
    pub fn params(&self, next: &Run) -> [Option<String>; 3] {
        match self.kind {
            None => [None, None, None],
            Some(kind) => [
                Some(kind.as_str().into()),
                Some(self.facts(next)),
                Some(self.to.clone()),
            ],
        }
    }
}

/// A run as an alert's facts show it. Times ISO 8601.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RunFacts {
    pub dispatch_id: String,
    pub status: String,
    pub failure_reason: Option<String>,
    /// The end of the error text, with query strings cut from URLs.
    pub error_text: Option<String>,
    pub run_url: Option<String>,
    pub workflow_run_id: Option<u64>,
    pub run_attempt: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub s3_key: Option<String>,
    pub size_bytes: Option<u64>,
    pub verification: Option<Box<RawValue>>,
}

/// The last success known when the alert was raised (added by the SQL).
#[derive(Debug, Default, Deserialize)]
pub struct LastSuccess {
    pub dispatch_id: Option<String>,
    pub s3_key: Option<String>,
    pub finished_at: Option<String>,
}

/// An alert's facts: what every format is rendered from.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunFacts>,
    /// A silence's start (ISO 8601) and the setting it outlasted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_after_hours: Option<i64>,
    #[serde(default, skip_serializing)]
    pub last_success: Option<LastSuccess>,
}

fn json(facts: &Facts) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string(facts).unwrap_or_else(|_| "{}".into())
}

/// The facts of an alert about `run`.
pub fn run_facts(run: &Run, verdict: Option<&str>) -> String {
    json(&Facts {
        run: Some(RunFacts {
            dispatch_id: run.dispatch_id.to_string(),
            status: run.status.as_str().into(),
            failure_reason: run.failure_reason.map(|r| r.as_str().into()),
            error_text: run.error_text.as_deref().map(error_tail),
            run_url: run.run_url.clone(),
            workflow_run_id: run.workflow_run_id,
            run_attempt: run.run_attempt,
            started_at: run.started_at.map(iso8601),
            finished_at: run.finished_at.map(iso8601),
            s3_key: run.s3_key.clone(),
            size_bytes: run.size_bytes,
            verification: verdict
                .or(run.verification.as_deref())
                .and_then(|v| RawValue::from_string(v.to_string()).ok()),
        }),
        ..Facts::default()
    })
}

/// The end of an error text, at most [`ERROR_TAIL_CHARS`], without the
/// query strings of the URLs in it: a presigned S3 URL in an AWS CLI
/// message is a credential until it expires.
pub fn error_tail(text: &str) -> String {
    let redacted = redact_urls(text);
    let count = redacted.chars().count();
    if count <= ERROR_TAIL_CHARS {
        return redacted;
    }
    let tail: String = redacted.chars().skip(count - ERROR_TAIL_CHARS).collect();
    format!("…{tail}")
}

/// `text` with every `http://` or `https://` URL cut at its `?` or `#`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["https://", "http://"]
        .iter()
        .filter_map(|s| http::find(rest, s))
        .min()
    {
        out.push_str(&rest[..at]);
        let url_end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(rest.len(), |e| at + e);
        let url = &rest[at..url_end];
        match url.find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?[redacted]");
            }
            None => out.push_str(url),
        }
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    out
}

/// The facts of a silence that began at `since_ms`.
pub fn silence_facts(since_ms: i64, after_hours: i64) -> String {
    json(&Facts {
        silent_since: Some(iso8601(since_ms)),
        alert_after_hours: Some(after_hours),
        ..Facts::default()
    })
}

/// The start of the silence to raise now, if any: no success since
/// `clock.silent_since` for longer than `alert_after_hours`, and this
/// silence not raised yet.
pub fn silence(clock: &AlertClock, now_ms: i64) -> Option<i64> {
    let limit = clock.after_hours.saturating_mul(3_600_000);
    (now_ms - clock.silent_since > limit && clock.raised_for != Some(clock.silent_since))
        .then_some(clock.silent_since)
}

/// The setting names of each destination, in order: URL, format, secret.
/// Spelled out rather than formatted, since every report that would end
/// its run reads which destinations are set.
#[rustfmt::skip]
const NAMES: [[&str; 3]; MAX_DESTINATIONS] = [
    ["BACKUP_ALERT_WEBHOOK_URL", "BACKUP_ALERT_FORMAT", "BACKUP_ALERT_WEBHOOK_SECRET"],
    ["BACKUP_ALERT_WEBHOOK_URL_2", "BACKUP_ALERT_FORMAT_2", "BACKUP_ALERT_WEBHOOK_SECRET_2"],
    ["BACKUP_ALERT_WEBHOOK_URL_3", "BACKUP_ALERT_FORMAT_3", "BACKUP_ALERT_WEBHOOK_SECRET_3"],
    ["BACKUP_ALERT_WEBHOOK_URL_4", "BACKUP_ALERT_FORMAT_4", "BACKUP_ALERT_WEBHOOK_SECRET_4"],
    ["BACKUP_ALERT_WEBHOOK_URL_5", "BACKUP_ALERT_FORMAT_5", "BACKUP_ALERT_WEBHOOK_SECRET_5"],
    ["BACKUP_ALERT_WEBHOOK_URL_6", "BACKUP_ALERT_FORMAT_6", "BACKUP_ALERT_WEBHOOK_SECRET_6"],
    ["BACKUP_ALERT_WEBHOOK_URL_7", "BACKUP_ALERT_FORMAT_7", "BACKUP_ALERT_WEBHOOK_SECRET_7"],
    ["BACKUP_ALERT_WEBHOOK_URL_8", "BACKUP_ALERT_FORMAT_8", "BACKUP_ALERT_WEBHOOK_SECRET_8"],
    ["BACKUP_ALERT_WEBHOOK_URL_9", "BACKUP_ALERT_FORMAT_9", "BACKUP_ALERT_WEBHOOK_SECRET_9"],
];

fn setting(env: &impl Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The labels (URL setting names) of the destinations whose URL is set.
/// Only the URL decides: a destination whose other settings are wrong still
/// gets its rows, which fail with the reason until the settings are fixed.
pub fn labels(env: &impl Env) -> Vec<&'static str> {
    NAMES
        .iter()
        .map(|[url, _, _]| *url)
        .filter(|url| setting(env, url).is_some())
        .collect()
}

fn labels_json(env: &impl Env) -> String {
    serde_json::to_string(&labels(env)).unwrap_or_else(|_| "[]".into())
}

/// A message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"text": ...}`: Slack's incoming webhooks, Discord's `/slack`
    /// endpoint, Mattermost.
    Slack,
    /// `{"type", "timestamp", "data"}`, signed with Standard Webhooks.
    Json,
}

/// A destination, resolved from its settings when a row is sent.
pub struct Destination {
    pub url: String,
    pub format: Format,
    pub secret: Option<WebhookSecret>,
}

impl std::fmt::Debug for Destination {
    // The URL is a secret (a Slack webhook URL is its own credential).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Destination(<url redacted>, {:?})", self.format)
    }
}

/// The destination a row names.
///
/// # Errors
/// Why it cannot be sent to, naming the setting (never its value): the
/// row's `last_error`.
pub fn destination(env: &impl Env, label: &str) -> Result<Destination, String> {
    let [url_name, format_name, secret_name] = NAMES
        .iter()
        .find(|[url, _, _]| *url == label)
        .ok_or_else(|| format!("{label} is not a destination setting"))?;
    let url = setting(env, url_name).ok_or_else(|| format!("{url_name} is not set"))?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("{url_name} must be an http(s) URL"));
    }
    let format = match setting(env, format_name).as_deref() {
        None | Some("slack") => Format::Slack,
        Some("json") => Format::Json,
        Some(_) => return Err(format!("{format_name} must be slack or json")),
    };
    let secret = match (format, setting(env, secret_name)) {
        (_, Some(s)) => Some(
            WebhookSecret::parse(&s)
                .map_err(|_| format!("{secret_name} must be whsec_<base64>"))?,
        ),
        (Format::Json, None) => return Err(format!("{secret_name} is not set")),
        (Format::Slack, None) => None,
    };
    Ok(Destination {
        url,
        format,
        secret,
    })
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Failed,
    VerificationFailed,
    Silence,
    Recovery,
    Test,
    #[serde(other)]
    Unknown,
}

impl Event {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failed => "failed",
            Event::VerificationFailed => "verification_failed",
            Event::Silence => "silence",
            Event::Recovery => "recovery",
            Event::Test => "test",
            Event::Unknown => "unknown",
        }
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Pending,
    Delivered,
    Dead,
}

/// A `backup_notifications` row, read from the object
/// `sql/notification_columns.sql` builds. Times are unix ms.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Notification {
    pub id: i64,
    pub event: Event,
    pub dispatch_id: Option<String>,
    pub destination: String,
    /// The facts, as JSON text.
    pub payload: String,
    pub webhook_id: String,
    pub status: Delivery,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// The request that delivers `note` to `dest` at `now_ms`.
pub fn request(
    note: &Notification,
    dest: &Destination,
    now_ms: i64,
    timeout_ms: u32,
) -> OutboundRequest {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("webhook-id".to_string(), note.webhook_id.clone()),
    ];
    let body = match dest.format {
        Format::Slack => serde_json::to_string(&SlackBody {
            text: &slack_text(note),
        })
        .unwrap_or_default(),
        // The timestamp is the event's, so every retry sends the same body.
        Format::Json => format!(
            r#"{{"type":"backup.{}","timestamp":"{}","data":{}}}"#,
            note.event.as_str(),
            iso8601(note.created_at),
            note.payload
        ),
    };
    if let Some(secret) = &dest.secret {
        let ts = now_ms / 1000;
        headers.push(("webhook-timestamp".into(), ts.to_string()));
        headers.push((
            "webhook-signature".into(),
            secret.sign(&note.webhook_id, ts, body.as_bytes()),
        ));
    }
    OutboundRequest {
        method: "POST",
        url: dest.url.clone(),
        headers,
        body: Some(body),
        timeout_ms,
        // Followed, a redirect would turn the POST into a GET without its
        // body (fetch does so for 301 and 302), and the receiver's 200 to
        // that would count as delivered while the alert was lost.
        follow_redirects: false,
    }
}

#[derive(Serialize)]
struct SlackBody<'a> {
    text: &'a str,
}

/// The readable summary a chat shows: what happened, why, the run's link
/// and the last good backup, as plain text with Slack's three escapes.
pub fn slack_text(note: &Notification) -> String {
    let facts: Facts = serde_json::from_str(&note.payload).unwrap_or_default();
    let run = facts.run.unwrap_or_default();
    let id = &run.dispatch_id;
    let mut lines = vec![match note.event {
        Event::Failed => format!(
            ":red_circle: Backup failed ({}), run {id}",
            run.failure_reason.as_deref().unwrap_or("unknown reason")
        ),
        Event::VerificationFailed => {
            format!(":large_orange_circle: Backup stored but its verification failed, run {id}")
        }
        Event::Silence => format!(
            ":warning: No successful backup for more than {} hours (since {})",
            facts.alert_after_hours.unwrap_or_default(),
            facts.silent_since.as_deref().unwrap_or("-")
        ),
        Event::Recovery => format!(":large_green_circle: Backups recovered: run {id} succeeded"),
        Event::Test | Event::Unknown => {
            ":bell: Test alert from the backup control plane: this destination works.".into()
        }
    }];
    if let Some(error) = run.error_text.as_deref() {
        lines.push(format!("Error: {error}"));
    }
    if note.event == Event::VerificationFailed {
        let verdict: Verdict = run
            .verification
            .as_deref()
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .unwrap_or_default();
        lines.push(format!(
            "Verification: {}",
            verdict
                .error
                .as_deref()
                .map_or("the stored object did not match", |e| e)
        ));
    }
    if let Some(key) = run.s3_key.as_deref() {
        lines.push(format!("Object: {key}"));
    }
    if let Some(url) = run.run_url.as_deref() {
        lines.push(format!("Run: {url}"));
    }
    if note.event != Event::Test {
        lines.push(match facts.last_success {
            Some(LastSuccess {
                finished_at: Some(at),
                s3_key,
                ..
            }) => format!(
                "Last good backup: {at} ({})",
                s3_key.as_deref().unwrap_or("-")
            ),
            _ => "Last good backup: none recorded".into(),
        });
    }
    // Slack reads `<...>` as a link or mention and `&` as an entity; its
    // documented escapes make an error text show as written.
    lines
        .join("\n")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The one member of a verdict a message quotes.
#[derive(Default, Deserialize)]
struct Verdict {
    error: Option<String>,
}

/// How a claimed send ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Failed; try again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Failed, past [`GIVE_UP_MS`]: no more tries.
    Dead {
        error: String,
    },
}

impl Settled {
    /// The row's status, next attempt and last error, as settle_notification.sql
    /// takes them.
    pub fn columns(&self) -> (&'static str, Option<i64>, Option<&str>) {
        match self {
            Settled::Delivered => ("delivered", None, None),
            Settled::Retry { at_ms, error } => ("pending", Some(*at_ms), Some(error)),
            Settled::Dead { error } => ("dead", None, Some(error)),
        }
    }
}

/// The wait before the try after `attempts` failed ones: doubling from
/// [`FIRST_RETRY_MS`] up to [`MAX_RETRY_MS`], of which a random half is
/// taken off, so that rows failing together do not retry in lockstep.
pub fn backoff_ms(attempts: u32, random: [u8; 10]) -> i64 {
    let doubling = 1_i64 << attempts.saturating_sub(1).min(20);
    let full = FIRST_RETRY_MS.saturating_mul(doubling).min(MAX_RETRY_MS);
    let r = i64::from(u32::from_le_bytes([
        random[0], random[1], random[2], random[3],
    ]));
    full / 2 + r % (full / 2 + 1)
}

/// How the send of `note` (claimed for its `attempts`-th try) ends:
/// `Ok` the receiver took it (2xx); `Err` why not.
pub fn settle(
    note: &Notification,
    sent: Result<(), String>,
    now_ms: i64,
    random: [u8; 10],
) -> Settled {
    match sent {
        Ok(()) => Settled::Delivered,
        Err(error) => {
            let at_ms = now_ms + backoff_ms(note.attempts, random);
            if at_ms - note.created_at > GIVE_UP_MS {
                Settled::Dead { error }
            } else {
                Settled::Retry { at_ms, error }
            }
        }
    }
}

/// A claimed row past the give-up time, settled without a send: whatever
/// kept it pending (no destination was set, or a sender died before it
/// settled the row), a day late it would read as news, and a row whose
/// sends never settle would otherwise be sent forever.
fn expired(note: &Notification, now_ms: i64) -> Option<Settled> {
    const UNSENT: &str = "not delivered within 24 hours of the event";
    (now_ms - note.created_at > GIVE_UP_MS).then(|| Settled::Dead {
        error: match &note.last_error {
            Some(last) => format!("{last}; {UNSENT}"),
            None => UNSENT.into(),
        },
    })
}

/// Sends `note` to its destination: `Ok` when the receiver took it (2xx).
/// The error is the status only, or a fixed phrase: an answer's body, or
/// the host's error message (which may quote the URL), could carry a
/// secret.
async fn send(host: &impl Host, note: &Notification, timeout_ms: u32) -> Result<(), String> {
    let dest = destination(host, &note.destination)?;
    match host
        .fetch(request(note, &dest, host.now_ms(), timeout_ms))
        .await
    {
        Ok(a) if (200..300).contains(&a.status) => Ok(()),
        Ok(a) if (300..400).contains(&a.status) => Err(format!(
            "HTTP {}: a redirect, which alerts do not follow (set the URL it points to)",
            a.status
        )),
        Ok(a) => Err(format!("HTTP {}", a.status)),
        Err(_) => Err(format!(
            "no answer within {timeout_ms} ms (network error or timeout)"
        )),
    }
}

/// What a round of [`deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Sent {
    pub delivered: u32,
    pub retrying: u32,
    pub dead: u32,
}

/// Claims up to `limit` due rows and sends each, `timeout_ms` at most.
///
/// # Errors
/// Database errors only; a failed send is settled on its row.
pub async fn deliver(
    host: &impl Host,
    store: &impl Store,
    limit: u32,
    timeout_ms: u32,
) -> Result<Sent, Error> {
    let claimed = store
        .claim_notifications(host.now_ms(), LEASE_MS, limit)
        .await?;
    let mut sent = Sent::default();
    for note in claimed {
        let settled = match expired(&note, host.now_ms()) {
            Some(dead) => dead,
            None => {
                let result = send(host, &note, timeout_ms).await;
                settle(&note, result, host.now_ms(), host.random())
            }
        };
        let now = host.now_ms();
        match &settled {
            Settled::Delivered => sent.delivered += 1,
            Settled::Retry { .. } => sent.retrying += 1,
            Settled::Dead { .. } => sent.dead += 1,
        }
        if settled != Settled::Delivered {
            host.log(
                Level::Warn,
                &format!(
                    "alert {} ({}) to {}: {:?}",
                    note.id,
                    note.event.as_str(),
                    note.destination,
                    settled
                ),
            );
        }
        store
            .settle_notification(note.id, note.attempts, &settled, now)
            .await?;
    }
    Ok(sent)
}

/// Right after a transition: sends what is due, briefly. The transition
/// has committed and its alerts with it, so a failure here only leaves
/// them to the sweep: it is logged, never answered.
pub async fn send_soon(host: &impl Host, store: &impl Store) {
    if labels(host).is_empty() {
        return;
    }
    if let Err(e) = deliver(host, store, SOON_LIMIT, SOON_TIMEOUT_MS).await {
        host.log(Level::Warn, &format!("alerts not sent now: {e}"));
    }
}

/// The sweep's part: the dead man's switch, then a round of sending. As
/// for [`send_soon`], failures are logged: the sweep's own work is done.
pub async fn on_sweep(host: &impl Host, store: &impl Store) {
    if labels(host).is_empty() {
        return;
    }
    let result = async {
        let clock = store.alert_clock().await?;
        if let Some(since) = silence(&clock, host.now_ms()) {
            let facts = silence_facts(since, clock.after_hours);
            if store
                .raise_silence(since, &facts, &labels_json(host))
                .await?
            {
                host.log(Level::Warn, "alert: no successful backup, silence raised");
            }
        }
        deliver(host, store, SWEEP_LIMIT, SEND_TIMEOUT_MS).await
    }
    .await;
    if let Err(e) = result {
        host.log(Level::Warn, &format!("alerts: {e}"));
    }
}

/// Queues a `test` alert to every destination and sends it now.
///
/// # Errors
/// [`Error::Config`] naming `BACKUP_ALERT_WEBHOOK_URL` when no destination
/// is configured; database errors.
pub async fn send_test(host: &impl Host, store: &impl Store) -> Result<Sent, Error> {
    let to = labels(host);
    if to.is_empty() {
        return Err(Error::Config {
            setting: "BACKUP_ALERT_WEBHOOK_URL",
            message: "is not set".into(),
        });
    }
    store.raise_test(&labels_json(host)).await?;
    deliver(host, store, to.len() as u32 + SOON_LIMIT, SEND_TIMEOUT_MS).await
}

/// A notification as the status API lists it.
#[derive(Debug, Serialize)]
pub struct NotificationView<'a> {
    pub id: i64,
    pub event: Event,
    pub dispatch_id: Option<&'a str>,
    pub destination: &'a str,
    pub status: Delivery,
    pub attempts: u32,
    pub webhook_id: &'a str,
    pub created_at: String,
    /// When it is tried again (pending rows only).
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub last_error: Option<&'a str>,
}

/// The view of `note`.
pub fn view(note: &Notification) -> NotificationView<'_> {
    NotificationView {
        id: note.id,
        event: note.event,
        dispatch_id: note.dispatch_id.as_deref(),
        destination: &note.destination,
        status: note.status,
        attempts: note.attempts,
        webhook_id: &note.webhook_id,
        created_at: iso8601(note.created_at),
        next_attempt_at: (note.status == Delivery::Pending).then(|| iso8601(note.next_attempt_at)),
        delivered_at: note.delivered_at.map(iso8601),
        last_error: note.last_error.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch_id::DispatchId;
    use crate::testing::START_MS;

    fn run(status: Status) -> Run {
        let mut r = Run::manual(
            DispatchId::issue(1, [7; 10]),
            uuid::Uuid::nil(),
            None,
            START_MS,
        );
        r.status = status;
        r
    }

    #[test]
    fn transition_table_alerts_failures_failed_verifications_and_successes_only() {
        use Status::*;
        let ok = Some(r#"{"mode":"list","ok":true}"#);
        let bad = Some(r#"{"error":"3 rows missing","mode":"restore","ok":false}"#);
        let cases = [
            (InProgress, InProgress, None, None),
            (InProgress, Failed, None, Some(Transition::Failed)),
            (InProgress, Success, None, Some(Transition::Succeeded)),
            (InProgress, Success, ok, Some(Transition::Succeeded)),
            (
                InProgress,
                Success,
                bad,
                Some(Transition::VerificationFailed),
            ),
            // An inferred failure corrected by the workflow's own failure:
            // the first already alerted.
            (Failed, Failed, None, None),
            // An inferred failure corrected by the workflow's success.
            (Failed, Success, None, Some(Transition::Succeeded)),
            (Failed, Success, bad, Some(Transition::VerificationFailed)),
            // A re-run reopens: nothing yet.
            (Failed, InProgress, None, None),
            (Success, Success, None, None),
            (Success, Failed, None, None),
            (Success, InProgress, None, None),
        ];
        for (prev, next, verdict, want) in cases {
            assert_eq!(
                transition(&run(prev), &run(next), verdict),
                want,
                "{prev:?} -> {next:?} {verdict:?}"
            );
        }
        // A re-run's failure, with no report of its start before it: the
        // reopened run fails, which alerts.
        let mut rerun = run(Failed);
        rerun.run_attempt = 2;
        assert_eq!(
            transition(&run(Failed), &rerun, None),
            Some(Transition::Failed)
        );
    }

    #[test]
    fn error_tail_keeps_the_end_and_cuts_query_strings_from_urls() {
        let text = "upload failed: https://bucket.s3.amazonaws.com/k.dump?X-Amz-Signature=abc&X-Amz-Credential=AKIA \
                    then http://x.test/a#frag and https://github.com/acme/app/actions/runs/1";
        let tail = error_tail(text);
        assert_eq!(
            tail,
            "upload failed: https://bucket.s3.amazonaws.com/k.dump?[redacted] \
             then http://x.test/a?[redacted] and https://github.com/acme/app/actions/runs/1"
        );
        assert!(!tail.contains("AKIA") && !tail.contains("X-Amz"));
        let long = format!("{}THE CAUSE", "x".repeat(2000));
        let tail = error_tail(&long);
        assert_eq!(tail.chars().count(), ERROR_TAIL_CHARS + 1);
        assert!(tail.starts_with('…') && tail.ends_with("THE CAUSE"));
    }

    #[test]
    fn backoff_doubles_from_thirty_seconds_with_jitter_up_to_an_hour() {
        for (attempts, full) in [
            (1, 30_000),
            (2, 60_000),
            (3, 120_000),
            (8, 3_600_000),
            (40, 3_600_000),
        ] {
            assert_eq!(backoff_ms(attempts, [0; 10]), full / 2, "{attempts}");
            assert_eq!(
                backoff_ms(attempts, [255; 10]),
                full / 2 + (u32::MAX as i64) % (full / 2 + 1)
            );
            assert!(backoff_ms(attempts, [255; 10]) <= full);
        }
        assert_ne!(
            backoff_ms(3, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]),
            backoff_ms(3, [9, 9, 9, 9, 0, 0, 0, 0, 0, 0])
        );
    }

    fn note(event: Event, payload: &str) -> Notification {
        Notification {
            id: 1,
            event,
            dispatch_id: None,
            destination: "BACKUP_ALERT_WEBHOOK_URL".into(),
            payload: payload.into(),
            webhook_id: "msg_1".into(),
            status: Delivery::Pending,
            attempts: 1,
            created_at: START_MS,
            next_attempt_at: START_MS,
            last_error: None,
            delivered_at: None,
        }
    }

    #[test]
    fn a_failed_send_is_retried_until_a_day_after_the_event_then_dead() {
        let mut n = note(Event::Failed, "{}");
        assert_eq!(settle(&n, Ok(()), START_MS, [0; 10]), Settled::Delivered);
        assert_eq!(
            settle(&n, Err("HTTP 503".into()), START_MS, [0; 10]),
            Settled::Retry {
                at_ms: START_MS + 15_000,
                error: "HTTP 503".into()
            }
        );
        n.attempts = 30;
        let late = START_MS + GIVE_UP_MS - 1_800_000;
        assert_eq!(
            settle(&n, Err("HTTP 503".into()), late, [0; 10]),
            Settled::Retry {
                at_ms: late + 1_800_000,
                error: "HTTP 503".into()
            }
        );
        assert_eq!(
            settle(&n, Err("HTTP 503".into()), late + 1, [0; 10]),
            Settled::Dead {
                error: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn silence_is_due_after_alert_after_hours_once_per_start() {
        let clock = AlertClock {
            after_hours: 26,
            silent_since: START_MS,
            raised_for: None,
        };
        let hours = |h: i64| START_MS + h * 3_600_000;
        assert_eq!(silence(&clock, hours(26)), None);
        assert_eq!(silence(&clock, hours(26) + 1), Some(START_MS));
        let raised = AlertClock {
            raised_for: Some(START_MS),
            ..clock
        };
        assert_eq!(silence(&raised, hours(100)), None);
        // A success since: a new silence, raised in its own time.
        let later = AlertClock {
            silent_since: hours(50),
            ..raised
        };
        assert_eq!(silence(&later, hours(76)), None);
        assert_eq!(silence(&later, hours(77)), Some(hours(50)));
    }

    fn env(pairs: &[(&str, &str)]) -> crate::testing::FakeHost {
        crate::testing::FakeHost::new(pairs)
    }

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn each_destination_has_its_settings_suffixed_by_its_number() {
        for (i, names) in NAMES.iter().enumerate() {
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("_{}", i + 1)
            };
            assert_eq!(
                names.map(str::to_string),
                [
                    format!("BACKUP_ALERT_WEBHOOK_URL{suffix}"),
                    format!("BACKUP_ALERT_FORMAT{suffix}"),
                    format!("BACKUP_ALERT_WEBHOOK_SECRET{suffix}"),
                ]
            );
        }
    }

    #[test]
    fn destinations_are_named_by_their_url_setting_and_checked_when_sent() {
        let e = env(&[
            (
                "BACKUP_ALERT_WEBHOOK_URL",
                "https://hooks.slack.test/services/T/B/secret",
            ),
            ("BACKUP_ALERT_WEBHOOK_URL_3", "http://127.0.0.1:9/hook"),
            ("BACKUP_ALERT_FORMAT_3", "json"),
            ("BACKUP_ALERT_WEBHOOK_URL_4", "ftp://nope"),
            ("BACKUP_ALERT_WEBHOOK_URL_5", "https://x.test"),
            ("BACKUP_ALERT_FORMAT_5", "xml"),
            ("BACKUP_ALERT_WEBHOOK_URL_10", "https://ignored.test"),
        ]);
        assert_eq!(
            labels(&e),
            [
                "BACKUP_ALERT_WEBHOOK_URL",
                "BACKUP_ALERT_WEBHOOK_URL_3",
                "BACKUP_ALERT_WEBHOOK_URL_4",
                "BACKUP_ALERT_WEBHOOK_URL_5"
            ]
        );
        let slack = destination(&e, "BACKUP_ALERT_WEBHOOK_URL").unwrap();
        assert_eq!(
            (slack.format, slack.secret.is_none()),
            (Format::Slack, true)
        );
        assert_eq!(
            destination(&e, "BACKUP_ALERT_WEBHOOK_URL_3").unwrap_err(),
            "BACKUP_ALERT_WEBHOOK_SECRET_3 is not set"
        );
        assert_eq!(
            destination(&e, "BACKUP_ALERT_WEBHOOK_URL_4").unwrap_err(),
            "BACKUP_ALERT_WEBHOOK_URL_4 must be an http(s) URL"
        );
        assert_eq!(
            destination(&e, "BACKUP_ALERT_WEBHOOK_URL_5").unwrap_err(),
            "BACKUP_ALERT_FORMAT_5 must be slack or json"
        );
        assert_eq!(
            destination(&e, "BACKUP_ALERT_WEBHOOK_URL_2").unwrap_err(),
            "BACKUP_ALERT_WEBHOOK_URL_2 is not set"
        );
    }

    const FAILED_FACTS: &str = r#"{"event":"failed","last_success":{"dispatch_id":"x","finished_at":"2026-11-29T04:00:00.000Z","s3_key":"prod/good.dump"},"run":{"dispatch_id":"0192f0c1-0000-7000-8000-000000000001","error_text":"pg_dump: error: connection refused","failure_reason":"step_failed","finished_at":null,"run_attempt":1,"run_url":"https://github.com/acme/app/actions/runs/7","s3_key":null,"size_bytes":null,"started_at":null,"status":"failed","verification":null,"workflow_run_id":7}}"#;

    #[test]
    fn a_json_alert_is_the_event_and_the_run_signed_with_standard_webhooks() {
        let e = env(&[
            ("BACKUP_ALERT_WEBHOOK_URL", "https://receiver.test/hook"),
            ("BACKUP_ALERT_FORMAT", "json"),
            ("BACKUP_ALERT_WEBHOOK_SECRET", WHSEC),
        ]);
        let dest = destination(&e, "BACKUP_ALERT_WEBHOOK_URL").unwrap();
        let n = note(Event::Failed, FAILED_FACTS);
        let req = request(&n, &dest, START_MS + 5_000, 3_000);
        let body = req.body.clone().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["type"], "backup.failed");
        assert_eq!(parsed["timestamp"], iso8601(START_MS));
        assert_eq!(
            parsed["data"],
            serde_json::from_str::<serde_json::Value>(FAILED_FACTS).unwrap()
        );
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("webhook-id"), Some("msg_1"));
        let ts = (START_MS + 5_000) / 1000;
        assert_eq!(header("webhook-timestamp"), Some(ts.to_string().as_str()));
        WebhookSecret::parse(WHSEC)
            .unwrap()
            .verify(
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                body.as_bytes(),
                ts,
            )
            .unwrap();
        // A retry later sends the same body under the same id.
        let again = request(&n, &dest, START_MS + 90_000, 3_000);
        assert_eq!(again.body.as_deref(), Some(body.as_str()));
    }

    #[test]
    fn a_slack_alert_is_text_only_with_the_reason_error_link_and_last_good_backup() {
        let e = env(&[(
            "BACKUP_ALERT_WEBHOOK_URL",
            "https://hooks.slack.test/services/T/B/x",
        )]);
        let dest = destination(&e, "BACKUP_ALERT_WEBHOOK_URL").unwrap();
        let req = request(&note(Event::Failed, FAILED_FACTS), &dest, START_MS, 3_000);
        let parsed: serde_json::Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"text": ":red_circle: Backup failed (step_failed), run 0192f0c1-0000-7000-8000-000000000001\n\
                Error: pg_dump: error: connection refused\n\
                Run: https://github.com/acme/app/actions/runs/7\n\
                Last good backup: 2026-11-29T04:00:00.000Z (prod/good.dump)"})
        );
        assert!(req.headers.iter().all(|(k, _)| k != "webhook-signature"));
        let odd = FAILED_FACTS.replace("connection refused", "role <admin> & co");
        assert!(slack_text(&note(Event::Failed, &odd))
            .contains("Error: pg_dump: error: role &lt;admin&gt; &amp; co\n"));
        let silence = note(
            Event::Silence,
            r#"{"alert_after_hours":26,"event":"silence","last_success":null,"silent_since":"2026-11-28T00:00:00.000Z"}"#,
        );
        assert_eq!(
            slack_text(&silence),
            ":warning: No successful backup for more than 26 hours (since 2026-11-28T00:00:00.000Z)\n\
             Last good backup: none recorded"
        );
    }
}

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use super::{Delivery, Event, GIVE_UP_MS, LEASE_MS};
    use crate::testing::kit::*;
    use crate::testing::START_MS;

    const SLACK: &str = "https://hooks.slack.test/services/T/B/secret";
    const RECEIVER: &str = "https://receiver.test/hook";

    /// A host with two destinations: Slack, and signed JSON.
    fn alerting_host() -> FakeHost {
        let mut h = service_host();
        for (k, v) in [
            ("BACKUP_ALERT_WEBHOOK_URL", SLACK),
            ("BACKUP_ALERT_WEBHOOK_URL_2", RECEIVER),
            ("BACKUP_ALERT_FORMAT_2", "json"),
            ("BACKUP_ALERT_WEBHOOK_SECRET_2", WHSEC),
        ] {
            h.env.insert(k.into(), v.into());
        }
        h
    }

    fn report(id: &str, event: &str, extra: Value) -> Value {
        let mut r =
            json!({"event": event, "dispatch_id": id, "workflow_run_id": 4242, "run_attempt": 1});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    }

    fn events(store: &MemStore) -> Vec<(Event, String, Delivery)> {
        store
            .outbox()
            .into_iter()
            .map(|n| (n.event, n.destination, n.status))
            .collect()
    }

    /// The requests the alert sender made (not GitHub's).
    fn alert_posts(host: &FakeHost) -> Vec<crate::ports::github::OutboundRequest> {
        host.fetched
            .borrow()
            .iter()
            .filter(|r| r.url == SLACK || r.url == RECEIVER)
            .cloned()
            .collect()
    }

    #[test]
    fn a_failure_alerts_each_destination_once_and_is_sent_right_away() {
        let (host, store) = (alerting_host(), store());
        let id = dispatched(&host, &store);
        host.answer(200, &[], "ok");
        host.answer(200, &[], "ok");
        let failed = report(
            &id,
            "failed",
            json!({"error_text": "pg_dump: connection refused"}),
        );
        assert_eq!(finalize(&host, &store, "f1", &failed).status, 200);
        // A retried delivery, and the same verdict under a new id: no alert.
        assert_eq!(finalize(&host, &store, "f1", &failed).status, 200);
        assert_eq!(finalize(&host, &store, "f2", &failed).status, 200);
        assert_eq!(
            events(&store),
            [
                (
                    Event::Failed,
                    "BACKUP_ALERT_WEBHOOK_URL".into(),
                    Delivery::Delivered
                ),
                (
                    Event::Failed,
                    "BACKUP_ALERT_WEBHOOK_URL_2".into(),
                    Delivery::Delivered
                ),
            ]
        );
        let posts = alert_posts(&host);
        assert_eq!(posts.len(), 2);
        let slack: Value = serde_json::from_str(posts[0].body.as_deref().unwrap()).unwrap();
        assert!(slack["text"]
            .as_str()
            .unwrap()
            .contains("pg_dump: connection refused"));
        let json: Value = serde_json::from_str(posts[1].body.as_deref().unwrap()).unwrap();
        assert_eq!(json["type"], "backup.failed");
        assert_eq!(json["data"]["run"]["dispatch_id"], id);
        assert_eq!(json["data"]["run"]["failure_reason"], "step_failed");
        // The row's link, which the report's decision did not carry.
        assert_eq!(
            json["data"]["run"]["run_url"],
            "https://github.com/acme/app/actions/runs/4242"
        );
    }

    #[test]
    fn recovery_is_raised_once_by_the_first_success_after_a_failure() {
        let (host, store) = (alerting_host(), store());
        let id = dispatched(&host, &store);
        finalize(&host, &store, "f", &report(&id, "failed", json!({})));
        // No recovery for a success without an open problem.
        let sha = "a".repeat(64);
        let id2 = dispatched(&host, &store);
        let ok = |key: &str| json!({"s3_key": key, "size_bytes": 1, "sha256": sha});
        finalize(
            &host,
            &store,
            "s2",
            &report(&id2, "succeeded", ok("b/2.dump")),
        );
        let id3 = dispatched(&host, &store);
        finalize(
            &host,
            &store,
            "s3",
            &report(&id3, "succeeded", ok("b/3.dump")),
        );
        let kinds: Vec<Event> = events(&store).iter().map(|e| e.0).collect();
        assert_eq!(
            kinds,
            [
                Event::Failed,
                Event::Failed,
                Event::Recovery,
                Event::Recovery
            ]
        );
        let recovery = &store.outbox()[2];
        assert_eq!(recovery.dispatch_id.as_deref(), Some(id2.as_str()));
    }

    #[test]
    fn a_failed_verification_alerts_and_the_next_verified_success_recovers() {
        let (host, store) = (alerting_host(), store());
        let sha = "a".repeat(64);
        let id = dispatched(&host, &store);
        let bad = json!({"s3_key": "b/1.dump", "sha256": sha, "verification": {"mode": "restore", "ok": false, "error": "2 tables differ"}});
        finalize(&host, &store, "v1", &report(&id, "succeeded", bad));
        let id2 = dispatched(&host, &store);
        let good = json!({"s3_key": "b/2.dump", "sha256": sha, "verification": {"mode": "list", "ok": true}});
        finalize(&host, &store, "v2", &report(&id2, "succeeded", good));
        let kinds: Vec<Event> = events(&store).iter().step_by(2).map(|e| e.0).collect();
        assert_eq!(kinds, [Event::VerificationFailed, Event::Recovery]);
        let text = super::slack_text(&store.outbox()[0]);
        assert!(text.contains("Verification: 2 tables differ"), "{text}");
        assert!(text.contains("Object: b/1.dump"), "{text}");
    }

    #[test]
    fn a_5xx_is_retried_with_the_same_webhook_id_and_a_day_later_the_row_is_dead() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        let id = dispatched(&host, &store);
        host.answer(503, &[], "busy");
        finalize(&host, &store, "f", &report(&id, "failed", json!({})));
        let n = &store.outbox()[0];
        assert_eq!(
            (n.status, n.attempts, n.last_error.as_deref()),
            (Delivery::Pending, 1, Some("HTTP 503"))
        );
        // Not due yet: the sweep sends nothing.
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        assert_eq!(alert_posts(&host).len(), 1);
        host.now.set(n.next_attempt_at);
        host.answer(200, &[], "ok");
        sweep_req(&host, &store, "service-key");
        let n = &store.outbox()[0];
        assert_eq!(
            (n.status, n.attempts, n.last_error.as_deref()),
            (Delivery::Delivered, 2, None)
        );
        let ids: Vec<String> = alert_posts(&host)
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == "webhook-id")
                    .unwrap()
                    .1
                    .clone()
            })
            .collect();
        assert_eq!(ids, [n.webhook_id.clone(), n.webhook_id.clone()]);

        // Another that never gets through: dead once a day has passed.
        let id2 = dispatched(&host, &store);
        finalize(&host, &store, "f2", &report(&id2, "failed", json!({})));
        loop {
            let n = store.outbox()[1].clone();
            if n.status != Delivery::Pending {
                assert_eq!(n.status, Delivery::Dead);
                assert!(host.now_ms() - n.created_at <= GIVE_UP_MS);
                assert!(n.attempts > 10, "{}", n.attempts);
                break;
            }
            host.now.set(n.next_attempt_at.max(host.now_ms()));
            host.answer(500, &[], "");
            sweep_req(&host, &store, "service-key");
        }
    }

    #[test]
    fn an_alert_still_pending_a_day_after_its_event_is_given_up_unsent_not_delivered_as_news() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        let id = dispatched(&host, &store);
        host.answer(503, &[], "busy");
        finalize(&host, &store, "f", &report(&id, "failed", json!({})));
        assert_eq!(alert_posts(&host).len(), 1);
        // The destination is unset for five days: the sweeps send nothing.
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL");
        host.now.set(host.now_ms() + 5 * 86_400_000);
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        // Set again: the five-day-old failure is not sent as if it were new
        // (the silence of five days without a success is).
        host.env
            .insert("BACKUP_ALERT_WEBHOOK_URL".into(), SLACK.into());
        host.answer(200, &[], "ok");
        assert_eq!(sweep_req(&host, &store, "service-key").status, 200);
        let failures = alert_posts(&host)
            .iter()
            .filter(|r| r.body.as_deref().unwrap_or("").contains("Backup failed"))
            .count();
        assert_eq!(failures, 1, "only the first try, five days ago");
        let n = &store.outbox()[0];
        assert_eq!(
            (n.status, n.last_error.as_deref()),
            (
                Delivery::Dead,
                Some("HTTP 503; not delivered within 24 hours of the event")
            )
        );
    }

    #[test]
    fn a_redirect_is_a_failed_send_not_a_delivery() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        let id = dispatched(&host, &store);
        host.answer(301, &[("location", "https://hooks.slack.test/moved")], "");
        finalize(&host, &store, "f", &report(&id, "failed", json!({})));
        let posts = alert_posts(&host);
        assert_eq!(posts.len(), 1);
        assert!(!posts[0].follow_redirects);
        let n = &store.outbox()[0];
        assert_eq!(
            (n.status, n.last_error.as_deref()),
            (
                Delivery::Pending,
                Some("HTTP 301: a redirect, which alerts do not follow (set the URL it points to)")
            )
        );
    }

    #[test]
    fn a_rerun_that_fails_without_reporting_its_start_alerts_like_any_failure() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        let id = dispatched(&host, &store);
        host.answer(200, &[], "ok");
        finalize(&host, &store, "f1", &report(&id, "failed", json!({})));
        // GitHub's re-run fails before its "Report start" step: its only
        // report is the failure, from attempt 2.
        host.answer(200, &[], "ok");
        let mut again = report(&id, "failed", json!({"error_text": "container"}));
        again["run_attempt"] = json!(2);
        let r = finalize(&host, &store, "f2", &again);
        assert_eq!(
            body(&r),
            json!({"dispatch_id": id, "status": "failed", "changed": true})
        );
        let kinds: Vec<Event> = events(&store).iter().map(|e| e.0).collect();
        assert_eq!(kinds, [Event::Failed, Event::Failed]);
        assert_eq!(alert_posts(&host).len(), 2);
    }

    #[test]
    fn a_sender_that_died_after_sending_leaves_the_row_to_be_sent_again_after_its_lease() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        let id = dispatched(&host, &store);
        // finalize's own send fails to reach anyone: nothing scripted.
        // Simulate the dying sender: claim, and never settle.
        finalize(&host, &store, "f", &report(&id, "failed", json!({})));
        let first = store.outbox()[0].clone();
        host.now.set(first.next_attempt_at);
        let claimed = block_on(crate::ports::store::Store::claim_notifications(
            &store,
            host.now_ms(),
            LEASE_MS,
            10,
        ))
        .unwrap();
        assert_eq!(claimed.len(), 1);
        // Within the lease no other sender takes it.
        host.now.set(host.now_ms() + LEASE_MS - 1);
        sweep_req(&host, &store, "service-key");
        assert_eq!(alert_posts(&host).len(), 1);
        host.now.set(host.now_ms() + 1);
        host.answer(200, &[], "ok");
        sweep_req(&host, &store, "service-key");
        let posts = alert_posts(&host);
        assert_eq!(posts.len(), 2);
        let n = &store.outbox()[0];
        assert_eq!((n.status, n.attempts), (Delivery::Delivered, 3));
        for p in posts {
            assert!(p
                .headers
                .contains(&("webhook-id".into(), first.webhook_id.clone())));
        }
        // The dead sender's late settle changes nothing.
        block_on(crate::ports::store::Store::settle_notification(
            &store,
            claimed[0].id,
            claimed[0].attempts,
            &super::Settled::Dead {
                error: "late".into(),
            },
            host.now_ms(),
        ))
        .unwrap();
        assert_eq!(store.outbox()[0].status, Delivery::Delivered);
    }

    #[test]
    fn the_sweep_raises_one_silence_per_silence_and_a_success_recovers() {
        let (mut host, store) = (alerting_host(), store());
        host.env.remove("BACKUP_ALERT_WEBHOOK_URL_2");
        host.now.set(START_MS + 26 * 3_600_000);
        sweep_req(&host, &store, "service-key");
        assert!(store.outbox().is_empty());
        host.now.set(host.now_ms() + 1);
        for _ in 0..3 {
            host.answer(200, &[], "ok");
            sweep_req(&host, &store, "service-key");
        }
        assert_eq!(
            events(&store),
            [(
                Event::Silence,
                "BACKUP_ALERT_WEBHOOK_URL".into(),
                Delivery::Delivered
            )]
        );
        let id = dispatched(&host, &store);
        host.answer(200, &[], "ok");
        let sha = "a".repeat(64);
        finalize(
            &host,
            &store,
            "s",
            &report(
                &id,
                "succeeded",
                json!({"s3_key": "b/1.dump", "sha256": sha}),
            ),
        );
        assert_eq!(events(&store)[1].0, Event::Recovery);
    }

    fn post_status(host: &FakeHost, store: &MemStore, sub: &str, body: &str) -> Response {
        let req = Request::new(
            "POST",
            "http://x/functions/v1/backup-status",
            vec![
                (
                    "authorization".into(),
                    format!("Bearer {}", token(host, sub)),
                ),
                ("content-type".into(), "application/json".into()),
            ],
            body.as_bytes().to_vec(),
        );
        block_on(app::handle(host, store, "backup-status", &req))
    }

    #[test]
    fn a_test_alert_is_sent_to_every_destination_for_admins_only() {
        let (host, store) = (alerting_host(), store());
        let action = r#"{"action":"send_test_alert"}"#;
        assert_eq!(post_status(&host, &store, OTHER, action).status, 403);
        let r = post_status(&host, &store, ADMIN, r#"{"action":"reboot"}"#);
        assert_eq!((r.status, error_code(&r)), (400, json!("invalid_field")));
        let r = post_status(&host, &store, ADMIN, r#"{"act":"send_test_alert"}"#);
        assert_eq!((r.status, error_code(&r)), (400, json!("invalid_field")));
        assert!(store.outbox().is_empty());
        host.answer(200, &[], "ok");
        host.answer(500, &[], "");
        let r = post_status(&host, &store, ADMIN, action);
        assert_eq!(r.status, 200, "{}", r.body);
        let b = body(&r);
        assert_eq!(b["sent"], json!({"delivered": 1, "retrying": 1, "dead": 0}));
        let notes = b["notifications"].as_array().unwrap();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0]["destination"], "BACKUP_ALERT_WEBHOOK_URL_2");
        assert_eq!(notes[0]["status"], "pending");
        assert_eq!(notes[0]["last_error"], "HTTP 500");
        assert_eq!(notes[1]["event"], "test");
        assert_eq!(notes[1]["status"], "delivered");
        assert!(!r.body.contains(SLACK) && !r.body.contains("secret"));
        // The history lists them too.
        let page = body(&status_get(&host, &store, "", None));
        assert_eq!(page["notifications"], b["notifications"]);
        // Without a destination: the missing setting is named.
        let bare = service_host();
        let r = post_status(&bare, &store, ADMIN, action);
        assert_eq!((r.status, error_code(&r)), (500, json!("config_missing")));
    }
}
