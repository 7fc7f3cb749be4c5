//! User access tokens: the JWTs Supabase Auth issues to signed-in users.
//!
//! `trigger-backup` and `backup-status` take `Authorization: Bearer <token>`.
//! A token is accepted when it has not expired, it is a user token (`role =
//! authenticated`, `aud` includes `authenticated`), its `sub` is a UUID, and
//! its signature verifies. `alg: none` and every algorithm other than HS256,
//! ES256 and RS256 are refused. The claims are checked first, so a token that
//! cannot be accepted never costs a key fetch or a call to Supabase Auth.
//!
//! Asymmetric tokens (ES256, RS256, the current Supabase default): this
//! module picks the key of the project's JWKS by `kid` and `kty` and leaves
//! only the signature arithmetic to the host's WebCrypto, as a
//! [`SignatureCheck`]: the P-256 and RSA crates would more than double the
//! size of the WebAssembly module (see README, "Size"). A `kid` no key has
//! is [`Verdict::UnknownKey`]: the keys may have been rotated since the set
//! was read, and [`super::auth`] may fetch it again.
//!
//! HS256 tokens (projects still on the legacy JWT secret): verified here with
//! RustCrypto HMAC against every candidate secret, which are the `kty: "oct"`
//! keys of the key set (`k` is the base64url secret) and `BACKUP_JWT_SECRET`.
//! An oct key is a candidate when its `kid` equals the token's, when it has
//! no `kid`, or when the token has none: the Supabase CLI injects the local
//! secret as `{"kty":"oct","k":"<base64url>"}`, without a `kid` (supabase/cli,
//! `pkg/config/config.go`, `ResolveJWKS`, passed to the functions as
//! `SUPABASE_JWKS` by `internal/functions/serve/serve.go`), and a wrong
//! candidate costs one HMAC (the signature, not the `kid`, is trusted). When no candidate
//! exists at all, which is every hosted project on the legacy secret (the
//! platform never hands the secret to functions), only Supabase Auth can
//! vouch for the token: [`Verdict::ValidIfAuthConfirms`].

use crate::error::Error;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECONDS: i64 = 30;
/// How far in the future an `iat` may be: a token issued later than that
/// was not made by a clock anyone keeps, and would outlive its `exp` check.
pub(crate) const MAX_IAT_AHEAD_SECONDS: i64 = 60;
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The verified facts the core uses from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
}

/// A signature algorithm, as a JOSE header or a JWK's `alg` names it. Only
/// the three Supabase Auth signs with are told apart; `none` and the rest
/// are `Unsupported`, which no token is accepted with and no key matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alg {
    #[serde(rename = "HS256")]
    Hs256,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(other)]
    Unsupported,
}

/// A JWK's key type. Types added later (`OKP`, ...) are `Unknown`: such a
/// key stays in the set but matches no token, as RFC 7517 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kty {
    #[serde(rename = "EC")]
    Ec,
    #[serde(rename = "RSA")]
    Rsa,
    /// A symmetric key: an HS256 secret.
    #[serde(rename = "oct")]
    Oct,
    #[serde(other)]
    Unknown,
}

/// A JSON Web Key Set, as served at `/auth/v1/.well-known/jwks.json` and
/// injected as `SUPABASE_JWKS`.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One key. Unknown members are ignored.
#[derive(Clone, Deserialize)]
pub struct Jwk {
    pub kty: Kty,
    pub kid: Option<String>,
    pub alg: Option<Alg>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    /// The secret of a symmetric (`oct`) key, base64url.
    pub k: Option<String>,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("k", &self.k.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// The standard shape of a key set.
#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Entry>,
}

/// A member of `keys`. One that is not a key this module can read (no
/// `kty`, a member of the wrong type) is skipped, not fatal: RFC 7517 §5
/// has the rest of the set used, and one odd key must not lock out every
/// user.
///
/// Each member is kept as its JSON text and read as a key apart, rather
/// than through serde's `untagged` (which buffers every value into a
/// generic tree first, and costs the module that tree's code).
struct Entry(Option<Jwk>);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
        Ok(Entry(serde_json::from_str(raw.get()).ok()))
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys":[...]}`, or the bare array of
    /// keys). Keys it cannot read are skipped.
    ///
    /// # Errors
    /// [`Error::Config`] naming `SUPABASE_JWKS` when it is not a JWKS.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let entries = serde_json::from_str::<JwksDoc>(text)
            .map(|doc| doc.keys)
            .or_else(|_| serde_json::from_str::<Vec<Entry>>(text))
            .map_err(|_| Error::Config {
                setting: "SUPABASE_JWKS",
                message: "must be a JSON Web Key Set ({\"keys\":[...]})".into(),
            })?;
        Ok(Jwks {
            keys: entries.into_iter().filter_map(|Entry(key)| key).collect(),
        })
    }
}

