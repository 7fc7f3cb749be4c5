//! Reports bound to the exact GitHub run: the OIDC token a workflow job
//! gets from GitHub (`permissions: id-token: write`), sent by the workflow
//! as `Authorization: Bearer` on each report.
//!
//! A webhook signature proves only that the sender knows a shared secret;
//! anyone who holds it may report anything about any run. GitHub's token
//! names the run that asked for it, signed by GitHub: a report is accepted
//! only when its `workflow_run_id` and `run_attempt` are the token's
//! `run_id` and `run_attempt`, and [`crate::run::apply_report`] already
//! refuses a report whose `workflow_run_id` is not the one its row was
//! bound to (a dispatched row binds at its first `started` report, from
//! GitHub's 200 or from that report, and never changes afterwards).
//!
//! Checked, in this order, each refusal a 401 whose code names what failed
//! ([`Refusal`]) and never echoes the token: the compact form, `alg`
//! (RS256 only: `none` and HS256 alg confusion are refused before any key
//! is looked at), `iss`, `aud` (the finalize URL), `exp`/`nbf`/`iat` with
//! [`LEEWAY_SECONDS`] of skew, `repository`, `ref`, `workflow_ref`,
//! `event_name`, then the key by `kid` and the signature. The claims come
//! first, so a token that cannot be accepted never costs a key fetch.
//!
//! The issuer's key set (`{issuer}/.well-known/jwks`, where GitHub serves
//! it) is fetched, cached and refetched on an unknown `kid` by the same code
//! as Supabase's ([`super::auth::refetch_jwks`]); the RSA arithmetic is the
//! host's WebCrypto, as for user tokens ([`super::token::SignatureCheck`]).

use crate::config::{self, ReportAuth};
use crate::credentials::auth;
use crate::credentials::token::{self, Alg, Claims, Jwks, SignatureCheck};
use crate::credentials::token::{LEEWAY_SECONDS, MAX_IAT_AHEAD_SECONDS};
use crate::error::Error;
use crate::http::Request;
use crate::ports::Host;
use crate::report::Report;

/// GitHub Actions' OIDC issuer, the default of `GITHUB_OIDC_ISSUER`.
pub const GITHUB_OIDC_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// The events a backup run may be started by.
const EVENTS: [&str; 2] = ["workflow_dispatch", "schedule"];

/// What a token must say (from the settings, [`config::oidc`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `iss`, exactly as tokens name it.
    pub issuer: String,
    /// `aud`: the URL of `finalize-backup`, as the workflow asks for it.
    pub audience: String,
    /// `repository`, `owner/name` (GitHub names are case-insensitive).
    pub repository: String,
    /// The workflow's file name under `.github/workflows/`.
    pub workflow: String,
    /// `ref`, in full (`refs/heads/main`).
    pub git_ref: String,
}

impl Expected {
    /// Where the issuer serves its key set.
    pub fn jwks_url(&self) -> String {
        self.issuer.clone() + "/.well-known/jwks"
    }
}

/// Why a token was refused: which claim, or which part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a compact JWS of JSON objects, or a claim of the wrong type.
    Malformed,
    /// `alg` is not RS256 (`none`, HS256, ...).
    Alg,
    /// No usable key of the issuer has the token's `kid`, even after a refetch.
    Kid,
    /// The signature does not verify.
    Signature,
    Iss,
    Aud,
    /// Expired, or no `exp`.
    Exp,
    Nbf,
    /// Issued more than a minute in the future.
    Iat,
    Repository,
    Ref,
    WorkflowRef,
    EventName,
    /// `run_id` is not the report's `workflow_run_id`.
    RunId,
    /// `run_attempt` is not the report's `run_attempt`.
    RunAttempt,
}

impl Refusal {
    /// The error code of the 401.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Malformed => "oidc_malformed",
            Refusal::Alg => "oidc_alg",
            Refusal::Kid => "oidc_kid",
            Refusal::Signature => "oidc_signature",
            Refusal::Iss => "oidc_iss",
            Refusal::Aud => "oidc_aud",
            Refusal::Exp => "oidc_exp",
            Refusal::Nbf => "oidc_nbf",
            Refusal::Iat => "oidc_iat",
            Refusal::Repository => "oidc_repository",
            Refusal::Ref => "oidc_ref",
            Refusal::WorkflowRef => "oidc_workflow_ref",
            Refusal::EventName => "oidc_event_name",
            Refusal::RunId => "oidc_run_id",
            Refusal::RunAttempt => "oidc_run_attempt",
        }
    }

    /// The message of the 401. The code says which claim failed; neither
    /// says what the token held.
    pub fn message(self) -> &'static str {
        "the GitHub OIDC token was refused (see the code)"
    }
}

