//! GitHub REST calls: built and read here, sent by the host.
//!
//! The core never performs I/O itself. It builds an [`OutboundRequest`],
//! the host's `fetch` sends it, and the answer comes back as an
//! [`OutboundResponse`] to be classified here: accepted, worth retrying
//! (5xx, 429, a rate-limited 403, a network error), or refused.

use crate::dispatch_id::DispatchId;
use serde::{Deserialize, Serialize};

/// The API version this code was written against.
pub const API_VERSION: &str = "2022-11-28";
/// Dispatch attempts before giving up (the first try plus retries).
pub const DISPATCH_ATTEMPTS: u32 = 3;
/// A `Retry-After` longer than this is not waited for inside a request.
pub const MAX_RETRY_WAIT_MS: u32 = 5_000;

/// An HTTP request for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The host aborts the request after this long.
    pub timeout_ms: u32,
    /// Whether the host follows a redirect, or answers with the 3xx itself.
    pub follow_redirects: bool,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundResponse {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl OutboundResponse {
    /// The first value of a header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where and how to dispatch.
#[derive(Clone, PartialEq, Eq)]
pub struct GitHubConfig {
    pub api_url: String,
    pub repository: String,
    pub workflow: String,
    pub workflow_ref: String,
    pub token: String,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .field("workflow", &self.workflow)
            .field("workflow_ref", &self.workflow_ref)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl GitHubConfig {
    fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("authorization".into(), format!("Bearer {}", self.token)),
            ("accept".into(), "application/vnd.github+json".into()),
            ("x-github-api-version".into(), API_VERSION.into()),
            ("user-agent".into(), "supabase-backup-control-plane".into()),
        ]
    }

    /// `POST /repos/{repo}/actions/workflows/{workflow}/dispatches`, asking
    /// GitHub to return the run it created (`return_run_details`).
    pub fn dispatch_request(&self, dispatch_id: DispatchId) -> OutboundRequest {
        let mut headers = self.headers();
        headers.push(("content-type".into(), "application/json".into()));
        OutboundRequest {
            method: "POST",
            url: format!(
                "{}/repos/{}/actions/workflows/{}/dispatches",
                self.api_url, self.repository, self.workflow
            ),
            headers,
            // A struct of strings, a bool and a UUID always serializes.
            body: serde_json::to_string(&DispatchBodyOut {
                git_ref: &self.workflow_ref,
                inputs: DispatchInputs { dispatch_id },
                return_run_details: true,
            })
            .ok(),
            timeout_ms: 10_000,
            follow_redirects: true,
        }
    }

    /// `GET /repos/{repo}/actions/runs/{id}`, answered within `timeout_ms`.
    pub fn get_run_request(&self, workflow_run_id: u64, timeout_ms: u32) -> OutboundRequest {
        OutboundRequest {
            method: "GET",
            url: format!(
                "{}/repos/{}/actions/runs/{workflow_run_id}",
                self.api_url, self.repository
            ),
            headers: self.headers(),
            body: None,
            timeout_ms,
            follow_redirects: true,
        }
    }
}

/// The body of a workflow dispatch.
#[derive(Serialize)]
struct DispatchBodyOut<'a> {
    #[serde(rename = "ref")]
    git_ref: &'a str,
    inputs: DispatchInputs,
    return_run_details: bool,
}

/// The workflow's inputs: the dispatch id and nothing else.
#[derive(Serialize)]
struct DispatchInputs {
    dispatch_id: DispatchId,
}

/// How a dispatch attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchAnswer {
    /// GitHub created the run. Older servers answer 204 without run details.
    Accepted {
        workflow_run_id: Option<u64>,
        run_url: Option<String>,
    },
    /// Transient: worth another attempt after `wait_ms` (if allowed).
    Retry {
        wait_ms: Option<u32>,
        detail: String,
    },
    /// Permanent: GitHub said no.
    Refused { detail: String },
}

/// The members of a dispatch answer (`return_run_details: true`) this reads.
/// Anything unreadable is "no run details": the run is still accepted.
#[derive(Deserialize, Default)]
struct DispatchBody {
    workflow_run_id: Option<u64>,
    id: Option<u64>,
    html_url: Option<String>,
    run_url: Option<String>,
}