/// What tokens are checked against.
#[derive(Clone, Default)]
pub struct Keys {
    /// `BACKUP_JWT_SECRET`, for HS256 tokens.
    pub hs256_secret: Option<Vec<u8>>,
    /// The keys known now (injected and fetched): asymmetric keys for ES256
    /// and RS256 tokens, `oct` keys for HS256 tokens.
    pub jwks: Option<Jwks>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks", &self.jwks)
            .finish()
    }
}

/// The JOSE header members used; others (`typ`, ...) are ignored. Read
/// through [`Claims`], whose `alg` must be present.
pub(crate) struct Header {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
}

/// The members read from either part of a token, the JOSE header (`alg`,
/// `kid`) and the claims, of both kinds of token checked here: user tokens
/// (this module) and GitHub's OIDC tokens ([`super::oidc`]). One struct for
/// all four, because each struct serde reads is its own copy of the JSON
/// visitor in the module (about 1 KB gzipped each). Other members are
/// ignored; one of the wrong JSON type makes the part unreadable ("bad
/// header", "bad claims"). For the same reason [`super::auth`] reads the
/// `id` of Supabase Auth's user object through it.
#[derive(Deserialize)]
pub(crate) struct Claims {
    alg: Option<Alg>,
    kid: Option<String>,
    pub(crate) id: Option<String>,
    /// NumericDate: seconds, fractions allowed.
    pub(crate) exp: Option<f64>,
    pub(crate) nbf: Option<f64>,
    pub(crate) iat: Option<f64>,
    role: Option<String>,
    pub(crate) aud: Option<Audience>,
    sub: Option<String>,
    pub(crate) iss: Option<String>,
    // GitHub Actions' claims.
    pub(crate) repository: Option<String>,
    #[serde(rename = "ref")]
    pub(crate) git_ref: Option<String>,
    pub(crate) workflow_ref: Option<String>,
    pub(crate) event_name: Option<String>,
    /// GitHub writes both as decimal strings.
    pub(crate) run_id: Option<String>,
    pub(crate) run_attempt: Option<String>,
}

/// `aud`, which RFC 7519 allows as one string or an array of them.
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Reads either form directly (serde's `untagged` would buffer the value
/// into a generic tree first).
impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;
        impl<'de> serde::de::Visitor<'de> for AudienceVisitor {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(AudienceVisitor)
    }
}

impl Audience {
    pub(crate) fn includes(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

fn invalid(reason: &str) -> Error {
    Error::InvalidToken(reason.to_string())
}

/// The hash of every signature checked here, as WebCrypto names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hash {
    #[serde(rename = "SHA-256")]
    Sha256,
}

/// The one curve of ES256, as WebCrypto and JWKs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
}

/// The `algorithm` of WebCrypto's `importKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "name")]
pub enum ImportAlgorithm {
    /// `{"name":"ECDSA","namedCurve":"P-256"}`
    #[serde(rename = "ECDSA")]
    Ecdsa {
        #[serde(rename = "namedCurve")]
        named_curve: Curve,
    },
    /// `{"name":"RSASSA-PKCS1-v1_5","hash":"SHA-256"}`
    #[serde(rename = "RSASSA-PKCS1-v1_5")]
    RsassaPkcs1V15 { hash: Hash },
}

/// The `algorithm` of WebCrypto's `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "name")]
pub enum VerifyAlgorithm {
    /// `{"name":"ECDSA","hash":"SHA-256"}`
    #[serde(rename = "ECDSA")]
    Ecdsa { hash: Hash },
    /// `{"name":"RSASSA-PKCS1-v1_5"}` (the hash was fixed at import).
    #[serde(rename = "RSASSA-PKCS1-v1_5")]
    RsassaPkcs1V15,
}

/// The public members of a key, all WebCrypto is given to import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kty")]
pub enum PublicJwk {
    #[serde(rename = "EC")]
    Ec { crv: Curve, x: String, y: String },
    #[serde(rename = "RSA")]
    Rsa { n: String, e: String },
}