/// The run a verified token was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIdentity {
    pub run_id: u64,
    pub run_attempt: u32,
}

impl RunIdentity {
    /// Whether `report` is about this run and attempt.
    ///
    /// # Errors
    /// [`Error::OidcRefused`] with [`Refusal::RunId`] or [`Refusal::RunAttempt`].
    pub fn binds(&self, report: &Report) -> Result<(), Error> {
        if report.workflow_run_id != self.run_id {
            return Err(Error::OidcRefused(Refusal::RunId));
        }
        if report.run_attempt != self.run_attempt {
            return Err(Error::OidcRefused(Refusal::RunAttempt));
        }
        Ok(())
    }
}

/// The outcome of checking a token that was not refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Claims are valid; accept the run only if `check` verifies.
    ValidIfSigned(RunIdentity, SignatureCheck),
    /// Claims are valid, but no key held has the token's `kid`.
    UnknownKey,
}

/// Checks a token's form and claims, and picks its key from `jwks`.
///
/// # Errors
/// The first [`Refusal`] in the order of the module docs.
pub fn verify(
    token: &str,
    jwks: Option<&Jwks>,
    expected: &Expected,
    now_secs: i64,
) -> Result<Verdict, Refusal> {
    let (header, p64, signed, signature) = token::compact(token).map_err(|_| Refusal::Malformed)?;
    if header.alg != Alg::Rs256 {
        return Err(Refusal::Alg);
    }
    let claims: Claims = token::decode_json(p64).ok_or(Refusal::Malformed)?;
    let run = check_claims(&claims, expected, now_secs)?;
    match token::find_key(jwks, &header) {
        Ok(Some(jwk)) => token::signature_check(jwk, Alg::Rs256, signed, signature)
            .map(|check| Verdict::ValidIfSigned(run, check))
            .map_err(|_| Refusal::Kid),
        Ok(None) => Ok(Verdict::UnknownKey),
        Err(_) => Err(Refusal::Kid),
    }
}

fn check_claims(c: &Claims, want: &Expected, now: i64) -> Result<RunIdentity, Refusal> {
    if c.iss.as_deref() != Some(want.issuer.as_str()) {
        return Err(Refusal::Iss);
    }
    if !c.aud.as_ref().is_some_and(|a| a.includes(&want.audience)) {
        return Err(Refusal::Aud);
    }
    if c.exp
        .is_none_or(|exp| (exp as i64).saturating_add(LEEWAY_SECONDS) < now)
    {
        return Err(Refusal::Exp);
    }
    if c.nbf
        .is_some_and(|nbf| (nbf as i64).saturating_sub(LEEWAY_SECONDS) > now)
    {
        return Err(Refusal::Nbf);
    }
    if c.iat
        .is_some_and(|iat| iat as i64 > now.saturating_add(MAX_IAT_AHEAD_SECONDS))
    {
        return Err(Refusal::Iat);
    }
    let repository = c.repository.as_deref().unwrap_or_default();
    if !repository.eq_ignore_ascii_case(&want.repository) {
        return Err(Refusal::Repository);
    }
    if c.git_ref.as_deref() != Some(want.git_ref.as_str()) {
        return Err(Refusal::Ref);
    }
    // `{owner}/{repo}/.github/workflows/{file}@{ref}`, taken apart rather
    // than formatted and compared.
    let workflow_ref = c.workflow_ref.as_deref().unwrap_or_default();
    let same_workflow = workflow_ref
        .get(..want.repository.len())
        .filter(|repo| repo.eq_ignore_ascii_case(&want.repository))
        .and_then(|_| workflow_ref[want.repository.len()..].strip_prefix("/.github/workflows/"))
        .and_then(|rest| rest.strip_prefix(want.workflow.as_str()))
        .and_then(|rest| rest.strip_prefix('@'))
        == Some(want.git_ref.as_str());
    if !same_workflow {
        return Err(Refusal::WorkflowRef);
    }
    if !c.event_name.as_deref().is_some_and(|e| EVENTS.contains(&e)) {
        return Err(Refusal::EventName);
    }
    let number = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.starts_with('+'))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let run_id = number(&c.run_id).ok_or(Refusal::RunId)?;
    let run_attempt = number(&c.run_attempt)
        .and_then(|a| u32::try_from(a).ok())
        .ok_or(Refusal::RunAttempt)?;
    Ok(RunIdentity {
        run_id,
        run_attempt,
    })
}

