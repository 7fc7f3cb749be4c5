//! The wasm-bindgen boundary: the JS host object and the global `fetch`,
//! adapted to the core's ports. Nothing here decides anything.

use crate::config::Env;
use crate::dispatch_id::DispatchId;
use crate::github::{OutboundRequest, OutboundResponse};
use crate::ports::{Db, DbError, Host, Level};
use crate::token::SignatureCheck;
use js_sys::{Array, Object, Promise, Reflect};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// The host object built by `supabase/functions/_shared/core.ts`.
    pub type JsHost;
    #[wasm_bindgen(method)]
    fn env(this: &JsHost, name: &str) -> Option<String>;
    #[wasm_bindgen(method, js_name = nowMs)]
    fn now_ms(this: &JsHost) -> f64;
    #[wasm_bindgen(method)]
    fn log(this: &JsHost, level: &str, message: &str);
    #[wasm_bindgen(method)]
    fn sleep(this: &JsHost, ms: u32) -> Promise;
    /// Resolves to the rows as a JSON string; rejects with
    /// `{kind: "unavailable"|"unique_violation"|"other", constraint, message}`.
    #[wasm_bindgen(method)]
    fn query(this: &JsHost, sql: &str, params: Array) -> Promise;
    /// Starts `LISTEN backup_history` if needed; resolves to the number of
    /// notifications seen for this dispatch id, or rejects like `query`
    /// when LISTEN cannot be established.
    #[wasm_bindgen(method)]
    fn watch(this: &JsHost, dispatch_id: &str) -> Promise;
    /// Resolves true when the count for this id exceeds `since`, or false
    /// after `timeout_ms`.
    #[wasm_bindgen(method, js_name = waitForChange)]
    fn wait_for_change(this: &JsHost, dispatch_id: &str, since: f64, timeout_ms: u32) -> Promise;
    /// `crypto.subtle.importKey("jwk", jwk, importAlgorithm)` then
    /// `crypto.subtle.verify(verifyAlgorithm, key, signature, signed)`;
    /// the first three arguments are JSON.
    #[wasm_bindgen(method, js_name = verifySignature)]
    fn verify_signature(
        this: &JsHost,
        import_algorithm: &str,
        verify_algorithm: &str,
        jwk: &str,
        signed: &[u8],
        signature: &[u8],
    ) -> Promise;

    // The global fetch: the most portable way to reach the network from a
    // module that must run in Deno and in Supabase's edge runtime.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &JsValue) -> Promise;
    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout)]
    fn abort_after(ms: u32) -> JsValue;
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(buf: &mut [u8]);
}

thread_local! {
    static ON_PANIC: RefCell<Option<js_sys::Function>> = const { RefCell::new(None) };
}

// Installs the panic hook. `on_panic(message)` is called before the
// instance traps, so the host can fail in-flight requests with a 500 and
// re-instantiate the module instead of waiting on a promise that will
// never settle.
#[wasm_bindgen(js_name = installPanicHook)]
pub fn install_panic_hook(on_panic: js_sys::Function) {
    ON_PANIC.with(|cb| *cb.borrow_mut() = Some(on_panic));
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        ON_PANIC.with(|cb| {
            if let Some(f) = cb.borrow().as_ref() {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&info.to_string()));
            }
        });
    }));
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    // Setting a property on a plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

