//! User access tokens: the JWTs Supabase Auth issues to signed-in users.
//!
//! `trigger-backup` and `backup-status` take `Authorization: Bearer <token>`.
//! A token is accepted when its signature verifies against the project's
//! keys, it has not expired, it is a user token (`role = authenticated`,
//! `aud` includes `authenticated`) and its `sub` is a UUID. Keys are either
//! the asymmetric signing keys of the project's JWKS (ES256 or RS256, the
//! current Supabase default) or, for legacy projects and local development,
//! the shared HS256 secret. `alg: none` and every other algorithm are refused.
//!
//! HS256 is verified here (RustCrypto HMAC). For ES256 and RS256 this module
//! decides everything (algorithm, key by `kid` and `kty`, claims) and leaves
//! only the signature arithmetic to the host's WebCrypto, as a
//! [`SignatureCheck`]: the P-256 and RSA crates would more than double the
//! size of the WebAssembly module (see README, "Size").

use crate::error::Error;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: i64 = 30;
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The verified facts the core uses from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
}

/// A JSON Web Key Set, as served at `/auth/v1/.well-known/jwks.json`.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key. Unknown members are ignored.
#[derive(Debug, Clone, Default)]
pub struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
}

impl Jwks {
    /// Parses a JWKS document. Keys without a `kty` are skipped.
    ///
    /// # Errors
    /// [`Error::Config`] naming `SUPABASE_JWKS` when it is not a JWKS.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let doc: Value = serde_json::from_slice(text.as_bytes()).unwrap_or(Value::Null);
        let keys = doc["keys"].as_array().ok_or_else(|| Error::Config {
            setting: "SUPABASE_JWKS",
            message: "must be a JSON Web Key Set ({\"keys\":[...]})".into(),
        })?;
        let member = |k: &Value, name: &str| k[name].as_str().map(str::to_string);
        Ok(Jwks {
            keys: keys
                .iter()
                .filter_map(|k| {
                    Some(Jwk {
                        kty: member(k, "kty")?,
                        kid: member(k, "kid"),
                        alg: member(k, "alg"),
                        crv: member(k, "crv"),
                        x: member(k, "x"),
                        y: member(k, "y"),
                        n: member(k, "n"),
                        e: member(k, "e"),
                    })
                })
                .collect(),
        })
    }
}

/// What tokens are checked against.
#[derive(Clone, Default)]
pub struct Keys {
    /// `SUPABASE_JWT_SECRET`, for HS256 tokens.
    pub hs256_secret: Option<Vec<u8>>,
    /// The project's JWKS, for ES256 and RS256 tokens.
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

struct Header {
    alg: String,
    kid: Option<String>,
}

fn invalid(reason: &str) -> Error {
    Error::InvalidToken(reason.to_string())
}

/// The asymmetric signature a token's acceptance still depends on: the
/// host verifies it with WebCrypto (`crypto.subtle.importKey("jwk", ...)`
/// then `crypto.subtle.verify`), using exactly these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// WebCrypto `importKey` algorithm, e.g. `{"name":"ECDSA","namedCurve":"P-256"}`.
    pub import_algorithm: serde_json::Value,
    /// WebCrypto `verify` algorithm, e.g. `{"name":"ECDSA","hash":"SHA-256"}`.
    pub verify_algorithm: serde_json::Value,
    /// The public JWK (only its public members).
    pub jwk: serde_json::Value,
    /// `base64url(header) "." base64url(payload)`.
    pub signed: Vec<u8>,
    /// The decoded signature (raw `r || s` for ES256, as WebCrypto expects).
    pub signature: Vec<u8>,
}

/// The outcome of checking a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fully verified (HS256).
    Valid(User),
    /// Claims are valid; accept `user` only if `check` verifies.
    ValidIfSigned(User, SignatureCheck),
}

/// Checks a user access token.
///
/// # Errors
/// [`Error::InvalidToken`] (401) for every reason a token is not accepted;
/// the reason is logged, the client only learns that it was refused.
pub fn verify(token: &str, keys: &Keys, now_secs: i64) -> Result<Verdict, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header = decode_json(h64)
        .and_then(|h| {
            Some(Header {
                alg: h["alg"].as_str()?.to_string(),
                kid: h["kid"].as_str().map(str::to_string),
            })
        })
        .ok_or_else(|| invalid("bad header"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| invalid("bad signature encoding"))?;
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];

    let check = match header.alg.as_str() {
        "HS256" => {
            let secret = keys
                .hs256_secret
                .as_ref()
                .ok_or_else(|| invalid("HS256 token but SUPABASE_JWT_SECRET is not set"))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret)
                .map_err(|_| invalid("unusable HS256 secret"))?;
            mac.update(signed);
            mac.verify_slice(&signature)
                .map_err(|_| invalid("HS256 signature mismatch"))?;
            None
        }
        "ES256" | "RS256" => Some(signature_check(
            find_key(keys, &header)?,
            &header.alg,
            signed,
            signature,
        )?),
        _ => return Err(invalid("the algorithm is not HS256, ES256 or RS256")),
    };

    let user = check_claims(p64, now_secs)?;
    Ok(match check {
        None => Verdict::Valid(user),
        Some(check) => Verdict::ValidIfSigned(user, check),
    })
}