/// Classifies a dispatch answer.
pub fn read_dispatch_response(response: &OutboundResponse) -> DispatchAnswer {
    match response.status {
        200 | 201 => {
            let body: DispatchBody = serde_json::from_str(&response.body).unwrap_or_default();
            // Range-checked like a report's (a run id GitHub could never
            // send must not reach SQL's bigint as a 500).
            let workflow_run_id = body
                .workflow_run_id
                .or(body.id)
                .filter(|id| (1..=crate::report::MAX_SAFE_INTEGER).contains(id));
            // html_url is the page a person opens; run_url is the API URL.
            let run_url = body
                .html_url
                .or(body.run_url)
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
            DispatchAnswer::Accepted {
                workflow_run_id,
                run_url,
            }
        }
        202 | 204 => DispatchAnswer::Accepted {
            workflow_run_id: None,
            run_url: None,
        },
        _ => classify_failure(response),
    }
}

/// A failed answer: retry for 5xx, 429 and a rate-limited 403, else refuse.
fn classify_failure(response: &OutboundResponse) -> DispatchAnswer {
    let detail = describe(response);
    if response.status >= 500 || is_rate_limited(response) {
        DispatchAnswer::Retry {
            wait_ms: retry_wait_ms(response),
            detail,
        }
    } else {
        DispatchAnswer::Refused { detail }
    }
}

/// A 429, or a 403 that is GitHub's (primary or secondary) rate limit rather
/// than a permission problem.
fn is_rate_limited(response: &OutboundResponse) -> bool {
    response.status == 429
        || (response.status == 403
            && (quota_spent(response) || response.header("retry-after").is_some()))
}

fn quota_spent(response: &OutboundResponse) -> bool {
    response.header("x-ratelimit-remaining") == Some("0")
}

/// How long GitHub asks us to wait, from `Retry-After` (seconds) or, when the
/// rate limit is exhausted, from `x-ratelimit-reset` (unix seconds; needs
/// the current time, so only `Retry-After` is read here).
pub fn retry_wait_ms(response: &OutboundResponse) -> Option<u32> {
    response
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// Until when (unix ms) a rate-limited answer asks us not to call again:
/// `Retry-After`, else `x-ratelimit-reset` when the quota is spent, else a
/// minute for a bare 429. `None` when the answer is not a rate limit.
pub fn rate_limited_until(response: &OutboundResponse, now_ms: i64) -> Option<i64> {
    if !is_rate_limited(response) {
        return None;
    }
    if let Some(wait) = retry_wait_ms(response) {
        return Some(now_ms + i64::from(wait));
    }
    let reset = response
        .header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|s| s * 1000)
        .filter(|_| quota_spent(response));
    Some(reset.filter(|r| *r > now_ms).unwrap_or(now_ms + 60_000))
}

/// Whether a request that failed with this network error (the host's
/// message) may have reached GitHub: anything but a failure to connect
/// (refused, no such host). A workflow dispatch is not idempotent, so one
/// that may have arrived is not sent again: GitHub may have started the
/// run, and a second dispatch would start another.
pub fn may_have_arrived(network_error: &str) -> bool {
    const NOT_SENT: [&str; 4] = [
        "(Connect)",
        "tcp connect error",
        "dns error",
        "Connection refused",
    ];
    !NOT_SENT.iter().any(|m| network_error.contains(m))
}

/// Backoff before retry `attempt` (1-based) when GitHub gave no hint.
pub fn backoff_ms(attempt: u32) -> u32 {
    250 * 4u32.saturating_pow(attempt.saturating_sub(1)).min(16)
}

/// GitHub's error body: `{"message": ...}`.
#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// A short, secret-free description of a failed answer for `error_text`.
pub fn describe(response: &OutboundResponse) -> String {
    let message = serde_json::from_str::<ErrorBody>(&response.body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| response.body.chars().take(200).collect());
    let message: String = message.chars().take(300).collect();
    if message.trim().is_empty() {
        format!("HTTP {}", response.status)
    } else {
        format!("HTTP {}: {}", response.status, message.trim())
    }
}

/// A workflow run's `status`. GitHub may add values: they read as
/// [`RunStatus::Unknown`], which the reconciler treats as "not finished".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Requested,
    Queued,
    Pending,
    Waiting,
    InProgress,
    Completed,
    #[serde(other)]
    Unknown,
}

