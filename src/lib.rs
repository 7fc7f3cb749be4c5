//! Backup control plane: the decisions, compiled to WebAssembly.
//!
//! Supabase Edge Functions (Deno) host this crate. The host does I/O; every
//! decision is made here. A map of the crate, by role:
//!
//! | module | concept |
//! |---|---|
//! | **the run** | |
//! | [`dispatch_id`] | the one identity of a run (UUIDv7), issued here only |
//! | [`run`] | a `backup_history` row and **the state machine** |
//! | [`reconcile`] | deadlines and GitHub's record: ending silent runs |
//! | [`report`] | what the workflow reports to `finalize-backup` |
//! | [`progress`] | the one open object in a report, in one canonical form |
//! | [`verification`] | the workflow's verdict on the object it stored |
//! | [`retention`] | which stored objects a success makes deletable |
//! | [`presign`] | presigned S3 download links (SigV4), for admins |
//! | [`alerts`] | what raises an alert, the outbox sender and its messages |
//! | **[`endpoints`]** | one per function: parse, apply, encode |
//! | [`endpoints::trigger`], [`endpoints::finalize`], [`endpoints::status`], [`endpoints::sweep`] | `trigger-backup`, `finalize-backup`, `backup-status`, `reconcile-backups` |
//! | [`app`] | routing, and errors turned into responses |
//! | **[`credentials`]** | who may call, and what they sent is theirs |
//! | [`credentials::webhook`] | Standard Webhooks signatures on reports |
//! | [`credentials::oidc`] | reports bound to the exact GitHub run by its OIDC token |
//! | [`credentials::token`] | user access tokens (HS256, ES256, RS256) |
//! | [`credentials::auth`] | the caller: a verified user who is a backup admin |
//! | **[`ports`]** | what the core asks of its host (clock, fetch, SQL, ...), and the adapters over it |
//! | [`ports::store`] | persistence of runs; the SQL is in `src/sql/` |
//! | [`ports::coalesce`] | reports that arrive together under load, sent in shared statements |
//! | [`ports::change_feed`] | how a long-poll hears of a change: LISTEN, or polling |
//! | [`ports::github`] | building and reading GitHub REST calls |
//! | `ports::wasm` | the ports over wasm-bindgen: the JS host, and its generated TypeScript contract |
//! | **plumbing** | |
//! | [`http`] | requests and responses as plain data, CORS |
//! | [`body`] | JSON request bodies, typed, each failure named by member |
//! | [`error`] | the one error enum, mapped to HTTP in one place |
//! | [`config`] | settings from the environment, named when missing |
//! | [`time`] | ISO 8601 in and out |
//!
//! Below is the wasm-bindgen boundary: thin functions that convert JS values
//! and call the pure code above.

pub mod alerts;
pub mod app;
pub mod body;
pub mod config;
pub mod credentials;
pub mod dispatch_id;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod ports;
pub mod presign;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod retention;
pub mod run;
pub mod time;
pub mod verification;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
pub use boundary::*;

#[cfg(target_arch = "wasm32")]
mod boundary {
    use crate::http::{host_headers, Request, MAX_BODY_BYTES};
    use crate::ports::store::PgStore;
    use crate::ports::wasm::{to_js, JsHost};
    use wasm_bindgen::prelude::*;

    // Serves one request for the function `name`: its method, its full URL,
    // its headers as `name\0value\0...` (crate::http::host_headers says
    // why one string) and at most `maxBodyBytes() + 1` bytes of its body.
    // Never rejects for a request problem: errors are already responses. A
    // request the host built wrongly is a host bug: logged, and answered
    // 500. (Plain comments: doc comments would be copied into the generated
    // JS.)
    #[wasm_bindgen(unchecked_return_type = "CoreResponse")]
    pub async fn handle(
        name: String,
        method: String,
        url: String,
        headers: String,
        body: Vec<u8>,
        host: JsHost,
    ) -> Result<JsValue, JsValue> {
        let response = match host_headers(&headers) {
            Some(headers) => {
                let req = Request::new(&method, &url, headers, body);
                #[cfg(feature = "test-panic")]
                if req.header("x-backup-test-panic").is_some() {
                    panic!("deliberate panic requested by a test");
                }
                let store = PgStore::new(&host);
                crate::app::handle(&host, &store, &name, &req).await
            }
            None => crate::app::host_bug(&host, &name, "malformed request: unpaired header fields"),
        };
        to_js(&response)
    }

    // The largest body the endpoints accept, in bytes.
    #[wasm_bindgen(js_name = maxBodyBytes)]
    pub fn max_body_bytes() -> usize {
        MAX_BODY_BYTES
    }

    // Every function's name (the directories under supabase/functions/).
    #[wasm_bindgen(js_name = functionNames)]
    pub fn function_names() -> Vec<String> {
        crate::app::FUNCTION_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    // The functions this module serves: the one it was built for.
    #[wasm_bindgen(js_name = servedFunctions)]
    pub fn served_functions() -> Vec<String> {
        crate::app::served_functions()
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}
