//! Who is calling: the signed-in user behind a bearer token, and whether
//! that user is a backup admin.

use crate::config::{self, TokenKeySource};
use crate::error::Error;
use crate::github::OutboundRequest;
use crate::http::Request;
use crate::ports::{Host, Level};
use crate::store::Store;
use crate::token::{self, Jwks, Keys, User, Verdict};
use std::cell::RefCell;

/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL_MS: i64 = 10 * 60 * 1000;

thread_local! {
    // One wasm instance serves many requests; keep the fetched key set
    // between them. (url, keys, fetched at)
    static JWKS_CACHE: RefCell<Option<(String, Jwks, i64)>> = const { RefCell::new(None) };
}

/// Verifies the bearer token and checks that its user is a backup admin.
///
/// # Errors
/// 401 [`Error::MissingToken`] / [`Error::InvalidToken`], 403
/// [`Error::NotAdmin`], 500 [`Error::Config`] when no key is configured,
/// 502 when the JWKS cannot be fetched, 503 when the database is down.
pub async fn admin(host: &impl Host, store: &impl Store, req: &Request) -> Result<User, Error> {
    let token = req.bearer_token()?;
    let keys = keys(host).await?;
    let user = match token::verify(token, &keys, host.now_ms() / 1000)? {
        Verdict::Valid(user) => user,
        Verdict::ValidIfSigned(user, check) => match host.verify_signature(&check).await {
            Ok(true) => user,
            Ok(false) => return Err(Error::InvalidToken("signature mismatch".into())),
            Err(e) => return Err(Error::InvalidToken(format!("signature check failed: {e}"))),
        },
    };
    if !store.is_admin(user.id).await? {
        return Err(Error::NotAdmin);
    }
    Ok(user)
}

async fn keys(host: &impl Host) -> Result<Keys, Error> {
    let secret = |s: Option<String>| s.map(String::into_bytes);
    match config::token_keys(host)? {
        TokenKeySource::Hs256Only(s) => Ok(Keys {
            hs256_secret: Some(s.into_bytes()),
            jwks: None,
        }),
        TokenKeySource::Inline { jwks, hs256 } => Ok(Keys {
            hs256_secret: secret(hs256),
            jwks: Some(Jwks::parse(&jwks)?),
        }),
        TokenKeySource::Fetch { url, hs256 } => match fetched_jwks(host, &url).await {
            Ok(jwks) => Ok(Keys {
                hs256_secret: secret(hs256),
                jwks: Some(jwks),
            }),
            // Legacy HS256 tokens can still be checked while the JWKS
            // endpoint is unreachable.
            Err(e) if hs256.is_some() => {
                host.log(Level::Warn, &format!("JWKS unavailable, HS256 only: {e}"));
                Ok(Keys {
                    hs256_secret: secret(hs256),
                    jwks: None,
                })
            }
            Err(e) => Err(e),
        },
    }
}

async fn fetched_jwks(host: &impl Host, url: &str) -> Result<Jwks, Error> {
    let now = host.now_ms();
    let cached = JWKS_CACHE.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(u, _, at)| u == url && now - at < JWKS_TTL_MS)
            .map(|(_, jwks, _)| jwks.clone())
    });
    if let Some(jwks) = cached {
        return Ok(jwks);
    }
    let response = host
        .fetch(OutboundRequest {
            method: "GET",
            url: url.to_string(),
            headers: vec![("accept".into(), "application/json".into())],
            body: None,
            timeout_ms: 5_000,
        })
        .await
        .map_err(|e| Error::Upstream(format!("JWKS fetch failed: {e}")))?;
    if response.status != 200 {
        return Err(Error::Upstream(format!(
            "JWKS fetch answered {}",
            response.status
        )));
    }
    let jwks = Jwks::parse(&response.body)
        .map_err(|_| Error::Upstream("JWKS endpoint returned no key set".into()))?;
    JWKS_CACHE.with(|c| *c.borrow_mut() = Some((url.to_string(), jwks.clone(), now)));
    Ok(jwks)
}
