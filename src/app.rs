//! The router: which function serves a request, the methods and CORS rules
//! every function shares, and the one place where an [`Error`] becomes a
//! response and its cause is logged.

use crate::config;
use crate::endpoints::{finalize, status, sweep, trigger};
use crate::error::Error;
use crate::http::{Request, Response};
use crate::ports::store::Store;
use crate::ports::{Host, Level};
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

    /// A function this build serves: the module of one function (its
    /// cargo feature alone, as scripts/build_wasm.sh builds pkg/) serves
    /// that function only, and its code holds no other endpoint.
    fn from_name(name: &str) -> Option<Self> {
        Function::ALL
            .into_iter()
            .find(|f| f.name() == name && f.compiled())
    }

    /// Whether this build has the function's endpoint. A constant: where
    /// it is false, the optimiser drops the endpoint and all it alone uses.
    const fn compiled(self) -> bool {
        match self {
            Function::Trigger => cfg!(feature = "trigger-backup"),
            Function::Finalize => cfg!(feature = "finalize-backup"),
            Function::Status => cfg!(feature = "backup-status"),
            Function::Sweep => cfg!(feature = "reconcile-backups"),
        }
    }

    /// The methods it serves (besides a browser's preflight), and the
    /// `Allow` header of a 405.
    fn methods(self) -> (&'static [&'static str], &'static str) {
        match self {
            Function::Trigger => (&["POST"], "POST, OPTIONS"),
            // GET reads runs; POST is the admin's actions (a test alert).
            Function::Status => (&["GET", "POST"], "GET, POST, OPTIONS"),
            Function::Finalize | Function::Sweep => (&["POST"], "POST"),
        }
    }

    /// Called from browsers: answers CORS preflights and carries CORS headers.
    fn browser_facing(self) -> bool {
        matches!(self, Function::Trigger | Function::Status)
    }
}

/// The functions this build serves (see [`Function::from_name`]): one in
/// each deployed module, all four in native builds.
pub fn served_functions() -> Vec<&'static str> {
    Function::ALL
        .into_iter()
        .filter(|f| f.compiled())
        .map(Function::name)
        .collect()
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
            let (methods, allow) = f.methods();
            if browser_facing && req.method == "OPTIONS" {
                config::cors(host).preflight(req, allow)
            } else if !methods.contains(&req.method.as_str()) {
                Err(Error::MethodNotAllowed { allow })
            } else {
                // Each endpoint's future behind its own box: its code stays
                // a function of its own instead of being inlined into one
                // state machine for all four. The guards are constants, so
                // a one-function build keeps only its own arm.
                let endpoint: Pin<Box<dyn Future<Output = Result<Response, Error>> + '_>> = match f
                {
                    Function::Trigger if f.compiled() => {
                        Box::pin(trigger::handle(host, store, req))
                    }
                    Function::Finalize if f.compiled() => {
                        Box::pin(finalize::handle(host, store, req))
                    }
                    Function::Status if f.compiled() => Box::pin(status::handle(host, store, req)),
                    Function::Sweep if f.compiled() => Box::pin(sweep::handle(host, store, req)),
                    // from_name gives compiled functions only.
                    _ => Box::pin(async { Err(Error::NotFound) }),
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
    fn each_function_has_the_cargo_feature_its_module_is_built_with() {
        // scripts/build_wasm.sh reads the function list from the default
        // features; they must be exactly the functions, in order.
        let manifest = include_str!("../Cargo.toml");
        let default = manifest
            .lines()
            .find_map(|l| l.strip_prefix("default = "))
            .expect("a default feature list");
        let listed: Vec<&str> = default
            .trim_matches(['[', ']'])
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        assert_eq!(listed, app::FUNCTION_NAMES);
        assert_eq!(app::served_functions(), app::FUNCTION_NAMES);
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
