//! Who is calling: the signed-in user behind a bearer token, and whether
//! that user is a backup admin.
//!
//! [`super::token`] judges a token against the keys held now; this module
//! does what its verdict leaves open, and remembers between requests (one
//! wasm instance serves many) what it learned:
//!
//! | verdict | done here |
//! |---|---|
//! | `Valid` | nothing: accepted |
//! | `ValidIfSigned` | the host's WebCrypto checks the signature |
//! | `UnknownKey` | `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` is fetched again, at most once a minute, and the token judged once more against the injected and fetched keys together |
//! | `ValidIfAuthConfirms` | `GET {SUPABASE_URL}/auth/v1/user` with the token: Auth must answer 200 for the token's own `sub` (what supabase-js `getClaims()` does for symmetric tokens). A yes is remembered for at most 60 s and never past `exp`, under the token's SHA-256, never the token |

use crate::config::{self, TokenKeys};
use crate::credentials::token::{self, Claims, Jwks, Keys, User, Verdict};
use crate::error::Error;
use crate::http::Request;
use crate::ports::github::OutboundRequest;
use crate::ports::store::Store;
use crate::ports::Host;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use uuid::Uuid;

/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL_MS: i64 = 10 * 60 * 1000;
/// The least time between two JWKS fetches: a token with an unknown `kid`
/// is anyone's to make, and must not turn this instance into a load on Auth.
const JWKS_REFETCH_MS: i64 = 60 * 1000;
/// How long Supabase Auth's yes to a token is remembered (at most).
const CONFIRMED_TTL_MS: i64 = 60 * 1000;
/// How many such answers are remembered.
const CONFIRMED_MAX: usize = 256;
/// How long Supabase Auth and the JWKS endpoint are waited for.
const AUTH_TIMEOUT_MS: u32 = 5_000;

/// The key set fetched from the project, and the last attempt to fetch it.
struct Fetched {
    url: String,
    /// The set as served (a valid JWKS; re-parsing it costs less module
    /// than cloning parsed keys), and when it was fetched.
    jwks: Option<(String, i64)>,
    /// When the last fetch was tried, and whether it failed.
    attempt: (i64, bool),
}

thread_local! {
    // One entry per key set URL: the project's, and GitHub's OIDC issuer's
    // (super::oidc), each fetched, cached and refetched by the same rules.
    static FETCHED: RefCell<Vec<Fetched>> = const { RefCell::new(Vec::new()) };
    // (SHA-256 of a token Auth confirmed, its user, remembered until). A
    // scan of at most CONFIRMED_MAX entries costs less than a HashMap's
    // share of the module.
    static CONFIRMED: RefCell<Vec<([u8; 32], Uuid, i64)>> = const { RefCell::new(Vec::new()) };
}

/// Verifies the bearer token and checks that its user is a backup admin.
///
/// # Errors
/// 401 [`Error::MissingToken`] / [`Error::InvalidToken`], 403
/// [`Error::NotAdmin`], 500 [`Error::Config`] when no key source is
/// configured, 502 [`Error::Upstream`] when the JWKS or Supabase Auth cannot
/// be reached to check the token, 503 when the database is down.
pub async fn admin(host: &impl Host, store: &impl Store, req: &Request) -> Result<User, Error> {
    let token = req.bearer_token()?;
    let user = user(host, token).await?;
    if !store.is_admin(user.id).await? {
        return Err(Error::NotAdmin);
    }
    Ok(user)
}

