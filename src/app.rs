//! The router: which function serves a request, and the one place where an
//! [`Error`] becomes a response and its cause is logged.

use crate::config;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::{Host, Level};
use crate::store::Store;
use crate::{finalize, status, sweep, trigger};

/// The functions this core serves, by their Supabase name.
pub const FUNCTIONS: [&str; 4] = [
    "trigger-backup",
    "finalize-backup",
    "backup-status",
    "reconcile-backups",
];

/// Serves one request for the function `name`. Never fails: every error is
/// already a response here.
pub async fn handle(host: &impl Host, store: &impl Store, name: &str, req: &Request) -> Response {
    let (result, browser_facing) = match name {
        "trigger-backup" => (trigger::handle(host, store, req).await, true),
        "finalize-backup" => (finalize::handle(host, store, req).await, false),
        "backup-status" => (status::handle(host, store, req).await, true),
        "reconcile-backups" => (sweep::handle(host, store, req).await, false),
        _ => (Err(Error::NotFound), false),
    };
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let level = if error.status() >= 500 {
                Level::Error
            } else {
                Level::Info
            };
            host.log(
                level,
                &format!("{name} {} {}: {error}", req.method, error.status()),
            );
            error.to_response()
        }
    };
    if browser_facing && response.header("access-control-allow-origin").is_none() {
        config::cors(host).decorate(req, response)
    } else {
        response
    }
}
