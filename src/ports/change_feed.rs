//! How a waiting long-poll learns that its run changed: PostgreSQL
//! `LISTEN backup_history` where the connection can hold it, otherwise by
//! re-reading the run every second.
//!
//! A transaction pooler (Supabase's listens on port 6543; other URLs say
//! `pgbouncer=true`) hands every statement to whichever server connection
//! is free, so a LISTEN there is accepted and then never delivers: a
//! long-poll would sleep through every change until its wait ends. Such a
//! URL polls from the start. When the host cannot establish LISTEN at all,
//! the request polls too, and this instance tries LISTEN again a minute
//! later rather than paying a failing connection on every request.
//!
//! The database URL is `BACKUP_DB_URL` when set, else `SUPABASE_DB_URL`
//! (the host connects with the same one). It holds a password: only its
//! port and query are looked at, and it is never logged.

use crate::dispatch_id::DispatchId;
use crate::ports::{DbError, Host, Level};
use std::cell::RefCell;

/// How often a polling long-poll re-reads its run.
pub const POLL_INTERVAL_MS: u32 = 1000;
/// How long an instance polls after LISTEN failed before trying it again.
pub const RETRY_LISTEN_AFTER_MS: i64 = 60_000;
/// The port of Supabase's transaction pooler (Supavisor).
pub const TRANSACTION_POOLER_PORT: u16 = 6543;

/// How long-polls wait for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Woken by `LISTEN backup_history`.
    Listen,
    /// Re-read the run every [`POLL_INTERVAL_MS`].
    Poll(Why),
}

/// Why long-polls poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The URL's port is 6543.
    PoolerPort,
    /// The URL says `pgbouncer=true`.
    PgbouncerFlag,
    /// The host could not establish LISTEN.
    ListenFailed,
}

/// What the database URL allows: [`Mode::Poll`] for a transaction pooler,
/// else [`Mode::Listen`]. A URL this cannot read gets `Listen`: if LISTEN
/// then fails, the host says so and the request polls anyway.
pub fn classify(url: &str) -> Mode {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query = query.split('#').next().unwrap_or_default();
    let authority = before_query.split('/').next().unwrap_or_default();
    // The password may contain '@' only percent-encoded, but take the last
    // one anyway: what follows it is the host list.
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let on_pooler_port = hosts.split(',').any(|host| {
        let port = match host.rsplit_once(']') {
            Some((_, after)) => after.strip_prefix(':'), // [IPv6]:port
            None => host.rsplit_once(':').map(|(_, p)| p),
        };
        port.and_then(|p| p.parse::<u16>().ok()) == Some(TRANSACTION_POOLER_PORT)
    });
    if on_pooler_port {
        return Mode::Poll(Why::PoolerPort);
    }
    let pgbouncer = query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "pgbouncer" && value.eq_ignore_ascii_case("true")
    });
    if pgbouncer {
        Mode::Poll(Why::PgbouncerFlag)
    } else {
        Mode::Listen
    }
}

/// Whether statements may be prepared on connections to `url`: on a
/// connection of the client's own, yes (PostgreSQL then parses and plans a
/// statement once per connection, and the driver sends a prepared statement
/// with its parameters in one exchange instead of describing it first). A
/// transaction pooler hands consecutive statements to different server
/// connections, which do not have the statement prepared: there, no.
pub fn may_prepare(url: &str) -> bool {
    classify(url) == Mode::Listen
}

/// The URL the host connects with: `BACKUP_DB_URL`, else `SUPABASE_DB_URL`
/// (an empty value counts as unset, as on the host).
pub fn database_url(host: &impl Host) -> Option<String> {
    ["BACKUP_DB_URL", "SUPABASE_DB_URL"]
        .iter()
        .find_map(|name| host.var(name).filter(|v| !v.is_empty()))
}

/// What one instance has learnt about its change feed. It lives as long as
/// the WebAssembly instance: a new instance (or one re-made after a panic)
/// starts afresh and logs its mode again.
#[derive(Debug, Default)]
pub struct Feed {
    /// The mode last logged, so that each mode is logged once, on change.
    logged: Option<Mode>,
    /// When LISTEN last failed.
    listen_failed_at: Option<i64>,
}