/// The signed-in user a token belongs to.
///
/// # Errors
/// As [`admin`], without the 403 and the 503.
pub async fn user(host: &impl Host, token: &str) -> Result<User, Error> {
    let cfg = config::token_keys(host)?;
    let mut keys = Keys {
        hs256_secret: cfg.hs256.clone().map(String::into_bytes),
        jwks: cfg.jwks.as_deref().map(Jwks::parse).transpose()?,
    };
    let injected = keys.jwks.as_ref().map_or(0, |j| j.keys.len());
    let jwks_url = cfg.jwks_url();
    let now = host.now_ms();
    let fresh = jwks_url.as_deref().and_then(|url| fetched_jwks(url, now));
    with_fetched(&mut keys, injected, fresh);
    let mut refetched = false;
    loop {
        match token::verify(token, &keys, now / 1000)? {
            Verdict::Valid(user) => return Ok(user),
            Verdict::ValidIfSigned(user, check) => {
                return match host.verify_signature(&check).await {
                    Ok(true) => Ok(user),
                    Ok(false) => Err(Error::InvalidToken("signature mismatch".into())),
                    Err(e) => Err(Error::InvalidToken(format!("signature check failed: {e}"))),
                }
            }
            Verdict::ValidIfAuthConfirms { user, exp } => {
                return confirmed_by_auth(host, &cfg, token, user, exp).await
            }
            Verdict::UnknownKey => match jwks_url.as_deref() {
                Some(url) if !refetched => {
                    let fetched = refetch_jwks(host, url).await?;
                    with_fetched(&mut keys, injected, Some(fetched));
                    refetched = true;
                }
                _ => return Err(Error::InvalidToken("no key matches the token".into())),
            },
        }
    }
}

/// The injected keys (the first `injected` of `keys`) followed by `fetched`.
fn with_fetched(keys: &mut Keys, injected: usize, fetched: Option<Jwks>) {
    let Some(fetched) = fetched else { return };
    let jwks = keys.jwks.get_or_insert_with(Jwks::default);
    jwks.keys.truncate(injected);
    jwks.keys.extend(fetched.keys);
}

/// The key set fetched from `url`, unless it is older than [`JWKS_TTL_MS`].
pub(crate) fn fetched_jwks(url: &str, now: i64) -> Option<Jwks> {
    FETCHED.with(|f| {
        f.borrow()
            .iter()
            .find(|f| f.url == url)
            .and_then(|f| f.jwks.as_ref())
            .filter(|(_, at)| now - at < JWKS_TTL_MS)
            .and_then(|(text, _)| Jwks::parse(text).ok())
    })
}

/// Fetches the key set at `url`, unless the last attempt was less than
/// [`JWKS_REFETCH_MS`] ago: then the token stays unverifiable, which is a
/// 401 if that attempt found a key set, and a 502 if it failed.
///
/// # Errors
/// [`Error::InvalidToken`] (401) and [`Error::Upstream`] (502) as above.
pub(crate) async fn refetch_jwks(host: &impl Host, url: &str) -> Result<Jwks, Error> {
    let now = host.now_ms();
    // The attempt is claimed before the fetch (nothing awaits in between),
    // so that requests arriving while it runs do not fetch too; until it
    // succeeds it counts as failed, a 502 they may retry.
    FETCHED.with(|f| {
        let mut f = f.borrow_mut();
        match f.iter_mut().find(|f| f.url == url) {
            Some(f) if now - f.attempt.0 < JWKS_REFETCH_MS => Err(if f.attempt.1 {
                Error::Upstream("the JWKS endpoint failed (or is being asked) <1 min ago".into())
            } else {
                Error::InvalidToken("no key has this kid; the JWKS was fetched <1 min ago".into())
            }),
            Some(f) => {
                f.attempt = (now, true);
                Ok(())
            }
            None => {
                f.push(Fetched {
                    url: url.to_string(),
                    jwks: None,
                    attempt: (now, true),
                });
                Ok(())
            }
        }
    })?;
    let result = fetch_jwks(host, url).await;
    FETCHED.with(|f| {
        if let Some(f) = f.borrow_mut().iter_mut().find(|f| f.url == url) {
            if let Ok((_, text)) = &result {
                f.jwks = Some((text.clone(), now));
                f.attempt.1 = false;
            }
        }
    });
    result.map(|(jwks, _)| jwks)
}

