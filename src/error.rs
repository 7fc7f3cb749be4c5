//! The one error type of the core, and the one place it becomes HTTP.
//!
//! Every failure a request can meet is a variant here. [`Error::to_response`]
//! maps it to a status code, a stable machine-readable `code` and a short
//! message for the client. The full cause (a database message, a GitHub
//! answer) is only ever logged on the server through [`Error::log_detail`];
//! it never reaches a response body.

use crate::http::Response;
use serde::Serialize;

/// Everything that can go wrong while serving a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// 400: a field of the request body is missing or invalid. Names the field.
    InvalidField { field: String, message: String },
    /// 400: the body is not the JSON document the endpoint expects.
    InvalidBody(String),
    /// 400: a query parameter is invalid. Names the parameter.
    InvalidParameter { name: String, message: String },
    /// 401: no bearer token was sent.
    MissingToken,
    /// 401: the bearer token is malformed, expired or badly signed.
    InvalidToken(String),
    /// 401: the webhook signature headers are missing, stale or wrong.
    InvalidSignature(String),
    /// 401: the report's GitHub OIDC token is refused; names the claim (or
    /// the part of the token) that failed, never its content.
    OidcRefused(crate::credentials::oidc::Refusal),
    /// 403: the user is authenticated but not a backup admin.
    NotAdmin,
    /// 403: a CORS preflight from an origin not in ALLOWED_ORIGINS.
    OriginNotAllowed,
    /// 404: no run has this dispatch id.
    UnknownDispatchId,
    /// 404: no such function or route.
    NotFound,
    /// 405: the method is not served by this endpoint.
    MethodNotAllowed { allow: &'static str },
    /// 409: a backup is already running; carries its dispatch id.
    BackupInProgress { dispatch_id: Option<String> },
    /// 409: the report comes from an older run attempt than the row holds.
    StaleAttempt { reported: u32, current: u32 },
    /// 409: the run's state does not allow this report.
    IllegalTransition(String),
    /// 409: this `webhook-id` was delivered before with another body.
    WebhookIdReused,
    /// 413: the body is larger than the endpoint accepts.
    PayloadTooLarge { limit: usize },
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 500: a required setting is missing or invalid. Names the setting.
    Config {
        setting: &'static str,
        message: String,
    },
    /// 500: a bug or an unexpected answer. The detail is logged only.
    Internal(String),
    /// 502: GitHub refused the dispatch or failed after bounded retries.
    DispatchFailed { dispatch_id: String, detail: String },
    /// 502: GitHub, the JWKS endpoint or Supabase Auth could not be used for a read.
    Upstream(String),
    /// 503: the database cannot be reached.
    DatabaseUnavailable(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::InvalidParameter`].
    pub fn parameter(name: &str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name: name.to_string(),
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidField { .. } | Error::InvalidBody(_) | Error::InvalidParameter { .. } => {
                400
            }
            Error::MissingToken
            | Error::InvalidToken(_)
            | Error::InvalidSignature(_)
            | Error::OidcRefused(_) => 401,
            Error::NotAdmin | Error::OriginNotAllowed => 403,
            Error::UnknownDispatchId | Error::NotFound => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::BackupInProgress { .. }
            | Error::StaleAttempt { .. }
            | Error::IllegalTransition(_)
            | Error::WebhookIdReused => 409,
            Error::PayloadTooLarge { .. } => 413,
            Error::UnsupportedMediaType => 415,
            Error::Config { .. } | Error::Internal(_) => 500,
            Error::DispatchFailed { .. } | Error::Upstream(_) => 502,
            Error::DatabaseUnavailable(_) => 503,
        }
    }

    /// The stable error code clients can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidField { .. } => "invalid_field",
            Error::InvalidBody(_) => "invalid_body",
            Error::InvalidParameter { .. } => "invalid_parameter",
            Error::MissingToken => "missing_token",
            Error::InvalidToken(_) => "invalid_token",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::OidcRefused(refusal) => refusal.code(),
            Error::NotAdmin => "not_admin",
            Error::OriginNotAllowed => "origin_not_allowed",
            Error::UnknownDispatchId => "unknown_dispatch_id",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::BackupInProgress { .. } => "backup_in_progress",
            Error::StaleAttempt { .. } => "stale_attempt",
            Error::IllegalTransition(_) => "illegal_transition",
            Error::WebhookIdReused => "webhook_id_reused",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Config { .. } => "config_missing",
            Error::Internal(_) => "internal",
            Error::DispatchFailed { .. } => "dispatch_failed",
            Error::Upstream(_) => "upstream_unavailable",
            Error::DatabaseUnavailable(_) => "database_unavailable",
        }
    }

    /// The short message sent to the client. It may name a field, a setting
    /// or a limit, but never carries a secret or an internal cause.
    pub fn public_message(&self) -> String {
        match self {
            Error::InvalidField { field, message } => format!("{field}: {message}"),
            Error::InvalidBody(m) => m.clone(),
            Error::InvalidParameter { name, message } => format!("{name}: {message}"),
            Error::MissingToken => "Authorization: Bearer <access token> is required".into(),
            Error::InvalidToken(_) => "the access token is invalid or expired".into(),
            Error::InvalidSignature(m) => m.clone(),
            Error::OidcRefused(refusal) => refusal.message().into(),
            Error::NotAdmin => "this user is not a backup admin".into(),
            Error::OriginNotAllowed => "this origin is not allowed".into(),
            Error::UnknownDispatchId => "no backup run has this dispatch_id".into(),
            Error::NotFound => "no such endpoint".into(),
            Error::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            Error::BackupInProgress { .. } => "a backup is already running".into(),
            Error::StaleAttempt { reported, current } => {
                format!("run_attempt {reported} is older than the recorded attempt {current}")
            }
            Error::IllegalTransition(m) => m.clone(),
            Error::WebhookIdReused => {
                "this webhook-id was delivered before with another body".into()
            }
            Error::PayloadTooLarge { limit } => format!("the body exceeds {limit} bytes"),
            Error::UnsupportedMediaType => "the body must be application/json".into(),
            Error::Config { setting, message } => {
                format!("server misconfigured: {setting} {message}")
            }
            Error::Internal(_) => "internal error".into(),
            Error::DispatchFailed { .. } => "GitHub did not accept the workflow dispatch".into(),
            Error::Upstream(_) => "an upstream service is unavailable".into(),
            Error::DatabaseUnavailable(_) => "the database is unavailable".into(),
        }
    }

    /// The server-side detail to log, if there is more than the public message.
    pub fn log_detail(&self) -> Option<&str> {
        match self {
            Error::InvalidToken(d)
            | Error::Internal(d)
            | Error::Upstream(d)
            | Error::DatabaseUnavailable(d) => Some(d),
            Error::DispatchFailed { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// The error as an HTTP response: `{"error":{"code","message"}}` plus, for
    /// the errors that carry one, the `dispatch_id` the client needs.
    pub fn to_response(&self) -> Response {
        let dispatch_id = match self {
            Error::BackupInProgress { dispatch_id } => dispatch_id.as_deref(),
            Error::DispatchFailed { dispatch_id, .. } => Some(dispatch_id.as_str()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
            },
            dispatch_id,
        };
        let mut response = Response::json(self.status(), &body);
        if let Error::MethodNotAllowed { allow } = self {
            response.headers.push(("allow".into(), (*allow).into()));
        }
        response
    }
}

/// `{"error":{"code","message"}}`, plus the `dispatch_id` the client needs
/// for the errors that carry one.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatch_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.public_message())?;
        if let Some(detail) = self.log_detail() {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_has_code_and_message() {
        let r = Error::field("dispatch_id", "must be a UUID").to_response();
        assert_eq!(r.status, 400);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_field");
        assert_eq!(body["error"]["message"], "dispatch_id: must be a UUID");
    }

    #[test]
    fn internal_detail_never_reaches_the_body() {
        let r = Error::DatabaseUnavailable("password=hunter2 refused".into()).to_response();
        assert_eq!(r.status, 503);
        assert!(!r.body.contains("hunter2"));
        let r = Error::Internal("secret detail".into()).to_response();
        assert_eq!(r.status, 500);
        assert!(!r.body.contains("secret"));
    }

    #[test]
    fn backup_in_progress_carries_the_running_dispatch_id() {
        let r = Error::BackupInProgress {
            dispatch_id: Some("0193a1b2-0000-7000-8000-000000000000".into()),
        }
        .to_response();
        assert_eq!(r.status, 409);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "backup_in_progress");
        assert_eq!(body["dispatch_id"], "0193a1b2-0000-7000-8000-000000000000");
    }

    #[test]
    fn method_not_allowed_sets_allow_header() {
        let r = Error::MethodNotAllowed {
            allow: "POST, OPTIONS",
        }
        .to_response();
        assert_eq!(r.status, 405);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "allow" && v == "POST, OPTIONS"));
    }
}
