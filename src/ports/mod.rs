//! The ports: everything the core asks of its host, and the adapters the
//! core builds over them.
//!
//! In production the host is Deno (see `wasm.rs`): `fetch`, timers, the
//! environment, `crypto.getRandomValues` and a PostgreSQL client. In native
//! tests it is an in-memory fake (`src/testing.rs`). The core awaits these
//! as plain futures; on wasm they are JS promises awaited through
//! wasm-bindgen-futures.
//!
//! Over [`Db`]: [`store`] (runs, deliveries and the outbox, in the SQL of
//! `src/sql/`), [`coalesce`] (reports that arrive together, sent together) and
//! [`change_feed`] (how a long-poll hears of a change). Over
//! [`Host::fetch`]: [`github`] (GitHub's REST calls, built and read).

pub mod change_feed;
pub mod coalesce;
pub mod github;
pub mod store;
#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;

use crate::config::Env;
use crate::credentials::token::SignatureCheck;
use crate::dispatch_id::DispatchId;
use crate::ports::github::{OutboundRequest, OutboundResponse};
use serde::de::{DeserializeOwned, IgnoredAny};

/// Log levels the host understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Clock, randomness, logging, outbound HTTP and sleeping.
#[allow(async_fn_in_trait)] // single-threaded (wasm); futures need not be Send
pub trait Host: Env {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
    /// 10 random bytes for a UUIDv7.
    fn random(&self) -> [u8; 10];
    /// Writes a server-side log line. Never given a secret.
    fn log(&self, level: Level, message: &str);
    /// Sends an HTTP request. `Err` is a network-level failure (no answer).
    async fn fetch(&self, request: OutboundRequest) -> Result<OutboundResponse, String>;
    /// Waits.
    async fn sleep(&self, ms: u32);
    /// Verifies an asymmetric JWT signature with WebCrypto, using exactly
    /// the parameters the core chose. `Err` means the check could not run.
    async fn verify_signature(&self, check: &SignatureCheck) -> Result<bool, String>;
    /// Makes sure changes to runs are being listened for (PostgreSQL
    /// `LISTEN backup_history`) and returns how many changes of this run
    /// have been seen so far.
    ///
    /// # Errors
    /// LISTEN could not be established; the core then polls instead
    /// (`change_feed`).
    async fn watch(&self, id: DispatchId) -> Result<u64, DbError>;
    /// Resolves when a change of this run beyond `since` has been seen
    /// (true), or after `timeout_ms` (false).
    async fn wait_for_change(&self, id: DispatchId, since: u64, timeout_ms: u32) -> bool;
}

/// Why a database call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// Could not connect, or the connection broke (503).
    Unavailable(String),
    /// A unique constraint refused the write; carries the constraint name.
    UniqueViolation(String),
    /// Anything else: a bug (500).
    Other(String),
}

impl From<DbError> for crate::error::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(d) => crate::error::Error::DatabaseUnavailable(d),
            DbError::UniqueViolation(c) => {
                crate::error::Error::Internal(format!("unexpected unique violation on {c}"))
            }
            DbError::Other(d) => crate::error::Error::Internal(d),
        }
    }
}

/// Raw SQL access. Parameters are text or NULL and are cast in the SQL,
/// so no client-side type inference can change their meaning. Rows come
/// back typed: each is read straight into `T`, a serde-derived row struct
/// whose fields are the statement's column names.
#[allow(async_fn_in_trait)]
pub trait Db {
    /// Runs one statement (one implicit transaction) and reads its rows.
    async fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<T>, DbError>;

    /// Runs one statement whose rows, if any, are not read.
    async fn execute(&self, sql: &str, params: &[Option<String>]) -> Result<(), DbError> {
        self.query::<IgnoredAny>(sql, params).await.map(drop)
    }
}