/// The published key set, parsed and as served.
async fn fetch_jwks(host: &impl Host, url: &str) -> Result<(Jwks, String), Error> {
    let response = host
        .fetch(OutboundRequest {
            method: "GET",
            url: url.to_string(),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeout_ms: AUTH_TIMEOUT_MS,
            follow_redirects: true,
        })
        .await
        .map_err(|e| Error::Upstream(format!("JWKS fetch failed: {e}")))?;
    if response.status != 200 {
        return Err(Error::Upstream(format!(
            "JWKS fetch answered {}",
            response.status
        )));
    }
    match Jwks::parse(&response.body) {
        Ok(jwks) => Ok((jwks, response.body)),
        Err(_) => Err(Error::Upstream("JWKS endpoint returned no key set".into())),
    }
}

/// Asks Supabase Auth whether `token` is a live session of `user`.
async fn confirmed_by_auth(
    host: &impl Host,
    cfg: &TokenKeys,
    token: &str,
    user: User,
    exp: i64,
) -> Result<User, Error> {
    let Some(url) = cfg.user_url() else {
        return Err(Error::InvalidToken(
            "HS256 token, but no HS256 key is held and SUPABASE_URL is not set".into(),
        ));
    };
    let Some(api_key) = cfg.api_key.as_deref() else {
        return Err(Error::Config {
            setting: "SUPABASE_PUBLISHABLE_KEYS",
            message: "(or SUPABASE_ANON_KEY) is not set: Supabase Auth cannot be asked \
                      about HS256 access tokens without an API key"
                .into(),
        });
    };
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let now = host.now_ms();
    let remembered = CONFIRMED.with(|c| {
        c.borrow()
            .iter()
            .any(|(d, id, until)| *d == digest && *id == user.id && now < *until)
    });
    if remembered {
        return Ok(user);
    }
    let response = host
        .fetch(OutboundRequest {
            method: "GET",
            url,
            headers: vec![
                ("authorization".into(), format!("Bearer {token}")),
                ("apikey".into(), api_key.to_string()),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
            timeout_ms: AUTH_TIMEOUT_MS,
            follow_redirects: true,
        })
        .await
        .map_err(|e| Error::Upstream(format!("Supabase Auth unreachable: {e}")))?;
    match auth_answer(response.status, &response.body) {
        AuthAnswer::User(id) if id == user.id => {
            remember(digest, id, now, (now + CONFIRMED_TTL_MS).min(exp * 1000));
            Ok(user)
        }
        AuthAnswer::User(_) => Err(Error::InvalidToken(
            "Supabase Auth answered for another user than the token's sub".into(),
        )),
        AuthAnswer::Refused(why) => Err(Error::InvalidToken(format!(
            "Supabase Auth refused it: {why}"
        ))),
        AuthAnswer::Unavailable(why) => Err(Error::Upstream(format!("Supabase Auth: {why}"))),
    }
}

/// What an answer of `GET /auth/v1/user` means.
#[derive(Debug, PartialEq, Eq)]
enum AuthAnswer {
    /// 200 with the user's `id`.
    User(Uuid),
    /// Auth judged the token (or the request) bad: a 4xx other than 429.
    Refused(String),
    /// No judgement: 5xx, 429, or a 200 that is not a user.
    Unavailable(String),
}

fn auth_answer(status: u16, body: &str) -> AuthAnswer {
    let why = format!("HTTP {status}");
    match status {
        // Only the user's `id` is read (through token::Claims, whose other
        // members a user object does not have); email, metadata and
        // identities are not.
        200 => match Some(body)
            .filter(|b| b.trim_start().starts_with('{'))
            .and_then(|b| serde_json::from_str::<Claims>(b).ok())
            .and_then(|user| Uuid::try_parse(&user.id?).ok())
        {
            Some(id) => AuthAnswer::User(id),
            None => AuthAnswer::Unavailable(format!("{why} without a user id")),
        },
        429 => AuthAnswer::Unavailable(why),
        400..=499 => AuthAnswer::Refused(why),
        _ => AuthAnswer::Unavailable(why),
    }
}

/// Remembers Auth's yes until `until`, keeping at most [`CONFIRMED_MAX`]
/// answers: expired ones go first, then those that would expire soonest.
fn remember(digest: [u8; 32], id: Uuid, now: i64, until: i64) {
    if until <= now {
        return;
    }
    CONFIRMED.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|(d, _, u)| *u > now && *d != digest);
        while c.len() >= CONFIRMED_MAX {
            let mut soonest = 0;
            for (i, (_, _, u)) in c.iter().enumerate() {
                if *u < c[soonest].2 {
                    soonest = i;
                }
            }
            c.swap_remove(soonest);
        }
        c.push((digest, id, until));
    });
}

