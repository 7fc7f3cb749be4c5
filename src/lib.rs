//! Backup control plane: the decisions, compiled to WebAssembly.
//!
//! Supabase Edge Functions (Deno) host this crate. The host does I/O; every
//! decision is made here. A map of the crate:
//!
//! | module | concept |
//! |---|---|
//! | [`dispatch_id`] | the one identity of a run (UUIDv7), issued here only |
//! | [`run`] | a `backup_history` row and **the state machine** |
//! | [`report`] | what the workflow reports to `finalize-backup` |
//! | [`webhook`] | Standard Webhooks signatures on those reports |
//! | [`token`] | user access tokens (HS256, ES256, RS256) |
//! | [`auth`] | the caller: a verified user who is a backup admin |
//! | [`github`] | building and reading GitHub REST calls |
//! | [`config`] | settings from the environment, named when missing |
//! | [`http`] | requests and responses as plain data, CORS |
//! | [`error`] | the one error enum, mapped to HTTP in one place |
//! | [`ports`] | what the core asks of its host (clock, fetch, SQL, ...) |
//! | [`store`] | persistence of runs; the SQL is in `src/sql/` |
//! | [`trigger`], [`finalize`] | the endpoints: parse, apply, encode |
//! | [`app`] | routing, and errors turned into responses |
//!
//! Below is the wasm-bindgen boundary: thin functions that convert JS values
//! and call the pure code above.

pub mod app;
pub mod auth;
pub mod config;
pub mod dispatch_id;
pub mod error;
pub mod finalize;
pub mod github;
pub mod http;
pub mod ports;
pub mod report;
pub mod run;
pub mod store;
pub mod token;
pub mod trigger;
pub mod webhook;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(test)]
mod testing;

#[cfg(target_arch = "wasm32")]
pub use boundary::*;

#[cfg(target_arch = "wasm32")]
mod boundary {
    use crate::config::Env;
    use crate::http::{Request, MAX_BODY_BYTES};
    use crate::store::PgStore;
    use crate::wasm::JsHost;
    use wasm_bindgen::prelude::*;

    /// Serves one request for the function `name`.
    ///
    /// `headers` is a flat list `[name, value, name, value, ...]`; `body` is
    /// at most `maxBodyBytes() + 1` bytes (the host stops reading there).
    /// Resolves to `{status, headers: [[name, value]], body}`. Never rejects
    /// for a request problem: errors are already responses.
    #[wasm_bindgen]
    pub async fn handle(
        name: String,
        method: String,
        url: String,
        headers: Vec<String>,
        body: Vec<u8>,
        host: JsHost,
    ) -> Result<JsValue, JsValue> {
        let pairs = headers
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
            .collect();
        let req = Request::new(&method, &url, pairs, body);
        if name == "__panic" && host.var("BACKUP_ENABLE_TEST_PANIC").as_deref() == Some("1") {
            // Lets the host's panic recovery be tested end to end.
            panic!("deliberate panic requested by a test");
        }
        let store = PgStore::new(&host);
        let response = crate::app::handle(&host, &store, &name, &req).await;
        serde_wasm_bindgen::to_value(&response).map_err(|e| JsValue::from_str(&e.to_string()))
    }

    /// The largest body the endpoints accept, in bytes.
    #[wasm_bindgen(js_name = maxBodyBytes)]
    pub fn max_body_bytes() -> usize {
        MAX_BODY_BYTES
    }

    /// The function names this module serves.
    #[wasm_bindgen(js_name = functionNames)]
    pub fn function_names() -> Vec<String> {
        crate::app::FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// `webhook-signature` for a report (for `deno task dev`'s curl example).
    ///
    /// # Errors
    /// When `secret` is not `whsec_<base64>`.
    #[wasm_bindgen(js_name = signWebhook)]
    pub fn sign_webhook(
        secret: &str,
        id: &str,
        timestamp: f64,
        body: &str,
    ) -> Result<String, JsValue> {
        let secret = crate::webhook::WebhookSecret::parse(secret)
            .map_err(|e| JsValue::from_str(&e.public_message()))?;
        Ok(secret.sign(id, timestamp as i64, body.as_bytes()))
    }

    /// An HS256 user token (for `deno task dev`'s local admin).
    #[wasm_bindgen(js_name = signUserToken)]
    pub fn sign_user_token(secret: &str, user_id: &str, expires_at: f64) -> String {
        crate::token::sign_hs256(
            secret.as_bytes(),
            &serde_json::json!({
                "sub": user_id, "role": "authenticated", "aud": "authenticated",
                "exp": expires_at as i64,
            }),
        )
    }
}