/// The run behind a request's bearer token: verified, the key fetched or
/// refetched as needed.
///
/// # Errors
/// 401 [`Error::MissingToken`] and [`Error::OidcRefused`]; 502
/// [`Error::Upstream`] when the issuer's key set cannot be fetched.
pub async fn run_of(
    host: &impl Host,
    req: &Request,
    expected: &Expected,
) -> Result<RunIdentity, Error> {
    let token = req.bearer_token()?;
    let url = expected.jwks_url();
    let now = host.now_ms();
    let mut jwks = auth::fetched_jwks(&url, now);
    let mut refetched = false;
    loop {
        match verify(token, jwks.as_ref(), expected, now / 1000).map_err(Error::OidcRefused)? {
            Verdict::ValidIfSigned(run, check) => {
                return match host.verify_signature(&check).await {
                    Ok(true) => Ok(run),
                    _ => Err(Error::OidcRefused(Refusal::Signature)),
                }
            }
            Verdict::UnknownKey if !refetched => {
                refetched = true;
                jwks = Some(auth::refetch_jwks(host, &url).await.map_err(|e| match e {
                    Error::InvalidToken(_) => Error::OidcRefused(Refusal::Kid),
                    other => other,
                })?);
            }
            Verdict::UnknownKey => return Err(Error::OidcRefused(Refusal::Kid)),
        }
    }
}

