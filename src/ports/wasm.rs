//! The wasm-bindgen boundary: the JS host object and the global `fetch`,
//! adapted to the core's ports. Nothing here decides anything.

use crate::config::Env;
use crate::credentials::token::SignatureCheck;
use crate::dispatch_id::DispatchId;
use crate::ports::github::{OutboundRequest, OutboundResponse};
use crate::ports::{Db, DbError, Host, Level};
use js_sys::{Array, Promise, Reflect};
use serde::Serialize;
use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

// The host contract, in TypeScript. `JsHost` below is typed as `Host`, so
// the generated pkg/backup_core.d.ts declares exactly what the core calls,
// and supabase/functions/_shared/core.ts implements it: `deno check` fails
// as soon as the two drift apart (tests/host_contract_test.ts breaks it on
// purpose to prove that).
#[wasm_bindgen(typescript_custom_section)]
const HOST_CONTRACT: &'static str = r#"
/** The core's answer, plain data for one `new Response(...)`. */
export interface CoreResponse {
  status: number;
  headers: [string, string][];
  body: string;
}

/** How a database call failed: the host rejects `query`/`watch` with it. */
export interface DbFailure {
  kind: "unavailable" | "unique_violation" | "other";
  constraint: string;
  message: string;
}

/** What the core asks of its host. Every method is plain I/O. */
export interface Host {
  /** An environment variable (a function secret). The core asks once per
   * name and keeps the answer for the instance's life. */
  env(name: string): string | undefined;
  /** Unix time in milliseconds. */
  nowMs(): number;
  /** One server log line; never given a secret. */
  log(level: "info" | "warn" | "error", message: string): void;
  sleep(ms: number): Promise<void>;
  /** One SQL statement with text parameters, on the database the core
   * chose, as a prepared statement if `prepare`; resolves to its rows as
   * returned by the driver. Rejects with a `DbFailure`. */
  query(
    databaseUrl: string,
    prepare: boolean,
    sql: string,
    params: (string | null)[],
  ): Promise<unknown[]>;
  /** Starts LISTEN on that database if needed; resolves to the changes
   * seen for this id. Rejects with a `DbFailure`. */
  watch(databaseUrl: string, dispatchId: string): Promise<number>;
  /** Resolves true once more than `since` changes of the id were seen,
   * false after `timeoutMs`. */
  waitForChange(dispatchId: string, since: number, timeoutMs: number): Promise<boolean>;
  /** `crypto.subtle.importKey("jwk", jwk, importAlgorithm, false, ["verify"])`
   * then `crypto.subtle.verify(verifyAlgorithm, key, signature, signed)`. */
  verifySignature(
    importAlgorithm: RsaHashedImportParams | EcKeyImportParams,
    verifyAlgorithm: AlgorithmIdentifier | EcdsaParams,
    jwk: JsonWebKey,
    signed: Uint8Array,
    signature: Uint8Array,
  ): Promise<boolean>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The host object built by `supabase/functions/_shared/core.ts`.
    #[wasm_bindgen(typescript_type = "Host")]
    pub type JsHost;
    #[wasm_bindgen(method)]
    fn env(this: &JsHost, name: &str) -> Option<String>;
    #[wasm_bindgen(method, js_name = nowMs)]
    fn now_ms(this: &JsHost) -> f64;
    #[wasm_bindgen(method)]
    fn log(this: &JsHost, level: &str, message: &str);
    #[wasm_bindgen(method)]
    fn sleep(this: &JsHost, ms: u32) -> Promise;
    #[wasm_bindgen(method)]
    fn query(this: &JsHost, database_url: &str, prepare: bool, sql: &str, params: Array)
        -> Promise;
    #[wasm_bindgen(method)]
    fn watch(this: &JsHost, database_url: &str, dispatch_id: &str) -> Promise;
    #[wasm_bindgen(method, js_name = waitForChange)]
    fn wait_for_change(this: &JsHost, dispatch_id: &str, since: f64, timeout_ms: u32) -> Promise;
    #[wasm_bindgen(method, js_name = verifySignature)]
    fn verify_signature(
        this: &JsHost,
        import_algorithm: &JsValue,
        verify_algorithm: &JsValue,
        jwk: &JsValue,
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
    /// The settings read so far, by name (see `impl Env for JsHost`).
    static SETTINGS: RefCell<Vec<(String, Option<String>)>> = const { RefCell::new(Vec::new()) };
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

/// The `RequestInit` of an outbound fetch (its `signal` is set apart: an
/// `AbortSignal` is no plain data).
#[derive(Serialize)]
struct FetchInit<'a> {
    method: &'a str,
    /// `follow`, or `manual`: Deno then answers with the 3xx itself.
    redirect: &'a str,
    headers: &'a [(String, String)],
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

fn set(obj: &JsValue, key: &str, value: &JsValue) {
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

/// Converts plain data for the host: structs become plain objects, tuples
/// arrays, `serde_json::Value` objects plain objects (not `Map`s).
///
/// # Errors
/// Only for a value serde cannot represent in JS (a bug): the host then
/// answers 500.
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(JsValue::from)
}

// A function's settings are fixed for the life of its instance (Supabase
// restarts a function when its secrets change), and a request reads four
// (a progress report) to thirteen (a failure, which may raise alerts) of
// them: each crosses from the host once, on first use, not once a request.
// A list, not a map: there are about a dozen names.
impl Env for JsHost {
    fn var(&self, name: &str) -> Option<String> {
        let known = SETTINGS.with_borrow(|settings| {
            settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| value.clone())
        });
        known.unwrap_or_else(|| {
            let value = self.env(name);
            SETTINGS.with_borrow_mut(|settings| settings.push((name.to_owned(), value.clone())));
            value
        })
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
        let init = to_js(&FetchInit {
            method: request.method,
            redirect: if request.follow_redirects {
                "follow"
            } else {
                "manual"
            },
            headers: &request.headers,
            body: request.body.as_deref(),
        })
        .map_err(|e| message_of(&e))?;
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
        let watching = on_database(self, |url, _| JsHost::watch(self, url, &id.to_string()))?;
        match JsFuture::from(watching).await {
            Ok(n) => Ok(n.as_f64().unwrap_or(0.0) as u64),
            Err(e) => Err(db_error(&e)),
        }
    }

    async fn wait_for_change(&self, id: DispatchId, since: u64, timeout_ms: u32) -> bool {
        let promise = JsHost::wait_for_change(self, &id.to_string(), since as f64, timeout_ms);
        JsFuture::from(promise).await.ok().and_then(|v| v.as_bool()) == Some(true)
    }

    async fn verify_signature(&self, check: &SignatureCheck) -> Result<bool, String> {
        fn js(v: &impl Serialize) -> Result<JsValue, String> {
            to_js(v).map_err(|e| message_of(&e))
        }
        let promise = JsHost::verify_signature(
            self,
            &js(&check.import_algorithm)?,
            &js(&check.verify_algorithm)?,
            &js(&check.jwk)?,
            &check.signed,
            &check.signature,
        );
        JsFuture::from(promise)
            .await
            .map(|v| v.as_bool() == Some(true))
            .map_err(|e| message_of(&e))
    }
}

thread_local! {
    /// The database the host connects to, and whether statements on it may
    /// be prepared: both follow from settings that are fixed for the
    /// instance's life (`impl Env for JsHost`), so they are worked out on
    /// the first query, not on every one.
    static DATABASE: RefCell<Option<(String, bool)>> = const { RefCell::new(None) };
}

/// Calls `f` with the database the host connects to
/// ([`crate::ports::change_feed::database_url`] decides which) and whether
/// it may prepare statements ([`crate::ports::change_feed::may_prepare`]),
/// borrowed from where they are kept; without a database, it is
/// unavailable (503).
fn on_database<R>(host: &JsHost, f: impl FnOnce(&str, bool) -> R) -> Result<R, DbError> {
    DATABASE.with_borrow_mut(|known| {
        let (url, prepare) = match known {
            Some(known) => known,
            None => {
                let url = crate::ports::change_feed::database_url(host).ok_or_else(|| {
                    DbError::Unavailable("neither BACKUP_DB_URL nor SUPABASE_DB_URL is set".into())
                })?;
                let prepare = crate::ports::change_feed::may_prepare(&url);
                known.insert((url, prepare))
            }
        };
        Ok(f(url, *prepare))
    })
}

impl Db for JsHost {
    async fn query<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<T>, DbError> {
        let array = Array::new();
        for p in params {
            array.push(&p.as_deref().map_or(JsValue::NULL, JsValue::from_str));
        }
        let rows = on_database(self, |url, prepare| {
            JsHost::query(self, url, prepare, sql, array)
        })?;
        match JsFuture::from(rows).await {
            Ok(rows) => serde_wasm_bindgen::from_value(rows)
                .map_err(|e| DbError::Other(format!("unreadable rows from the host: {e}"))),
            Err(e) => Err(db_error(&e)),
        }
    }
}