/// The asymmetric signature a token's acceptance still depends on: the
/// host verifies it with WebCrypto (`crypto.subtle.importKey("jwk", ...)`
/// then `crypto.subtle.verify`), using exactly these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    pub import_algorithm: ImportAlgorithm,
    pub verify_algorithm: VerifyAlgorithm,
    pub jwk: PublicJwk,
    /// `base64url(header) "." base64url(payload)`.
    pub signed: Vec<u8>,
    /// The decoded signature (raw `r || s` for ES256, as WebCrypto expects).
    pub signature: Vec<u8>,
}

/// The outcome of checking a token that was not refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fully verified (HS256 with a key this instance holds).
    Valid(User),
    /// Claims are valid; accept `user` only if `check` verifies.
    ValidIfSigned(User, SignatureCheck),
    /// Claims are valid, but no HS256 secret is held here: accept `user`
    /// only if Supabase Auth answers for this token with the same user.
    /// `exp` (unix seconds) bounds how long that answer may be remembered.
    ValidIfAuthConfirms { user: User, exp: i64 },
    /// Claims are valid, but no key has the token's `kid` (or, without a
    /// `kid`, the token's key type): a fresher key set may.
    UnknownKey,
}

/// Checks a user access token against the keys held now. What remains to be
/// done (a WebCrypto check, a question to Supabase Auth, a fresher key set)
/// is the [`Verdict`]; [`super::auth`] does it.
///
/// # Errors
/// [`Error::InvalidToken`] (401) for every reason a token is not accepted;
/// the reason is logged, the client only learns that it was refused.
pub fn verify(token: &str, keys: &Keys, now_secs: i64) -> Result<Verdict, Error> {
    let (header, p64, signed, signature) = compact(token)?;
    if header.alg == Alg::Unsupported {
        return Err(invalid("the algorithm is not HS256, ES256 or RS256"));
    }
    let (user, exp) = check_claims(p64, now_secs)?;
    if header.alg == Alg::Hs256 {
        return match hs256_verifies(keys, header.kid.as_deref(), signed, &signature) {
            None => Ok(Verdict::ValidIfAuthConfirms { user, exp }),
            Some(true) => Ok(Verdict::Valid(user)),
            Some(false) => Err(invalid("HS256 signature mismatch")),
        };
    }
    Ok(match find_key(keys.jwks.as_ref(), &header)? {
        Some(jwk) => {
            Verdict::ValidIfSigned(user, signature_check(jwk, header.alg, signed, signature)?)
        }
        None => Verdict::UnknownKey,
    })
}

/// A compact JWS taken apart: its header, its base64url claims, the bytes
/// its signature covers, and the signature.
pub(crate) type Compact<'a> = (Header, &'a str, &'a [u8], Vec<u8>);

/// Takes a compact JWS apart ([`Compact`]). Shared with [`super::oidc`].
///
/// # Errors
/// [`Error::InvalidToken`] naming the part that is malformed.
pub(crate) fn compact(token: &str) -> Result<Compact<'_>, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header = decode_json::<Claims>(h64)
        .and_then(|h| {
            Some(Header {
                alg: h.alg?,
                kid: h.kid,
            })
        })
        .ok_or_else(|| invalid("bad header"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| invalid("bad signature encoding"))?;
    Ok((
        header,
        p64,
        &token.as_bytes()[..h64.len() + 1 + p64.len()],
        signature,
    ))
}

/// Whether one of the HS256 secrets the token may be signed with (see the
/// module docs) verifies its signature; `None` when no secret is held.
fn hs256_verifies(keys: &Keys, kid: Option<&str>, signed: &[u8], signature: &[u8]) -> Option<bool> {
    let mut held = false;
    let mut verified = false;
    let mut check = |secret: &[u8]| {
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
            held |= !secret.is_empty();
            mac.update(signed);
            verified |= !secret.is_empty() && mac.verify_slice(signature).is_ok();
        }
    };
    for key in keys.jwks.iter().flat_map(|jwks| &jwks.keys) {
        let candidate = key.kty == Kty::Oct
            && key.alg.is_none_or(|a| a == Alg::Hs256)
            && (kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid);
        if let Some(secret) = key.k.as_deref().filter(|_| candidate) {
            if let Ok(secret) = URL_SAFE_NO_PAD.decode(secret.trim_end_matches('=')) {
                check(&secret);
            }
        }
    }
    if let Some(secret) = &keys.hs256_secret {
        check(secret);
    }
    held.then_some(verified)
}