/// The authentication step of `finalize-backup`, as `BACKUP_REPORT_AUTH`
/// asks: the webhook signature, GitHub's token, or both. Returns the run
/// the token names, which the parsed report must then match
/// ([`RunIdentity::binds`]), and the delivery's `webhook-id`.
///
/// # Errors
/// 401 for a missing or refused credential, 400 `invalid_parameter` for a
/// missing `webhook-id` in `oidc` mode (it still names the delivery), 500
/// for a missing setting, 502 when the issuer's keys cannot be fetched.
pub async fn authenticate_report<'r>(
    host: &impl Host,
    req: &'r Request,
) -> Result<(Option<RunIdentity>, &'r str), Error> {
    let mode = config::report_auth(host)?;
    if mode.webhook() {
        config::webhook_secret(host)?.verify_request(req, host.now_ms() / 1000)?;
    }
    // Credentials first: a request without them is a 401 whatever else
    // it lacks.
    let run = match mode {
        ReportAuth::Webhook => None,
        ReportAuth::Oidc | ReportAuth::Both => Some(run_of(host, req, &config::oidc(host)?).await?),
    };
    // verify_request refused a missing or over-long id; without a
    // signature it is still the delivery's name, so still required.
    let webhook_id = req
        .header("webhook-id")
        .filter(|id| !id.is_empty() && id.len() <= 256)
        .ok_or_else(|| Error::parameter("webhook-id", "is required"))?;
    Ok((run, webhook_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    const NOW: i64 = 1_800_000_000;

    pub(crate) fn expected() -> Expected {
        Expected {
            issuer: GITHUB_OIDC_ISSUER.into(),
            audience: "https://ref.supabase.co/functions/v1/finalize-backup".into(),
            repository: "acme/app".into(),
            workflow: "backup.yml".into(),
            git_ref: "refs/heads/main".into(),
        }
    }

    fn jwks() -> Jwks {
        Jwks::parse(
            &json!({"keys": [{"kty": "RSA", "kid": "gh-1", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode([7u8; 256]), "e": "AQAB"}]})
            .to_string(),
        )
        .unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": GITHUB_OIDC_ISSUER,
            "aud": "https://ref.supabase.co/functions/v1/finalize-backup",
            "exp": NOW + 300, "nbf": NOW - 5, "iat": NOW - 5,
            "repository": "acme/app", "ref": "refs/heads/main",
            "workflow_ref": "acme/app/.github/workflows/backup.yml@refs/heads/main",
            "event_name": "workflow_dispatch", "run_id": "4242", "run_attempt": "1",
            "sub": "repo:acme/app:ref:refs/heads/main",
        })
    }

    fn token(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([9u8; 256])
        )
    }

    fn rs(kid: &str) -> Value {
        json!({"alg": "RS256", "kid": kid, "typ": "JWT"})
    }

    #[test]
    fn a_token_of_the_expected_run_needs_only_the_signature_check() {
        let t = token(&rs("gh-1"), &claims());
        let Ok(Verdict::ValidIfSigned(run, check)) = verify(&t, Some(&jwks()), &expected(), NOW)
        else {
            panic!("expected a signature check");
        };
        assert_eq!(
            run,
            RunIdentity {
                run_id: 4242,
                run_attempt: 1
            }
        );
        assert_eq!(check.signed, t.rsplit_once('.').unwrap().0.as_bytes());
        assert_eq!(
            verify(
                &token(&rs("gh-2"), &claims()),
                Some(&jwks()),
                &expected(),
                NOW
            ),
            Ok(Verdict::UnknownKey)
        );
        assert_eq!(
            verify(&token(&rs("gh-1"), &claims()), None, &expected(), NOW),
            Ok(Verdict::UnknownKey)
        );
    }

    #[test]
    fn each_claim_mismatch_is_refused_by_name() {
        let cases: [(&str, Value, Refusal); 14] = [
            ("iss", json!("https://evil.example"), Refusal::Iss),
            (
                "aud",
                json!("https://other.supabase.co/functions/v1/finalize-backup"),
                Refusal::Aud,
            ),
            ("aud", json!(null), Refusal::Aud),
            ("exp", json!(NOW - 31), Refusal::Exp),
            ("exp", json!(null), Refusal::Exp),
            ("nbf", json!(NOW + 31), Refusal::Nbf),
            ("iat", json!(NOW + 61), Refusal::Iat),
            ("repository", json!("evil/app"), Refusal::Repository),
            ("ref", json!("refs/heads/feature"), Refusal::Ref),
            (
                "workflow_ref",
                json!("acme/app/.github/workflows/other.yml@refs/heads/main"),
                Refusal::WorkflowRef,
            ),
            ("event_name", json!("push"), Refusal::EventName),
            ("run_id", json!("x"), Refusal::RunId),
            ("run_attempt", json!("0x1"), Refusal::RunAttempt),
            ("repository", json!(7), Refusal::Malformed),
        ];
        for (claim, value, refusal) in cases {
            let mut c = claims();
            c[claim] = value.clone();
            assert_eq!(
                verify(&token(&rs("gh-1"), &c), Some(&jwks()), &expected(), NOW),
                Err(refusal),
                "{claim} = {value}"
            );
        }
    }

    #[test]
    fn alg_none_and_hs256_confusion_are_refused_before_any_key_is_used() {
        for alg in ["none", "HS256", "ES256", "RS512"] {
            let t = token(&json!({"alg": alg, "kid": "gh-1"}), &claims());
            assert_eq!(
                verify(&t, Some(&jwks()), &expected(), NOW),
                Err(Refusal::Alg),
                "{alg}"
            );
        }
    }

    #[test]
    fn a_report_must_name_the_token_run_and_attempt() {
        let run = RunIdentity {
            run_id: 4242,
            run_attempt: 2,
        };
        let report = |id: u64, attempt: u32| {
            Report::parse(
                json!({"event": "started", "workflow_run_id": id, "run_attempt": attempt})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(run.binds(&report(4242, 2)), Ok(()));
        assert_eq!(
            run.binds(&report(4243, 2)),
            Err(Error::OidcRefused(Refusal::RunId))
        );
        assert_eq!(
            run.binds(&report(4242, 1)),
            Err(Error::OidcRefused(Refusal::RunAttempt))
        );
    }

    #[test]
    fn no_refusal_message_carries_token_content() {
        let secret_ish = "acme-internal-run";
        let mut c = claims();
        c["repository"] = json!(secret_ish);
        let err = Error::OidcRefused(
            verify(&token(&rs("gh-1"), &c), Some(&jwks()), &expected(), NOW).unwrap_err(),
        );
        let r = err.to_response();
        assert_eq!(r.status, 401);
        assert!(!r.body.contains(secret_ish), "{}", r.body);
        assert_eq!(err.code(), "oidc_repository");
    }
}
