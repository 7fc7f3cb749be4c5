//! The router: which function serves a request, the methods and CORS rules
//! every function shares, and the one place where an [`Error`] becomes a
//! response and its cause is logged.

use crate::config;
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::{Host, Level};
use crate::store::Store;
use crate::{finalize, status, sweep, trigger};
use std::future::Future;
use std::pin::Pin;

/// The functions. This is the one list of them: each name is written here
/// only. The local server routes by [`FUNCTION_NAMES`] (exported to the host
/// as `functionNames()`), and the suite checks that `supabase/functions/`,
/// `supabase/config.toml` and the README name exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Trigger,
    Finalize,
    Status,
    Sweep,
}

/// Every function's Supabase name (its directory under `supabase/functions/`).
pub const FUNCTION_NAMES: [&str; 4] = [
    Function::Trigger.name(),
    Function::Finalize.name(),
    Function::Status.name(),
    Function::Sweep.name(),
];

impl Function {
    const ALL: [Function; 4] = [
        Function::Trigger,
        Function::Finalize,
        Function::Status,
        Function::Sweep,
    ];

    const fn name(self) -> &'static str {
        match self {
            Function::Trigger => "trigger-backup",
            Function::Finalize => "finalize-backup",
            Function::Status => "backup-status",
            Function::Sweep => "reconcile-backups",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The one method it serves, and the `Allow` header of a 405.
    fn method(self) -> (&'static str, &'static str) {
        match self {
            Function::Trigger => ("POST", "POST, OPTIONS"),
            Function::Status => ("GET", "GET, POST, OPTIONS"),
            Function::Finalize | Function::Sweep => ("POST", "POST"),
        }
    }

    /// Called from browsers: answers CORS preflights and carries CORS headers.
    fn browser_facing(self) -> bool {
        matches!(self, Function::Trigger | Function::Status)
    }
}

/// The answer to something the host got wrong (a request it could not
/// describe): logged as an error, answered 500 `internal`.
pub fn host_bug(host: &impl Host, name: &str, detail: &str) -> Response {
    let error = Error::Internal(detail.to_string());
    host.log(Level::Error, &format!("{name}: host error: {error}"));
    error.to_response()
}

/// Serves one request for the function `name` (its Supabase name; unknown
/// names are a 404). Never fails: every error is already a response here.
pub async fn handle(host: &impl Host, store: &impl Store, name: &str, req: &Request) -> Response {
    let function = Function::from_name(name);
    let browser_facing = function.is_some_and(Function::browser_facing);
    let result = match function {
        None => Err(Error::NotFound),
        Some(f) => {
            let (method, allow) = f.method();
            if browser_facing && req.method == "OPTIONS" {
                config::cors(host).preflight(req, allow)
            } else if req.method != method && !(f == Function::Status && req.method == "POST") {
                Err(Error::MethodNotAllowed { allow })
            } else {
                // Each endpoint's future behind its own box: its code stays
                // a function of its own instead of being inlined into one
                // state machine for all four, so the engine compiles (lazily,
                // on first use) only the endpoint a request reaches. That
                // keeps a cold instance's first request fast.
                let endpoint: Pin<Box<dyn Future<Output = Result<Response, Error>> + '_>> = match f
                {
                    Function::Trigger => Box::pin(trigger::handle(host, store, req)),
                    Function::Finalize => Box::pin(finalize::handle(host, store, req)),
                    Function::Status => Box::pin(status::handle(host, store, req)),
                    Function::Sweep => Box::pin(sweep::handle(host, store, req)),
                };
                endpoint.await
            }
        }
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

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

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
}