impl Feed {
    /// How a request arriving at `now_ms` should wait, for this URL.
    pub fn plan(&self, url: Option<&str>, now_ms: i64) -> Mode {
        match url.map(classify) {
            Some(poll @ Mode::Poll(_)) => poll,
            _ => match self.listen_failed_at {
                Some(at) if now_ms - at < RETRY_LISTEN_AFTER_MS => Mode::Poll(Why::ListenFailed),
                _ => Mode::Listen,
            },
        }
    }

    /// Records the mode a request used (`failure`: why LISTEN failed, for
    /// [`Why::ListenFailed`]); returns the line to log when the mode differs
    /// from the one last logged.
    pub fn used(&mut self, mode: Mode, now_ms: i64, failure: &str) -> Option<(Level, String)> {
        match mode {
            Mode::Listen => self.listen_failed_at = None,
            Mode::Poll(Why::ListenFailed) if !failure.is_empty() => {
                self.listen_failed_at = Some(now_ms);
            }
            Mode::Poll(_) => {}
        }
        if self.logged == Some(mode) {
            return None;
        }
        self.logged = Some(mode);
        let polling = "long-polls re-read the run every second";
        Some(match mode {
            Mode::Listen => (
                Level::Info,
                "long-polls wake on LISTEN backup_history".to_string(),
            ),
            Mode::Poll(Why::PoolerPort) => (
                Level::Info,
                format!(
                    "{polling}: the database URL is a transaction pooler (port \
                     {TRANSACTION_POOLER_PORT}), where LISTEN never delivers; set \
                     BACKUP_DB_URL to a direct or session-mode URL to wake at once"
                ),
            ),
            Mode::Poll(Why::PgbouncerFlag) => (
                Level::Info,
                format!(
                    "{polling}: the database URL says pgbouncer=true (a transaction \
                     pooler), where LISTEN never delivers; set BACKUP_DB_URL to a \
                     direct or session-mode URL to wake at once"
                ),
            ),
            Mode::Poll(Why::ListenFailed) => (
                Level::Warn,
                format!(
                    "{polling}: LISTEN backup_history could not be established \
                     ({failure}); trying again in {} s",
                    RETRY_LISTEN_AFTER_MS / 1000
                ),
            ),
        })
    }
}

thread_local! {
    // The wasm module is single-threaded: one Feed per instance. (Native
    // tests run each test on its own thread, so each gets a fresh one.)
    static FEED: RefCell<Feed> = RefCell::new(Feed::default());
}

fn used(host: &impl Host, mode: Mode, failure: &str) {
    let line = FEED.with(|f| f.borrow_mut().used(mode, host.now_ms(), failure));
    if let Some((level, message)) = line {
        host.log(level, &message);
    }
}