/// The user and `exp` of valid claims.
fn check_claims(p64: &str, now_secs: i64) -> Result<(User, i64), Error> {
    let claims: Claims = decode_json(p64).ok_or_else(|| invalid("bad claims"))?;
    let exp = claims.exp.ok_or_else(|| invalid("no exp"))? as i64;
    // Saturating: a claim may be any number, and `exp: 1e300` (cut to
    // i64::MAX) plus the leeway must not wrap around into the past.
    if exp.saturating_add(LEEWAY_SECONDS) < now_secs {
        return Err(invalid("expired"));
    }
    if let Some(nbf) = claims.nbf.map(|t| t as i64) {
        if nbf.saturating_sub(LEEWAY_SECONDS) > now_secs {
            return Err(invalid("not yet valid"));
        }
    }
    if claims
        .iat
        .is_some_and(|iat| iat as i64 > now_secs.saturating_add(MAX_IAT_AHEAD_SECONDS))
    {
        return Err(invalid("issued in the future"));
    }
    if claims.role.as_deref() != Some("authenticated") {
        return Err(invalid("not a signed-in user's token"));
    }
    // Required: a token without `aud` was not minted for this project's
    // users (Supabase Auth always sets it).
    if !claims.aud.is_some_and(|aud| aud.includes("authenticated")) {
        return Err(invalid("wrong audience"));
    }
    let sub = claims.sub.ok_or_else(|| invalid("no sub"))?;
    let id = Uuid::try_parse(&sub).map_err(|_| invalid("sub is not a UUID"))?;
    Ok((User { id }, exp))
}

/// A base64url JSON object, typed. Objects only: serde would also read a
/// struct from a JSON array, member by position.
pub(crate) fn decode_json<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_str(std::str::from_utf8(&bytes).ok()?).ok()
}

/// The key for an asymmetric token; `None` when no key has its `kid` (or,
/// without a `kid`, its key type). A key under the right `kid` but of the
/// wrong type or algorithm is a refusal, not a miss: refetching cannot help.
pub(crate) fn find_key<'a>(
    jwks: Option<&'a Jwks>,
    header: &Header,
) -> Result<Option<&'a Jwk>, Error> {
    let kty = if header.alg == Alg::Es256 {
        Kty::Ec
    } else {
        Kty::Rsa
    };
    let Some(jwks) = jwks else {
        return Ok(None);
    };
    let mut named = jwks.keys.iter().filter(|k| match &header.kid {
        Some(want) => k.kid.as_ref() == Some(want),
        None => k.kty == kty,
    });
    let Some(first) = named.next() else {
        return Ok(None);
    };
    std::iter::once(first)
        .chain(named)
        .filter(|k| k.kty == kty)
        .find(|k| k.alg.is_none_or(|a| a == header.alg))
        .map(Some)
        .ok_or_else(|| invalid("the key under this kid is not of the token's algorithm"))
}

fn b64_member(value: &Option<String>, len: Option<usize>) -> Result<String, Error> {
    let v = value.as_deref().ok_or_else(|| invalid("incomplete JWK"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| invalid("bad JWK encoding"))?;
    if len.is_some_and(|l| l != bytes.len()) || bytes.is_empty() {
        return Err(invalid("bad JWK member length"));
    }
    Ok(v.to_string())
}

pub(crate) fn signature_check(
    jwk: &Jwk,
    alg: Alg,
    signed: &[u8],
    signature: Vec<u8>,
) -> Result<SignatureCheck, Error> {
    if alg == Alg::Es256 {
        if jwk.crv.as_deref() != Some("P-256") {
            return Err(invalid("ES256 key is not on P-256"));
        }
        if signature.len() != 64 {
            return Err(invalid("ES256 signature is not 64 bytes"));
        }
        Ok(SignatureCheck {
            import_algorithm: ImportAlgorithm::Ecdsa {
                named_curve: Curve::P256,
            },
            verify_algorithm: VerifyAlgorithm::Ecdsa { hash: Hash::Sha256 },
            jwk: PublicJwk::Ec {
                crv: Curve::P256,
                x: b64_member(&jwk.x, Some(32))?,
                y: b64_member(&jwk.y, Some(32))?,
            },
            signed: signed.to_vec(),
            signature,
        })
    } else {
        let n = b64_member(&jwk.n, None)?;
        if URL_SAFE_NO_PAD.decode(&n).map_or(0, |b| b.len()) < 256 {
            return Err(invalid("RSA keys under 2048 bits are refused"));
        }
        Ok(SignatureCheck {
            import_algorithm: ImportAlgorithm::RsassaPkcs1V15 { hash: Hash::Sha256 },
            verify_algorithm: VerifyAlgorithm::RsassaPkcs1V15,
            jwk: PublicJwk::Rsa {
                n,
                e: b64_member(&jwk.e, None)?,
            },
            signed: signed.to_vec(),
            signature,
        })
    }
}

/// Signs an HS256 token (tests only).
#[cfg(test)]
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    sign_hs256_kid(secret, None, claims)
}