fn check_claims(p64: &str, now_secs: i64) -> Result<User, Error> {
    let claims = decode_json(p64)
        .filter(Value::is_object)
        .ok_or_else(|| invalid("bad claims"))?;
    let time = |name: &str| claims[name].as_f64().map(|t| t as i64);
    let exp = time("exp").ok_or_else(|| invalid("no exp"))?;
    if exp + LEEWAY_SECONDS < now_secs {
        return Err(invalid("expired"));
    }
    if let Some(nbf) = time("nbf") {
        if nbf - LEEWAY_SECONDS > now_secs {
            return Err(invalid("not yet valid"));
        }
    }
    if claims["role"].as_str() != Some("authenticated") {
        return Err(invalid("not a signed-in user's token"));
    }
    let aud_ok = match &claims["aud"] {
        Value::Null => true,
        Value::String(a) => a == "authenticated",
        Value::Array(list) => list.iter().any(|a| a == "authenticated"),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid("wrong audience"));
    }
    let sub = claims["sub"].as_str().ok_or_else(|| invalid("no sub"))?;
    let id = Uuid::try_parse(sub).map_err(|_| invalid("sub is not a UUID"))?;
    Ok(User { id })
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn find_key<'a>(keys: &'a Keys, header: &Header) -> Result<&'a Jwk, Error> {
    let jwks = keys
        .jwks
        .as_ref()
        .ok_or_else(|| invalid("asymmetric token but no JWKS is configured"))?;
    let kty = if header.alg == "ES256" { "EC" } else { "RSA" };
    jwks.keys
        .iter()
        .filter(|k| k.kty == kty)
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header.alg))
        .find(|k| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .ok_or_else(|| invalid("no matching key in the JWKS"))
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

fn signature_check(
    jwk: &Jwk,
    alg: &str,
    signed: &[u8],
    signature: Vec<u8>,
) -> Result<SignatureCheck, Error> {
    if alg == "ES256" {
        if jwk.crv.as_deref() != Some("P-256") {
            return Err(invalid("ES256 key is not on P-256"));
        }
        if signature.len() != 64 {
            return Err(invalid("ES256 signature is not 64 bytes"));
        }
        Ok(SignatureCheck {
            import_algorithm: json!({"name": "ECDSA", "namedCurve": "P-256"}),
            verify_algorithm: json!({"name": "ECDSA", "hash": "SHA-256"}),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": b64_member(&jwk.x, Some(32))?, "y": b64_member(&jwk.y, Some(32))?,
            }),
            signed: signed.to_vec(),
            signature,
        })
    } else {
        let n = b64_member(&jwk.n, None)?;
        if URL_SAFE_NO_PAD.decode(&n).map_or(0, |b| b.len()) < 256 {
            return Err(invalid("RSA keys under 2048 bits are refused"));
        }
        Ok(SignatureCheck {
            import_algorithm: json!({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}),
            verify_algorithm: json!({"name": "RSASSA-PKCS1-v1_5"}),
            jwk: json!({"kty": "RSA", "n": n, "e": b64_member(&jwk.e, None)?}),
            signed: signed.to_vec(),
            signature,
        })
    }
}

/// Signs an HS256 token (tests only).
#[cfg(test)]
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
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
    fn hs256_token_is_refused_when_only_a_jwks_is_configured() {
        let keys = Keys {
            hs256_secret: None,
            jwks: Some(Jwks::default()),
        };
        assert!(verify(&sign_hs256(SECRET, &claims()), &keys, NOW).is_err());
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
        assert_eq!(
            check.import_algorithm,
            json!({"name": "ECDSA", "namedCurve": "P-256"})
        );
        assert_eq!(
            check.verify_algorithm,
            json!({"name": "ECDSA", "hash": "SHA-256"})
        );
        assert_eq!(check.jwk["kty"], "EC");
        assert_eq!(check.jwk["x"], URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert_eq!(check.signature, vec![9u8; 64]);
        assert_eq!(check.signed, token.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn an_asymmetric_token_with_an_unknown_kid_or_bad_claims_is_refused_before_any_signature_check()
    {
        assert!(verify(&es256_token("k2", &claims()), &es256_keys(), NOW).is_err());
        let mut expired = claims();
        expired["exp"] = json!(NOW - 100);
        assert!(verify(&es256_token("k1", &expired), &es256_keys(), NOW).is_err());
        let no_jwks = Keys {
            hs256_secret: Some(SECRET.to_vec()),
            jwks: None,
        };
        assert!(verify(&es256_token("k1", &claims()), &no_jwks, NOW).is_err());
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
}