fn message_of(value: &JsValue) -> String {
    Reflect::get(value, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

/// Reads the `{kind, constraint, message}` the host rejects with.
fn db_error(e: &JsValue) -> DbError {
    let field = |k: &str| {
        Reflect::get(e, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    match field("kind").as_str() {
        "unavailable" => DbError::Unavailable(field("message")),
        "unique_violation" => DbError::UniqueViolation(field("constraint")),
        _ => DbError::Other(message_of(e)),
    }
}

/// `{status, headers: [[name, value]], body}` for the host's `Response`.
pub fn response_to_js(response: &crate::http::Response) -> JsValue {
    let obj = Object::new();
    set(&obj, "status", &JsValue::from(response.status));
    let headers = Array::new();
    for (k, v) in &response.headers {
        headers.push(&Array::of2(&JsValue::from_str(k), &JsValue::from_str(v)));
    }
    set(&obj, "headers", &headers);
    set(&obj, "body", &JsValue::from_str(&response.body));
    obj.into()
}

impl Env for JsHost {
    fn var(&self, name: &str) -> Option<String> {
        self.env(name)
    }
}

impl Host for JsHost {
    fn now_ms(&self) -> i64 {
        JsHost::now_ms(self) as i64
    }

    fn random(&self) -> [u8; 10] {
        let mut bytes = [0u8; 10];
        get_random_values(&mut bytes);
        bytes
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        JsHost::log(self, level, message);
    }

    async fn fetch(&self, request: OutboundRequest) -> Result<OutboundResponse, String> {
        let init = Object::new();
        set(&init, "method", &JsValue::from_str(request.method));
        let headers = Object::new();
        for (k, v) in &request.headers {
            set(&headers, k, &JsValue::from_str(v));
        }
        set(&init, "headers", &headers);
        if let Some(body) = &request.body {
            set(&init, "body", &JsValue::from_str(body));
        }
        set(&init, "signal", &abort_after(request.timeout_ms));
        let response = JsFuture::from(global_fetch(&request.url, &init))
            .await
            .map_err(|e| message_of(&e))?;
        // fetch resolves to a Response or rejects: no instanceof check needed.
        let response: web_sys::Response = response.unchecked_into();
        let mut headers = Vec::new();
        if let Ok(Some(iter)) = js_sys::try_iter(&response.headers()) {
            for entry in iter.flatten() {
                let pair = Array::from(&entry);
                if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                    headers.push((k.to_ascii_lowercase(), v));
                }
            }
        }
        let text = response.text().map_err(|e| message_of(&e))?;
        let body = JsFuture::from(text)
            .await
            .map_err(|e| message_of(&e))?
            .as_string()
            .unwrap_or_default();
        Ok(OutboundResponse {
            status: response.status(),
            headers,
            body,
        })
    }

    async fn sleep(&self, ms: u32) {
        let _ = JsFuture::from(JsHost::sleep(self, ms)).await;
    }

    async fn watch(&self, id: DispatchId) -> Result<u64, DbError> {
        match JsFuture::from(JsHost::watch(self, &id.to_string())).await {
            Ok(n) => Ok(n.as_f64().unwrap_or(0.0) as u64),
            Err(e) => Err(db_error(&e)),
        }
    }

    async fn wait_for_change(&self, id: DispatchId, since: u64, timeout_ms: u32) -> bool {
        let promise = JsHost::wait_for_change(self, &id.to_string(), since as f64, timeout_ms);
        JsFuture::from(promise).await.ok().and_then(|v| v.as_bool()) == Some(true)
    }

    async fn verify_signature(&self, check: &SignatureCheck) -> Result<bool, String> {
        let promise = JsHost::verify_signature(
            self,
            &check.import_algorithm.to_string(),
            &check.verify_algorithm.to_string(),
            &check.jwk.to_string(),
            &check.signed,
            &check.signature,
        );
        JsFuture::from(promise)
            .await
            .map(|v| v.as_bool() == Some(true))
            .map_err(|e| message_of(&e))
    }
}

impl Db for JsHost {
    async fn query(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<serde_json::Value, DbError> {
        let array = Array::new();
        for p in params {
            array.push(&p.as_deref().map_or(JsValue::NULL, JsValue::from_str));
        }
        match JsFuture::from(JsHost::query(self, sql, array)).await {
            Ok(rows) => {
                let text = rows.as_string().unwrap_or_default();
                serde_json::from_slice(text.as_bytes())
                    .map_err(|_| DbError::Other("the host returned rows that are not JSON".into()))
            }
            Err(e) => Err(db_error(&e)),
        }
    }
}