/// Signs an HS256 token whose header names `kid` (tests only).
#[cfg(test)]
pub fn sign_hs256_kid(secret: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
    };
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";
    const NOW: i64 = 1_800_000_000;
    const USER: &str = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";

    fn hs_keys() -> Keys {
        Keys {
            hs256_secret: Some(SECRET.to_vec()),
            jwks: None,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"sub": USER, "role": "authenticated", "aud": "authenticated", "exp": NOW + 3600})
    }

    /// A value as it crosses to the host (the same serde derive).
    fn wire(value: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    fn valid_user(verdict: Verdict) -> String {
        match verdict {
            Verdict::Valid(user) => user.id.to_string(),
            other => panic!("expected a fully verified token, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_valid_hs256_user_token() {
        let token = sign_hs256(SECRET, &claims());
        assert_eq!(valid_user(verify(&token, &hs_keys(), NOW).unwrap()), USER);
    }

    #[test]
    fn rejects_an_expired_token() {
        let mut c = claims();
        c["exp"] = json!(NOW - 31);
        let err = verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).unwrap_err();
        assert_eq!(err, Error::InvalidToken("expired".into()));
        c["exp"] = json!(NOW - 29);
        assert!(
            verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_ok(),
            "within leeway"
        );
    }

    #[test]
    fn time_claims_at_the_edge_of_the_numbers_neither_wrap_nor_panic() {
        let mut c = claims();
        c["exp"] = json!(1e300);
        assert_eq!(
            valid_user(verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).unwrap()),
            USER,
            "an exp far ahead is not in the past"
        );
        c["exp"] = json!(-1e300);
        assert_eq!(
            verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).unwrap_err(),
            Error::InvalidToken("expired".into())
        );
        let mut c = claims();
        c["nbf"] = json!(-1e300);
        c["iat"] = json!(-1e300);
        assert!(verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_ok());
        c["nbf"] = json!(1e300);
        assert_eq!(
            verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).unwrap_err(),
            Error::InvalidToken("not yet valid".into())
        );
        // A clock at the end of time: an exp and iat as far ahead are
        // neither expired nor issued in the future.
        c["nbf"] = json!(NOW);
        c["exp"] = json!(1e300);
        c["iat"] = json!(1e300);
        assert_eq!(
            valid_user(verify(&sign_hs256(SECRET, &c), &hs_keys(), i64::MAX - 10).unwrap()),
            USER
        );
    }

    #[test]
    fn rejects_a_token_issued_more_than_a_minute_ahead() {
        let mut c = claims();
        c["iat"] = json!(NOW + 10 * 365 * 86_400);
        assert_eq!(
            verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).unwrap_err(),
            Error::InvalidToken("issued in the future".into())
        );
        c["iat"] = json!(NOW + 60);
        assert!(verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_ok());
    }

    #[test]
    fn rejects_the_anon_key_and_service_role_tokens() {
        for role in ["anon", "service_role"] {
            let mut c = claims();
            c["role"] = json!(role);
            assert!(
                verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_err(),
                "{role}"
            );
        }
    }

    #[test]
    fn rejects_a_token_signed_with_another_secret() {
        let token = sign_hs256(b"another-secret-another-secret-another", &claims());
        assert_eq!(verify(&token, &hs_keys(), NOW).unwrap_err().status(), 401);
    }

    #[test]
    fn rejects_alg_none_and_malformed_tokens() {
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
        );
        for bad in [none.as_str(), "", "a.b", "a.b.c.d", "x.y.z"] {
            assert!(verify(bad, &hs_keys(), NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_a_non_uuid_subject_and_a_wrong_audience() {
        let mut c = claims();
        c["sub"] = json!("12345");
        assert!(verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_err());
        let mut c = claims();
        c["aud"] = json!(["other"]);
        assert!(verify(&sign_hs256(SECRET, &c), &hs_keys(), NOW).is_err());
    }

    #[test]
    fn an_hs256_token_without_a_held_secret_needs_auth_to_confirm_it() {
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(es256_keys().jwks.unwrap()),
        };
        let user = User {
            id: Uuid::parse_str(USER).unwrap(),
        };
        assert_eq!(
            verify(&sign_hs256(SECRET, &claims()), &keys, NOW).unwrap(),
            Verdict::ValidIfAuthConfirms {
                user: user.clone(),
                exp: NOW + 3600
            }
        );
        // An oct key under another kid is not this token's key.
        let other_kid = Keys {
            hs256_secret: None,
            jwks: Some(oct_jwks(&[(Some("other"), SECRET)])),
        };
        assert_eq!(
            verify(
                &sign_hs256_kid(SECRET, Some("mine"), &claims()),
                &other_kid,
                NOW
            )
            .unwrap(),
            Verdict::ValidIfAuthConfirms {
                user,
                exp: NOW + 3600
            }
        );
    }

    #[test]
    fn an_hs256_token_with_bad_claims_is_refused_before_auth_is_asked() {
        let none = Keys::default();
        for (name, value) in [
            ("exp", json!(NOW - 100)),
            ("role", json!("anon")),
            ("sub", json!("not-a-uuid")),
            ("aud", json!("other")),
        ] {
            let mut c = claims();
            c[name] = value;
            assert!(
                matches!(
                    verify(&sign_hs256(SECRET, &c), &none, NOW),
                    Err(Error::InvalidToken(_))
                ),
                "{name}"
            );
        }
    }

    fn oct_jwks(keys: &[(Option<&str>, &[u8])]) -> Jwks {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|(kid, secret)| {
                let mut k = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret)});
                if let Some(kid) = kid {
                    k["kid"] = json!(kid);
                }
                k
            })
            .collect();
        Jwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
    }

    #[test]
    fn an_oct_key_without_kid_verifies_hs256_tokens_with_or_without_kid() {
        // The shape the Supabase CLI injects: {"kty":"oct","k":"<base64url>"}.
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(oct_jwks(&[(None, SECRET)])),
        };
        for kid in [None, Some("any")] {
            let token = sign_hs256_kid(SECRET, kid, &claims());
            assert_eq!(valid_user(verify(&token, &keys, NOW).unwrap()), USER);
        }
        let forged = sign_hs256(b"another-secret-another-secret-another", &claims());
        assert_eq!(
            verify(&forged, &keys, NOW).unwrap_err(),
            Error::InvalidToken("HS256 signature mismatch".into()),
            "a held key that does not verify is a refusal, never a question to Auth"
        );
    }

    #[test]
    fn an_oct_key_is_chosen_by_kid_among_several() {
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(oct_jwks(&[
                (Some("old"), b"old-secret-old-secret-old-secret-old"),
                (Some("new"), SECRET),
            ])),
        };
        let token = sign_hs256_kid(SECRET, Some("new"), &claims());
        assert_eq!(valid_user(verify(&token, &keys, NOW).unwrap()), USER);
        let token = sign_hs256_kid(SECRET, Some("old"), &claims());
        assert!(
            verify(&token, &keys, NOW).is_err(),
            "signed with another key than its kid's"
        );
        let token = sign_hs256(SECRET, &claims());
        assert_eq!(
            valid_user(verify(&token, &keys, NOW).unwrap()),
            USER,
            "without a kid, each oct key is tried"
        );
    }

    #[test]
    fn backup_jwt_secret_is_tried_beside_the_oct_keys() {
        let keys = Keys {
            hs256_secret: Some(SECRET.to_vec()),
            jwks: Some(oct_jwks(&[(
                None,
                b"the-cli-secret-the-cli-secret-the-cli",
            )])),
        };
        let token = sign_hs256_kid(SECRET, Some("x"), &claims());
        assert_eq!(valid_user(verify(&token, &keys, NOW).unwrap()), USER);
    }

    #[test]
    fn a_jwks_may_be_a_bare_array_and_never_prints_a_secret() {
        let jwks = Jwks::parse(r#"[{"kty":"oct","k":"c2VjcmV0LXZhbHVl","kid":"a"}]"#).unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert!(!format!("{jwks:?}").contains("c2VjcmV0"));
        assert!(Jwks::parse(r#"{"nokeys":1}"#).is_err());
    }

    fn es256_keys() -> Keys {
        let jwks = Jwks::parse(
            &json!({"keys": [
                {"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"},
                {"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                 "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])},
            ]})
            .to_string(),
        )
        .unwrap();
        Keys {
            hs256_secret: None,
            jwks: Some(jwks),
        }
    }

    fn es256_token(kid: &str, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": kid}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode([9u8; 64]))
    }

    #[test]
    fn an_es256_token_is_valid_only_if_webcrypto_verifies_the_matching_key() {
        let token = es256_token("k1", &claims());
        let Verdict::ValidIfSigned(user, check) = verify(&token, &es256_keys(), NOW).unwrap()
        else {
            panic!("an asymmetric token needs the host's signature check");
        };
        assert_eq!(user.id.to_string(), USER);
        // What the host hands WebCrypto, member for member.
        assert_eq!(
            wire(&check.import_algorithm),
            json!({"name": "ECDSA", "namedCurve": "P-256"})
        );
        assert_eq!(
            wire(&check.verify_algorithm),
            json!({"name": "ECDSA", "hash": "SHA-256"})
        );
        assert_eq!(
            wire(&check.jwk),
            json!({"kty": "EC", "crv": "P-256",
                   "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])})
        );
        assert_eq!(check.signature, vec![9u8; 64]);
        assert_eq!(check.signed, token.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn an_asymmetric_token_with_an_unknown_kid_is_a_key_miss_not_a_refusal() {
        assert_eq!(
            verify(&es256_token("k2", &claims()), &es256_keys(), NOW).unwrap(),
            Verdict::UnknownKey
        );
        let no_jwks = Keys {
            hs256_secret: Some(SECRET.to_vec()),
            jwks: None,
        };
        assert_eq!(
            verify(&es256_token("k1", &claims()), &no_jwks, NOW).unwrap(),
            Verdict::UnknownKey
        );
    }

    #[test]
    fn an_asymmetric_token_with_bad_claims_is_refused_before_any_key_lookup() {
        let mut expired = claims();
        expired["exp"] = json!(NOW - 100);
        for keys in [es256_keys(), Keys::default()] {
            assert!(matches!(
                verify(&es256_token("k2", &expired), &keys, NOW),
                Err(Error::InvalidToken(_))
            ));
        }
    }

    #[test]
    fn a_known_kid_of_the_wrong_key_type_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "only-ec"}).to_string());
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(
                Jwks::parse(
                    &json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "only-ec",
                "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])}]})
                    .to_string(),
                )
                .unwrap(),
            ),
        };
        let token = format!(
            "{header}.{}.{}",
            URL_SAFE_NO_PAD.encode(claims().to_string()),
            URL_SAFE_NO_PAD.encode([1u8; 256])
        );
        assert!(matches!(
            verify(&token, &keys, NOW),
            Err(Error::InvalidToken(_))
        ));
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(Jwks::parse(&json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([7u8; 128]), "e": "AQAB"}]}).to_string()).unwrap()),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let token = format!(
            "{header}.{}.{}",
            URL_SAFE_NO_PAD.encode(claims().to_string()),
            URL_SAFE_NO_PAD.encode([1u8; 128])
        );
        assert!(verify(&token, &keys, NOW).is_err());
    }

    fn token_with(header: &serde_json::Value, claims: &serde_json::Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([9u8; 64])
        )
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let refusal = |header: serde_json::Value, claims: serde_json::Value| match verify(
            &token_with(&header, &claims),
            &es256_keys(),
            NOW,
        ) {
            Err(Error::InvalidToken(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let es = json!({"alg": "ES256", "kid": "k1"});
        let cases = [
            (json!({"kid": "k1"}), claims(), "bad header"),
            (json!({"alg": 256}), claims(), "bad header"),
            (json!(["ES256", "k1"]), claims(), "bad header"),
            (
                json!({"alg": "none"}),
                claims(),
                "the algorithm is not HS256, ES256 or RS256",
            ),
            (
                json!({"alg": "EdDSA"}),
                claims(),
                "the algorithm is not HS256, ES256 or RS256",
            ),
            (es.clone(), json!([USER, "authenticated"]), "bad claims"),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated", "exp": "soon"}),
                "bad claims",
            ),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated", "aud": 7, "exp": NOW}),
                "bad claims",
            ),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated"}),
                "no exp",
            ),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated", "exp": NOW, "nbf": NOW + 31}),
                "not yet valid",
            ),
            (
                es.clone(),
                json!({"sub": USER, "exp": NOW, "aud": "authenticated"}),
                "not a signed-in user's token",
            ),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated", "aud": "authenticated",
                       "exp": NOW, "iat": NOW + 61}),
                "issued in the future",
            ),
            (
                es.clone(),
                json!({"sub": USER, "role": "authenticated", "aud": ["x", "y"], "exp": NOW}),
                "wrong audience",
            ),
            (
                es.clone(),
                json!({"role": "authenticated", "aud": "authenticated", "exp": NOW}),
                "no sub",
            ),
            (
                es,
                json!({"sub": "42", "role": "authenticated", "aud": "authenticated", "exp": NOW}),
                "sub is not a UUID",
            ),
        ];
        for (header, claims, reason) in cases {
            assert_eq!(
                refusal(header.clone(), claims.clone()),
                reason,
                "{header} {claims}"
            );
        }
    }

    #[test]
    fn aud_may_be_one_string_or_a_list_but_not_absent() {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("aud");
        let token = token_with(&json!({"alg": "ES256", "kid": "k1"}), &c);
        assert_eq!(
            verify(&token, &es256_keys(), NOW).unwrap_err(),
            Error::InvalidToken("wrong audience".into())
        );
        for aud in [json!("authenticated"), json!(["other", "authenticated"])] {
            let mut c = claims();
            c["aud"] = aud.clone();
            let token = token_with(&json!({"alg": "ES256", "kid": "k1"}), &c);
            assert!(
                matches!(
                    verify(&token, &es256_keys(), NOW),
                    Ok(Verdict::ValidIfSigned(..))
                ),
                "{aud}"
            );
        }
    }

    #[test]
    fn an_rs256_check_hands_webcrypto_the_rsa_parameters() {
        let n = URL_SAFE_NO_PAD.encode([7u8; 256]);
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(
                Jwks::parse(
                    &json!({"keys": [{"kty": "RSA", "kid": "r1", "alg": "RS256",
                    "use": "sig", "n": n, "e": "AQAB", "d": "private-part"}]})
                    .to_string(),
                )
                .unwrap(),
            ),
        };
        let token = token_with(&json!({"alg": "RS256", "kid": "r1"}), &claims());
        let Verdict::ValidIfSigned(_, check) = verify(&token, &keys, NOW).unwrap() else {
            panic!("an RS256 token needs the host's signature check");
        };
        assert_eq!(
            wire(&check.import_algorithm),
            json!({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"})
        );
        assert_eq!(
            wire(&check.verify_algorithm),
            json!({"name": "RSASSA-PKCS1-v1_5"})
        );
        assert_eq!(
            wire(&check.jwk),
            json!({"kty": "RSA", "n": n, "e": "AQAB"}),
            "only the public members reach the host"
        );
    }

    #[test]
    fn keys_of_unknown_type_or_shape_are_skipped_not_fatal() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let y = URL_SAFE_NO_PAD.encode([2u8; 32]);
        let jwks = Jwks::parse(
            &json!({"keys": [
                {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": x},
                {"kid": "no-kty"},
                {"kty": "EC", "kid": "odd", "x": 5},
                "not a key",
                null,
                {"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "x": x, "y": y},
            ]})
            .to_string(),
        )
        .unwrap();
        let kinds: Vec<_> = jwks
            .keys
            .iter()
            .map(|k| (k.kty, k.kid.as_deref()))
            .collect();
        assert_eq!(kinds, [(Kty::Unknown, Some("ed")), (Kty::Ec, Some("k1"))]);
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(jwks),
        };
        let es = |kid: &str| token_with(&json!({"alg": "ES256", "kid": kid}), &claims());
        assert!(matches!(
            verify(&es("k1"), &keys, NOW),
            Ok(Verdict::ValidIfSigned(..))
        ));
        assert_eq!(
            verify(&es("ed"), &keys, NOW).unwrap_err(),
            Error::InvalidToken("the key under this kid is not of the token's algorithm".into())
        );
        assert_eq!(verify(&es("odd"), &keys, NOW).unwrap(), Verdict::UnknownKey);
        for not_a_set in ["", "null", "{}", r#"{"keys":{}}"#, r#"{"keys":"x"}"#, "[1"] {
            assert!(
                matches!(
                    Jwks::parse(not_a_set),
                    Err(Error::Config {
                        setting: "SUPABASE_JWKS",
                        ..
                    })
                ),
                "{not_a_set:?}"
            );
        }
    }
}