/// Starts waiting for changes of `id` the way this instance can: the count
/// of its changes seen so far when LISTEN wakes the request (pass it to
/// [`Host::wait_for_change`]), or `None` when the request must poll.
/// Never fails: a LISTEN that cannot be established means polling.
pub async fn watch(host: &impl Host, id: DispatchId) -> Option<u64> {
    let url = database_url(host);
    let plan = FEED.with(|f| f.borrow().plan(url.as_deref(), host.now_ms()));
    if plan != Mode::Listen {
        used(host, plan, "");
        return None;
    }
    match host.watch(id).await {
        Ok(seen) => {
            used(host, Mode::Listen, "");
            Some(seen)
        }
        Err(e) => {
            let failure = match e {
                DbError::Unavailable(m) | DbError::Other(m) => m,
                DbError::UniqueViolation(c) => c,
            };
            let failure = if failure.is_empty() {
                "no detail".to_string()
            } else {
                failure
            };
            used(host, Mode::Poll(Why::ListenFailed), &failure);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::credentials::token::{sign_hs256, SignatureCheck};
    use crate::endpoints::status;
    use crate::http::Request;
    use crate::ports::github::{OutboundRequest, OutboundResponse};
    use crate::run::Run;
    use crate::testing::{FakeHost, MemStore};
    use futures::executor::block_on;
    use serde_json::json;
    use std::cell::Cell;
    use uuid::Uuid;

    #[test]
    fn transaction_pooler_urls_poll_and_others_listen() {
        let cases = [
            // Supabase's transaction pooler, and its session pooler.
            (
                "postgresql://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
                Mode::Poll(Why::PoolerPort),
            ),
            (
                "postgresql://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
                Mode::Listen,
            ),
            (
                "postgres://postgres:pw@db.abc.supabase.co:5432/postgres",
                Mode::Listen,
            ),
            (
                "postgres://postgres:pw@db.abc.supabase.co/postgres",
                Mode::Listen,
            ),
            (
                "postgres://u:pw@h:5432/db?pgbouncer=true",
                Mode::Poll(Why::PgbouncerFlag),
            ),
            (
                "postgres://u:pw@h:5432/db?sslmode=require&pgbouncer=TRUE",
                Mode::Poll(Why::PgbouncerFlag),
            ),
            ("postgres://u:pw@h:5432/db?pgbouncer=false", Mode::Listen),
            ("postgres://u:pw@h:5432/db?xpgbouncer=true", Mode::Listen),
            ("postgres://u:pw@[::1]:6543/db", Mode::Poll(Why::PoolerPort)),
            ("postgres://u:pw@[::1]:5432/db", Mode::Listen),
            (
                "postgres://u:pw@a:5432,b:6543/db",
                Mode::Poll(Why::PoolerPort),
            ),
            // The port is the host's, not the password's or the database's.
            ("postgres://u:6543@h:5432/db", Mode::Listen),
            ("postgres://u:p@ss:6543@h:5432/6543", Mode::Listen),
            ("postgres://u:pw@h:65430/db", Mode::Listen),
            ("postgres://u:pw@h:5432/db#pgbouncer=true", Mode::Listen),
            ("not a url", Mode::Listen),
            ("", Mode::Listen),
        ];
        for (url, mode) in cases {
            assert_eq!(classify(url), mode, "{url}");
        }
    }

    #[test]
    fn statements_are_prepared_except_through_a_transaction_pooler() {
        assert!(may_prepare(
            "postgres://u:p@db.ref.supabase.co:5432/postgres"
        ));
        assert!(may_prepare(
            "postgres://u:p@aws-0-eu.pooler.supabase.com:5432/postgres"
        ));
        assert!(!may_prepare(
            "postgres://u:p@aws-0-eu.pooler.supabase.com:6543/postgres"
        ));
        assert!(!may_prepare(
            "postgres://u:p@h:5432/postgres?pgbouncer=true"
        ));
    }

    #[test]
    fn backup_db_url_wins_over_supabase_db_url() {
        let both = FakeHost::new(&[
            ("BACKUP_DB_URL", "postgres://u:pw@direct:5432/db"),
            ("SUPABASE_DB_URL", "postgres://u:pw@pooler:6543/db"),
        ]);
        assert_eq!(
            database_url(&both).as_deref(),
            Some("postgres://u:pw@direct:5432/db")
        );
        let empty = FakeHost::new(&[
            ("BACKUP_DB_URL", ""),
            ("SUPABASE_DB_URL", "postgres://u:pw@pooler:6543/db"),
        ]);
        assert_eq!(
            database_url(&empty).as_deref(),
            Some("postgres://u:pw@pooler:6543/db")
        );
        assert_eq!(database_url(&FakeHost::new(&[])), None);
    }

    #[test]
    fn a_failed_listen_polls_for_a_minute_then_listen_is_tried_again() {
        let url = Some("postgres://u:pw@h:5432/db");
        let mut feed = Feed::default();
        assert_eq!(feed.plan(url, 0), Mode::Listen);
        feed.used(Mode::Poll(Why::ListenFailed), 1_000, "refused");
        assert_eq!(feed.plan(url, 1_000), Mode::Poll(Why::ListenFailed));
        assert_eq!(feed.plan(url, 60_999), Mode::Poll(Why::ListenFailed));
        assert_eq!(feed.plan(url, 61_000), Mode::Listen);
        feed.used(Mode::Listen, 61_000, "");
        assert_eq!(feed.plan(url, 61_001), Mode::Listen);
        // A pooler URL polls whatever LISTEN did.
        assert_eq!(
            feed.plan(Some("postgres://u:pw@h:6543/db"), 61_001),
            Mode::Poll(Why::PoolerPort)
        );
        assert_eq!(feed.plan(None, 61_001), Mode::Listen);
    }

    #[test]
    fn each_mode_is_logged_once_when_it_begins() {
        let mut feed = Feed::default();
        let (level, first) = feed.used(Mode::Listen, 0, "").unwrap();
        assert_eq!(level, Level::Info);
        assert_eq!(first, "long-polls wake on LISTEN backup_history");
        assert_eq!(feed.used(Mode::Listen, 1, ""), None);
        let (level, failed) = feed
            .used(
                Mode::Poll(Why::ListenFailed),
                2,
                "57P03 the database is starting up",
            )
            .unwrap();
        assert_eq!(level, Level::Warn);
        assert_eq!(
            failed,
            "long-polls re-read the run every second: LISTEN backup_history could \
             not be established (57P03 the database is starting up); trying again in 60 s"
        );
        assert_eq!(feed.used(Mode::Poll(Why::ListenFailed), 3, ""), None);
        assert_eq!(
            feed.used(Mode::Poll(Why::ListenFailed), 70_000, "again"),
            None
        );
        assert!(feed.used(Mode::Listen, 140_000, "").is_some());

        let mut pooled = Feed::default();
        let (level, why) = pooled.used(Mode::Poll(Why::PoolerPort), 0, "").unwrap();
        assert_eq!(level, Level::Info);
        assert!(why.contains("transaction pooler (port 6543)"), "{why}");
        assert!(why.contains("BACKUP_DB_URL"), "{why}");
        assert_eq!(pooled.used(Mode::Poll(Why::PoolerPort), 1, ""), None);
        let (_, flag) = Feed::default()
            .used(Mode::Poll(Why::PgbouncerFlag), 0, "")
            .unwrap();
        assert!(flag.contains("pgbouncer=true"), "{flag}");
    }

    /// The fake host, with a LISTEN that can fail, a sleep that lets time
    /// pass, and a change to the run that lands at a set time.
    struct Host2 {
        inner: FakeHost,
        listen_fails: bool,
        watched: Cell<u32>,
        /// At this time the run's reason changes (the store is written).
        change_at: i64,
        store: MemStore,
    }

    impl Host2 {
        fn new(env: &[(&str, &str)], listen_fails: bool, change_after_ms: i64) -> Self {
            let inner = FakeHost::new(env);
            let change_at = inner.now.get() + change_after_ms;
            Host2 {
                inner,
                listen_fails,
                watched: Cell::new(0),
                change_at,
                store: MemStore::default(),
            }
        }
        fn pass(&self, ms: u32) {
            let before = self.inner.now.get();
            let after = before + i64::from(ms);
            self.inner.now.set(after);
            if before < self.change_at && after >= self.change_at {
                self.store.runs.borrow_mut()[0].reason = Some("changed".into());
            }
        }
    }

    impl Env for Host2 {
        fn var(&self, name: &str) -> Option<String> {
            self.inner.var(name)
        }
    }

    impl Host for Host2 {
        fn now_ms(&self) -> i64 {
            self.inner.now.get()
        }
        fn random(&self) -> [u8; 10] {
            self.inner.random()
        }
        fn log(&self, level: Level, message: &str) {
            self.inner.log(level, message);
        }
        async fn fetch(&self, request: OutboundRequest) -> Result<OutboundResponse, String> {
            self.inner.fetch(request).await
        }
        async fn sleep(&self, ms: u32) {
            self.inner.slept.borrow_mut().push(ms);
            self.pass(ms);
        }
        async fn verify_signature(&self, check: &SignatureCheck) -> Result<bool, String> {
            self.inner.verify_signature(check).await
        }
        async fn watch(&self, _id: DispatchId) -> Result<u64, DbError> {
            self.watched.set(self.watched.get() + 1);
            if self.listen_fails {
                Err(DbError::Other("0A000 LISTEN is not supported".into()))
            } else {
                Ok(0)
            }
        }
        async fn wait_for_change(&self, _id: DispatchId, _since: u64, timeout_ms: u32) -> bool {
            // A LISTEN that works would wake at the change; these tests
            // only use it to prove that polling does not wait here.
            self.pass(timeout_ms);
            false
        }
    }

    const ADMIN: &str = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";
    const SECRET: &str = "test-jwt-secret-that-is-at-least-32-characters-long";

    /// Long-polls one run with its current ETag; returns the status and the
    /// time the answer took.
    fn long_poll(host: &Host2, wait: u32) -> (u16, i64) {
        let admin = Uuid::parse_str(ADMIN).unwrap();
        let id = DispatchId::issue(host.now_ms() as u64, [7; 10]);
        host.store.admins.borrow_mut().push(admin);
        let run = Run::manual(id, admin, None, host.now_ms());
        block_on(host.store.insert(&run, None)).unwrap();
        let token = sign_hs256(
            SECRET.as_bytes(),
            &json!({"sub": ADMIN, "role": "authenticated", "aud": "authenticated", "exp": host.now_ms() / 1000 + 600}),
        );
        let url = format!("http://x/functions/v1/backup-status?dispatch_id={id}");
        let auth = ("authorization".to_string(), format!("Bearer {token}"));
        let first = block_on(status::handle(
            host,
            &host.store,
            &Request::new("GET", &url, vec![auth.clone()], vec![]),
        ))
        .unwrap();
        let tag = first.header("etag").unwrap().to_string();
        let start = host.now_ms();
        let answer = block_on(status::handle(
            host,
            &host.store,
            &Request::new(
                "GET",
                &format!("{url}&wait={wait}"),
                vec![auth, ("if-none-match".into(), tag)],
                vec![],
            ),
        ))
        .unwrap();
        (answer.status, host.now_ms() - start)
    }

    #[test]
    fn a_long_poll_through_a_transaction_pooler_polls_every_second_without_listen() {
        let host = Host2::new(
            &[
                ("BACKUP_JWT_SECRET", SECRET),
                ("SUPABASE_DB_URL", "postgres://u:pw@pooler:6543/postgres"),
            ],
            false,
            2_500,
        );
        let (status, took) = long_poll(&host, 25);
        assert_eq!(status, 200);
        assert_eq!(took, 3_000, "woke at the first re-read after the change");
        assert_eq!(*host.inner.slept.borrow(), vec![1000, 1000, 1000]);
        assert_eq!(host.watched.get(), 0, "never LISTENs through a pooler");
        let logs = host.inner.logs.borrow();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].starts_with("Info long-polls re-read the run every second: the database URL is a transaction pooler"), "{logs:?}");
        assert!(!logs[0].contains("pw@"), "the log never shows the URL");
    }

    #[test]
    fn a_long_poll_whose_listen_fails_polls_and_answers_the_change() {
        let host = Host2::new(
            &[
                ("BACKUP_JWT_SECRET", SECRET),
                ("BACKUP_DB_URL", "postgres://u:pw@direct:5432/postgres"),
                ("SUPABASE_DB_URL", "postgres://u:pw@pooler:6543/postgres"),
            ],
            true,
            1_200,
        );
        let (status, took) = long_poll(&host, 25);
        assert_eq!(status, 200);
        assert_eq!(took, 2_000);
        assert_eq!(host.watched.get(), 1, "LISTEN is not retried at once");
        let logs = host.inner.logs.borrow();
        assert_eq!(
            *logs,
            vec![
                "Warn long-polls re-read the run every second: LISTEN backup_history \
                  could not be established (0A000 LISTEN is not supported); trying \
                  again in 60 s"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_polling_long_poll_that_sees_no_change_answers_304_when_the_wait_ends() {
        let host = Host2::new(
            &[
                ("BACKUP_JWT_SECRET", SECRET),
                (
                    "SUPABASE_DB_URL",
                    "postgres://u:pw@h:5432/db?pgbouncer=true",
                ),
            ],
            false,
            i64::MAX / 2,
        );
        let (status, took) = long_poll(&host, 3);
        assert_eq!(status, 304);
        assert_eq!(took, 3_000);
        assert_eq!(*host.inner.slept.borrow(), vec![1000, 1000, 1000]);
    }

    #[test]
    fn a_long_poll_with_working_listen_waits_on_it_and_never_sleeps() {
        let host = Host2::new(
            &[
                ("BACKUP_JWT_SECRET", SECRET),
                ("SUPABASE_DB_URL", "postgres://u:pw@h:5432/db"),
            ],
            false,
            i64::MAX / 2,
        );
        let (status, took) = long_poll(&host, 2);
        assert_eq!(status, 304);
        assert_eq!(took, 2_000);
        assert!(host.inner.slept.borrow().is_empty());
        assert_eq!(
            *host.inner.logs.borrow(),
            vec!["Info long-polls wake on LISTEN backup_history".to_string()]
        );
    }
}