/// A completed run's `conclusion`. New values read as
/// [`Conclusion::Unknown`], which the reconciler treats as "lost".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    StartupFailure,
    Cancelled,
    TimedOut,
    Neutral,
    Skipped,
    Stale,
    ActionRequired,
    #[serde(other)]
    Unknown,
}

impl Conclusion {
    /// GitHub's name, for `error_text`.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::StartupFailure => "startup_failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Neutral => "neutral",
            Conclusion::Skipped => "skipped",
            Conclusion::Stale => "stale",
            Conclusion::ActionRequired => "action_required",
            Conclusion::Unknown => "unknown",
        }
    }
}

/// The parts of a workflow run the reconciler reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRun {
    pub id: u64,
    pub run_attempt: u32,
    pub status: RunStatus,
    /// Set when completed.
    pub conclusion: Option<Conclusion>,
    pub html_url: Option<String>,
    /// When GitHub last changed the run (its completion time once completed).
    pub updated_at: Option<i64>,
}

/// `GET /actions/runs/{id}` as sent; only what is read.
#[derive(Deserialize)]
struct WireRun {
    id: u64,
    run_attempt: Option<u64>,
    status: RunStatus,
    conclusion: Option<Conclusion>,
    html_url: Option<String>,
    updated_at: Option<String>,
}