#[cfg(test)]
fn remembered_answers() -> usize {
    CONFIRMED.with(|c| c.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_answers_are_read_by_status() {
        let id = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";
        assert_eq!(
            auth_answer(200, &format!(r#"{{"id":"{id}","aud":"authenticated"}}"#)),
            AuthAnswer::User(Uuid::parse_str(id).unwrap())
        );
        for not_a_user in ["{}", r#"{"id":"not-a-uuid"}"#, r#"{"id":42}"#, "<html>", ""] {
            assert_eq!(
                auth_answer(200, not_a_user),
                AuthAnswer::Unavailable("HTTP 200 without a user id".into()),
                "{not_a_user:?}"
            );
        }
        assert_eq!(
            auth_answer(
                401,
                r#"{"code":401,"error_code":"bad_jwt","msg":"invalid JWT"}"#
            ),
            AuthAnswer::Refused("HTTP 401".into())
        );
        assert_eq!(
            auth_answer(
                403,
                r#"{"msg":"User from sub claim in JWT does not exist"}"#
            ),
            AuthAnswer::Refused("HTTP 403".into())
        );
        assert_eq!(
            auth_answer(429, ""),
            AuthAnswer::Unavailable("HTTP 429".into())
        );
        assert_eq!(
            auth_answer(503, "<html>"),
            AuthAnswer::Unavailable("HTTP 503".into())
        );
    }

    #[test]
    fn remembered_answers_are_bounded_and_expired_ones_go_first() {
        let id = Uuid::nil();
        for i in 0..CONFIRMED_MAX + 10 {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
            remember(digest, id, 0, 1_000 + i as i64);
        }
        assert_eq!(remembered_answers(), CONFIRMED_MAX);
        // The ones that would have expired soonest made room.
        CONFIRMED.with(|c| {
            let c = c.borrow();
            assert!(c.iter().all(|(_, _, until)| *until >= 1_010));
        });
        remember([0xff; 32], id, 5_000, 6_000);
        assert_eq!(remembered_answers(), 1, "every expired answer was dropped");
        remember([0xfe; 32], id, 5_000, 5_000);
        assert_eq!(
            remembered_answers(),
            1,
            "an answer already expired is not kept"
        );
    }
}

/// Whole requests through the in-memory ports of `src/testing.rs`.
#[cfg(test)]
mod flows {
    use crate::testing::kit::*;

    #[test]
    fn an_hs256_token_verifies_against_an_oct_key_of_the_injected_jwks() {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JWT_SECRET);
        let (host, store) = (
            hosted(&json!({"keys": [ec_key("es-1"), {"kty": "oct", "k": k}]})),
            store(),
        );
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 200, "{}", r.body);
        let r = status_with(&host, &store, &token(&host, OTHER));
        assert_eq!(r.status, 403);
        let forged = sign_hs256(
            b"not-the-project-secret-not-the-project",
            &hs256_claims(&host, ADMIN, 600),
        );
        let r = status_with(&host, &store, &forged);
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "invalid_token");
        assert!(
            host.fetched.borrow().is_empty(),
            "no JWKS fetch, no Auth call"
        );
    }

    #[test]
    fn an_hs256_token_without_a_held_key_is_accepted_when_auth_answers_for_its_sub() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        let t = token(&host, ADMIN);
        auth_says_user(&host, ADMIN);
        let r = status_with(&host, &store, &t);
        assert_eq!(r.status, 200, "{}", r.body);
        let fetched = host.fetched.borrow();
        assert_eq!(fetched.len(), 1);
        assert_eq!(fetched[0].method, "GET");
        assert_eq!(fetched[0].url, "https://ref.supabase.co/auth/v1/user");
        let header = |n: &str| {
            fetched[0]
                .headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("authorization"), Some(format!("Bearer {t}")));
        assert_eq!(header("apikey").as_deref(), Some(PUBLISHABLE));
    }

    #[test]
    fn auth_is_asked_with_the_legacy_anon_key_when_there_is_no_publishable_key() {
        let (mut host, store) = (hosted(&json!({"keys": []})), store());
        host.env.remove("SUPABASE_PUBLISHABLE_KEYS");
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &token(&host, ADMIN)).status, 200);
        let fetched = host.fetched.borrow();
        assert!(fetched[0]
            .headers
            .contains(&("apikey".into(), "eyJ-legacy-anon".into())));
    }

    #[test]
    fn a_token_auth_refuses_is_a_401_and_auth_down_is_a_502() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        for status in [401, 403] {
            host.answer(
                status,
                &[],
                r#"{"code":401,"error_code":"bad_jwt","msg":"invalid JWT"}"#,
            );
            let r = status_with(&host, &store, &token(&host, ADMIN));
            assert_eq!(r.status, 401, "Auth answered {status}");
            assert_eq!(
                body(&r),
                json!({"error": {"code": "invalid_token", "message": "the access token is invalid or expired"}})
            );
        }
        host.fetch_answers
            .borrow_mut()
            .push_back(Err("connection refused".into()));
        host.answer(503, &[], "upstream connect error");
        for _ in 0..2 {
            let r = status_with(&host, &store, &token(&host, ADMIN));
            assert_eq!(r.status, 502);
            assert_eq!(
                body(&r),
                json!({"error": {"code": "upstream_unavailable", "message": "an upstream service is unavailable"}})
            );
        }
        assert_eq!(
            host.fetched.borrow().len(),
            4,
            "refusals are not remembered"
        );
    }

    #[test]
    fn auth_answering_for_another_user_is_a_401() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        auth_says_user(&host, OTHER);
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "invalid_token");
    }

    #[test]
    fn auths_yes_is_remembered_for_60_seconds_and_never_past_exp() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        let t = token(&host, ADMIN);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        host.now.set(host.now.get() + 59_000);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        assert_eq!(host.fetched.borrow().len(), 1, "served from memory");
        host.now.set(host.now.get() + 2_000);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &t).status, 200);
        assert_eq!(host.fetched.borrow().len(), 2, "asked again after 60 s");

        // A token expiring in 20 s is remembered for 20 s only (the 30 s
        // leeway on exp still lets its claims pass after that).
        let short = sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, 20));
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &short).status, 200);
        host.now.set(host.now.get() + 21_000);
        auth_says_user(&host, ADMIN);
        assert_eq!(status_with(&host, &store, &short).status, 200);
        assert_eq!(
            host.fetched.borrow().len(),
            4,
            "asked again once exp passed"
        );

        // Another token of the same user is another question.
        host.answer(401, &[], "{}");
        let other = sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, 601));
        assert_eq!(status_with(&host, &store, &other).status, 401);
    }

    #[test]
    fn junk_never_reaches_auth() {
        let (host, store) = (hosted(&json!({"keys": []})), store());
        let mut bad = vec![
            sign_hs256(JWT_SECRET.as_bytes(), &hs256_claims(&host, ADMIN, -120)),
            sign_hs256(
                JWT_SECRET.as_bytes(),
                &hs256_claims(&host, "not-a-uuid", 600),
            ),
            "not.a.jwt".to_string(),
        ];
        let mut anon = hs256_claims(&host, ADMIN, 600);
        anon["role"] = json!("anon");
        bad.push(sign_hs256(JWT_SECRET.as_bytes(), &anon));
        for t in bad {
            let r = status_with(&host, &store, &t);
            assert_eq!(r.status, 401, "{t}");
        }
        assert!(host.fetched.borrow().is_empty());
    }

    #[test]
    fn auth_cannot_be_asked_without_an_api_key_or_a_project_url() {
        let (mut host, store) = (hosted(&json!({"keys": []})), store());
        host.env.remove("SUPABASE_PUBLISHABLE_KEYS");
        host.env.remove("SUPABASE_ANON_KEY");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 500);
        assert_eq!(
            body(&r)["error"]["message"],
            "server misconfigured: SUPABASE_PUBLISHABLE_KEYS (or SUPABASE_ANON_KEY) is not set: \
             Supabase Auth cannot be asked about HS256 access tokens without an API key"
        );
        host.env.remove("SUPABASE_URL");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 401, "no key and no one to ask: refused");
        assert!(host.fetched.borrow().is_empty());
    }

    #[test]
    fn no_key_source_at_all_is_a_500_naming_backup_jwt_secret() {
        let (mut host, store) = (host(), store());
        host.env.remove("BACKUP_JWT_SECRET");
        let r = status_with(&host, &store, &token(&host, ADMIN));
        assert_eq!(r.status, 500);
        assert_eq!(error_code(&r), "config_missing");
        assert!(body(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BACKUP_JWT_SECRET"));
    }

    #[test]
    fn a_kid_missing_from_the_injected_jwks_is_found_by_one_refetch() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(
            200,
            &[],
            &json!({"keys": [ec_key("es-1"), ec_key("es-2")]}).to_string(),
        );
        let rotated = es256_token(&host, "es-2", ADMIN);
        assert_eq!(status_with(&host, &store, &rotated).status, 200);
        assert_eq!(
            host.fetched.borrow()[0].url,
            "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
        );
        // Injected keys still count, and the fetched set is kept.
        assert_eq!(
            status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
            200
        );
        assert_eq!(status_with(&host, &store, &rotated).status, 200);
        assert_eq!(host.fetched.borrow().len(), 1);
    }

    #[test]
    fn the_jwks_is_refetched_at_most_once_a_minute() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(200, &[], &json!({"keys": [ec_key("es-1")]}).to_string());
        for _ in 0..3 {
            let r = status_with(&host, &store, &es256_token(&host, "unknown", ADMIN));
            assert_eq!(r.status, 401);
            assert_eq!(error_code(&r), "invalid_token");
        }
        assert_eq!(host.fetched.borrow().len(), 1, "one fetch for three misses");
        host.now.set(host.now.get() + 60_000);
        host.answer(200, &[], &json!({"keys": [ec_key("unknown")]}).to_string());
        let r = status_with(&host, &store, &es256_token(&host, "unknown", ADMIN));
        assert_eq!(r.status, 200, "a minute later the set is fetched again");
        assert_eq!(host.fetched.borrow().len(), 2);
    }

    #[test]
    fn a_failed_refetch_is_a_502_until_the_next_attempt_is_due() {
        let (host, store) = (hosted(&json!({"keys": [ec_key("es-1")]})), store());
        host.signature_ok.set(true);
        host.answer(503, &[], "");
        for _ in 0..2 {
            let r = status_with(&host, &store, &es256_token(&host, "es-2", ADMIN));
            assert_eq!(r.status, 502);
            assert_eq!(error_code(&r), "upstream_unavailable");
        }
        assert_eq!(host.fetched.borrow().len(), 1);
        assert_eq!(
            status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
            200,
            "injected keys keep working"
        );
    }

    #[test]
    fn without_an_injected_jwks_the_fetched_set_is_kept_ten_minutes() {
        let (mut host, store) = (hosted(&json!({})), store());
        host.env.remove("SUPABASE_JWKS");
        host.signature_ok.set(true);
        host.answer(200, &[], &json!({"keys": [ec_key("es-1")]}).to_string());
        for _ in 0..3 {
            assert_eq!(
                status_with(&host, &store, &es256_token(&host, "es-1", ADMIN)).status,
                200
            );
        }
        assert_eq!(host.fetched.borrow().len(), 1);
        host.now.set(host.now.get() + 10 * 60_000);
        host.answer(200, &[], &json!({"keys": [ec_key("es-3")]}).to_string());
        let r = status_with(&host, &store, &es256_token(&host, "es-1", ADMIN));
        assert_eq!(
            r.status, 401,
            "a key dropped from the set is no longer accepted"
        );
        assert_eq!(host.fetched.borrow().len(), 2);
    }
}