/// Reads a `GET /actions/runs/{id}` body; `None` when it is not a run.
pub fn read_workflow_run(body: &str) -> Option<WorkflowRun> {
    let w: WireRun = serde_json::from_str(body).ok()?;
    Some(WorkflowRun {
        id: w.id,
        run_attempt: w
            .run_attempt
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1),
        status: w.status,
        conclusion: w.conclusion,
        html_url: w.html_url,
        updated_at: w.updated_at.as_deref().and_then(crate::time::parse_iso8601),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GitHubConfig {
        GitHubConfig {
            api_url: "https://api.github.com".into(),
            repository: "acme/app".into(),
            workflow: "backup.yml".into(),
            workflow_ref: "main".into(),
            token: "ghp_secret".into(),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> OutboundResponse {
        OutboundResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    #[test]
    fn dispatch_request_matches_the_contract() {
        let id = DispatchId::issue(1_764_000_000_000, [5; 10]);
        let req = config().dispatch_request(id);
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.url,
            "https://api.github.com/repos/acme/app/actions/workflows/backup.yml/dispatches"
        );
        let body: serde_json::Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"ref": "main", "inputs": {"dispatch_id": id.to_string()}, "return_run_details": true})
        );
        let header = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("authorization"), Some("Bearer ghp_secret"));
        assert_eq!(header("accept"), Some("application/vnd.github+json"));
        assert_eq!(header("x-github-api-version"), Some(API_VERSION));
    }

    #[test]
    fn config_debug_never_shows_the_token() {
        assert!(!format!("{:?}", config()).contains("ghp_secret"));
    }

    #[test]
    fn a_200_with_run_details_is_accepted_with_its_run() {
        let r = response(
            200,
            &[],
            r#"{"workflow_run_id": 987, "run_url": "https://api.github.com/repos/acme/app/actions/runs/987", "html_url": "https://github.com/acme/app/actions/runs/987"}"#,
        );
        assert_eq!(
            read_dispatch_response(&r),
            DispatchAnswer::Accepted {
                workflow_run_id: Some(987),
                run_url: Some("https://github.com/acme/app/actions/runs/987".into())
            }
        );
    }

    #[test]
    fn only_a_failure_to_connect_proves_a_dispatch_never_arrived() {
        for not_sent in [
            "error sending request for url (https://api.github.com/x): client error (Connect): tcp connect error: Connection refused (os error 111)",
            "error sending request for url (https://api.github.com/x): client error (Connect): dns error: failed to lookup address information",
        ] {
            assert!(!may_have_arrived(not_sent), "{not_sent}");
        }
        for maybe in [
            "Signal timed out.",
            "error sending request for url (https://api.github.com/x): client error (SendRequest): connection closed before message completed",
            "connection reset by peer",
            "no scripted answer",
        ] {
            assert!(may_have_arrived(maybe), "{maybe}");
        }
    }

    #[test]
    fn a_run_id_past_what_a_report_may_carry_is_no_run_id() {
        for id in ["0", "9007199254740992", "18446744073709551615"] {
            let r = response(200, &[], &format!(r#"{{"workflow_run_id": {id}}}"#));
            assert_eq!(
                read_dispatch_response(&r),
                DispatchAnswer::Accepted {
                    workflow_run_id: None,
                    run_url: None
                },
                "{id}"
            );
        }
        let r = response(200, &[], r#"{"workflow_run_id": 9007199254740991}"#);
        assert_eq!(
            read_dispatch_response(&r),
            DispatchAnswer::Accepted {
                workflow_run_id: Some(9_007_199_254_740_991),
                run_url: None
            }
        );
    }

    #[test]
    fn a_204_is_accepted_without_a_run() {
        assert_eq!(
            read_dispatch_response(&response(204, &[], "")),
            DispatchAnswer::Accepted {
                workflow_run_id: None,
                run_url: None
            }
        );
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried() {
        for r in [
            response(500, &[], ""),
            response(503, &[], "{\"message\":\"unavailable\"}"),
            response(429, &[("retry-after", "2")], ""),
            response(
                403,
                &[("x-ratelimit-remaining", "0")],
                "{\"message\":\"API rate limit exceeded\"}",
            ),
        ] {
            assert!(
                matches!(read_dispatch_response(&r), DispatchAnswer::Retry { .. }),
                "{}",
                r.status
            );
        }
        assert_eq!(
            retry_wait_ms(&response(429, &[("retry-after", "2")], "")),
            Some(2000)
        );
    }

    #[test]
    fn client_errors_are_refused_with_githubs_message() {
        let r = response(
            422,
            &[],
            r#"{"message":"Workflow does not have 'workflow_dispatch' trigger"}"#,
        );
        assert_eq!(
            read_dispatch_response(&r),
            DispatchAnswer::Refused {
                detail: "HTTP 422: Workflow does not have 'workflow_dispatch' trigger".into()
            }
        );
        for status in [401, 403, 404] {
            assert!(matches!(
                read_dispatch_response(&response(status, &[], "")),
                DispatchAnswer::Refused { .. }
            ));
        }
    }

    #[test]
    fn rate_limits_say_until_when() {
        let now = 1_000_000;
        assert_eq!(
            rate_limited_until(&response(429, &[("retry-after", "30")], ""), now),
            Some(now + 30_000)
        );
        assert_eq!(
            rate_limited_until(
                &response(
                    403,
                    &[
                        ("x-ratelimit-remaining", "0"),
                        ("x-ratelimit-reset", "1200")
                    ],
                    ""
                ),
                now
            ),
            Some(1_200_000)
        );
        assert_eq!(
            rate_limited_until(&response(429, &[], ""), now),
            Some(now + 60_000)
        );
        assert_eq!(
            rate_limited_until(
                &response(403, &[], "{\"message\":\"Resource not accessible\"}"),
                now
            ),
            None
        );
        assert_eq!(rate_limited_until(&response(500, &[], ""), now), None);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff_ms(1), 250);
        assert_eq!(backoff_ms(2), 1000);
        assert_eq!(backoff_ms(9), 4000);
    }

    #[test]
    fn reads_a_workflow_run() {
        let run = read_workflow_run(r#"{"id": 5, "run_attempt": 2, "status": "completed", "conclusion": "cancelled", "html_url": "https://x/5"}"#).unwrap();
        assert_eq!(run.conclusion, Some(Conclusion::Cancelled));
        assert_eq!(run.run_attempt, 2);
        assert!(read_workflow_run("{}").is_none());
    }

    #[test]
    fn status_and_conclusion_values_github_adds_later_read_as_unknown() {
        let run = read_workflow_run(
            r#"{"id": 5, "status": "hibernating", "conclusion": "abandoned", "updated_at": "2026-11-30T04:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(run.status, RunStatus::Unknown);
        assert_eq!(run.conclusion, Some(Conclusion::Unknown));
        assert_eq!(run.run_attempt, 1, "a missing attempt is the first");
        let queued =
            read_workflow_run(r#"{"id": 6, "status": "queued", "conclusion": null}"#).unwrap();
        assert_eq!(
            (queued.status, queued.conclusion),
            (RunStatus::Queued, None)
        );
    }
}
