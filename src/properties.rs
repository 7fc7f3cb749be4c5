//! Property tests over every parser and verifier that reads what a caller
//! (or GitHub, or a key server) sends: reports, user tokens, GitHub OIDC
//! tokens, JWKs, webhook headers, GitHub's answers, history cursors, and
//! whole requests to each function. Two properties each: no input panics,
//! and every refusal is one of the documented errors of that parser.
//!
//! 10,000 cases per property by default (`cargo test properties`, in CI).
//! `BACKUP_PROPTEST_CASES` raises it; the long run quoted in the README is
//! `BACKUP_PROPTEST_CASES=1000000 cargo test --release properties`.

use crate::credentials::oidc::{self, Expected, Refusal};
use crate::credentials::token::{self, Jwks, Keys};
use crate::credentials::webhook::WebhookSecret;
use crate::error::Error;
use crate::http::Request;
use crate::ports::github::{self, OutboundResponse};
use crate::report::Report;
use crate::testing::kit::{self, block_on};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::Config;

const NOW: i64 = 1_800_000_000;

fn config() -> Config {
    let cases = std::env::var("BACKUP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Config {
        cases,
        // Shrinking a failure is worth the time; persisting it to a file
        // next to the sources is not (the seed is printed).
        failure_persistence: None,
        ..Config::default()
    }
}

/// JSON-ish text: mostly well-formed objects with the members the parsers
/// look for, holding values of every type, sometimes plain noise.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("started"),
            Just("succeeded"),
            Just("failed"),
            Just("RS256"),
            Just("RSA"),
            Just("authenticated"),
            Just("0193a1b2-0000-7000-8000-000000000000"),
            Just("4242"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => prop::collection::btree_map(key(), value, 0..10)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string()),
        1 => ".{0,80}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "event", "dispatch_id", "workflow_run_id", "run_attempt", "s3_key",
            "size_bytes", "sha256", "error_text", "progress", "keys", "kty", "kid",
            "alg", "n", "e", "x", "y", "crv", "k", "iss", "aud", "exp", "nbf", "iat",
            "sub", "role", "repository", "ref", "workflow_ref", "event_name", "run_id",
            "id", "html_url", "status", "conclusion", "workflow_run_id", "run_url",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,12}",
    ]
}

/// A compact JWS from arbitrary JSON parts, or noise with dots in it.
fn jws() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (json_text(), json_text(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(h, p, s)| format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(h),
                URL_SAFE_NO_PAD.encode(p),
                URL_SAFE_NO_PAD.encode(s)
            )
        ),
        1 => "[A-Za-z0-9_.=+/-]{0,120}",
    ]
}

fn rsa_jwks() -> Jwks {
    Jwks::parse(&format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"gh-1","n":"{}","e":"AQAB"}},{{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}}]}}"#,
        URL_SAFE_NO_PAD.encode([7u8; 256])
    ))
    .unwrap()
}

fn expected() -> Expected {
    Expected {
        issuer: oidc::GITHUB_OIDC_ISSUER.into(),
        audience: "https://ref.supabase.co/functions/v1/finalize-backup".into(),
        repository: "acme/app".into(),
        workflow: "backup.yml".into(),
        git_ref: "refs/heads/main".into(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reports_parse_or_are_a_400_naming_the_body_or_a_field(body in prop_oneof![
        json_text().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..200),
    ]) {
        if let Err(e) = Report::parse(&body) {
            prop_assert!(
                matches!(e, Error::InvalidBody(_) | Error::InvalidField { .. }),
                "{e:?}"
            );
            prop_assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn user_tokens_verify_or_are_an_invalid_token_401(token in jws(), now in any::<i64>()) {
        let keys = Keys { hs256_secret: Some(b"secret".to_vec()), jwks: Some(rsa_jwks()) };
        for now in [NOW, now] {
            if let Err(e) = token::verify(&token, &keys, now) {
                prop_assert!(matches!(e, Error::InvalidToken(_)), "{e:?}");
            }
        }
    }

    #[test]
    fn oidc_tokens_verify_or_name_a_refusal(token in jws(), now in any::<i64>()) {
        let jwks = rsa_jwks();
        for now in [NOW, now] {
            let verdict = oidc::verify(&token, Some(&jwks), &expected(), now);
            if let Ok(oidc::Verdict::ValidIfSigned(..)) = verdict {
                // Only an RS256 header can get this far.
                let header = token.split('.').next().unwrap_or_default();
                let header = URL_SAFE_NO_PAD.decode(header).unwrap_or_default();
                prop_assert!(String::from_utf8_lossy(&header).contains("RS256"));
            }
            if let Err(refusal) = verdict {
                let e = Error::OidcRefused(refusal);
                prop_assert_eq!(e.status(), 401);
                prop_assert!(e.code().starts_with("oidc_"));
            }
        }
    }

    #[test]
    fn oidc_claims_near_the_valid_ones_are_accepted_only_when_all_match(
        repository in prop::sample::select(vec!["acme/app", "ACME/App", "evil/app", "acme/app2", ""]),
        git_ref in prop::sample::select(vec!["refs/heads/main", "refs/heads/mainx", "main", ""]),
        file in prop::sample::select(vec!["backup.yml", "backup.yml@x", "backup.yaml", ""]),
        event in prop::sample::select(vec!["workflow_dispatch", "schedule", "push", ""]),
        run_id in prop::sample::select(vec!["4242", "+4242", "-1", "18446744073709551616", "x"]),
        exp in -100i64..100,
    ) {
        let claims = serde_json::json!({
            "iss": oidc::GITHUB_OIDC_ISSUER,
            "aud": "https://ref.supabase.co/functions/v1/finalize-backup",
            "exp": NOW + exp, "repository": repository, "ref": git_ref,
            "workflow_ref": format!("{repository}/.github/workflows/{file}@{git_ref}"),
            "event_name": event, "run_id": run_id, "run_attempt": "1",
        });
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"gh-1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([1u8; 256])
        );
        let all_match = repository.eq_ignore_ascii_case("acme/app")
            && git_ref == "refs/heads/main"
            && file == "backup.yml"
            && event != "push" && !event.is_empty()
            && run_id == "4242"
            && exp >= -30;
        let verdict = oidc::verify(&token, Some(&rsa_jwks()), &expected(), NOW);
        prop_assert_eq!(verdict.is_ok(), all_match, "{:?}", verdict);
        if exp < -30 {
            prop_assert_eq!(verdict.unwrap_err(), Refusal::Exp);
        }
    }

    #[test]
    fn key_sets_parse_or_are_a_config_error_naming_supabase_jwks(text in json_text()) {
        match Jwks::parse(&text) {
            Ok(jwks) => {
                // Whatever was read, using it for a token never panics.
                let keys = Keys { hs256_secret: None, jwks: Some(jwks) };
                let _ = token::verify("eyJhbGciOiJSUzI1NiJ9.e30.AA", &keys, NOW);
            }
            Err(e) => prop_assert!(
                matches!(e, Error::Config { setting: "SUPABASE_JWKS", .. }),
                "{e:?}"
            ),
        }
    }

    #[test]
    fn webhook_headers_verify_or_are_an_invalid_signature_401(
        id in prop::option::of(".{0,300}"),
        ts in prop::option::of(prop_oneof![".{0,20}", (NOW - 400..NOW + 400).prop_map(|t| t.to_string())]),
        sig in prop::option::of("(v1,[A-Za-z0-9+/=]{0,60} ?){0,3}"),
        body in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let secret = WebhookSecret::parse(kit::WHSEC).unwrap();
        if let Err(e) = secret.verify(id.as_deref(), ts.as_deref(), sig.as_deref(), &body, NOW) {
            prop_assert!(matches!(e, Error::InvalidSignature(_)), "{e:?}");
        }
    }

    #[test]
    fn webhook_secrets_parse_or_name_backup_webhook_secret(value in ".{0,80}") {
        if let Err(e) = WebhookSecret::parse(&value) {
            let named = matches!(e, Error::Config { setting: "BACKUP_WEBHOOK_SECRET", .. });
            prop_assert!(named, "{:?}", e);
        }
    }

    #[test]
    fn github_answers_are_read_without_panicking(
        status in prop_oneof![Just(200u16), Just(204), Just(403), Just(404), Just(429), Just(500), 100u16..600],
        body in json_text(),
        retry_after in prop::option::of(".{0,12}"),
        reset in prop::option::of(".{0,12}"),
    ) {
        let mut headers = Vec::new();
        if let Some(v) = retry_after { headers.push(("retry-after".to_string(), v)); }
        if let Some(v) = reset { headers.push(("x-ratelimit-reset".to_string(), v)); }
        let response = OutboundResponse { status, headers, body: body.clone() };
        let _ = github::read_dispatch_response(&response);
        let _ = github::read_workflow_run(&body);
        let _ = github::retry_wait_ms(&response);
        let _ = github::rate_limited_until(&response, NOW * 1000);
        let _ = github::describe(&response);
    }

    #[test]
    fn history_cursors_and_queries_parse_or_are_a_400_naming_the_parameter(
        query in prop_oneof![
            "(before=[A-Za-z0-9_.%~-]{0,40}&?)?(limit=[0-9a-z-]{0,6}&?)?(dispatch_id=[0-9a-f-]{0,40})?",
            ".{0,60}",
        ],
    ) {
        let req = Request::new("GET", &format!("http://x/functions/v1/backup-status?{query}"), vec![], vec![]);
        if let Err(e) = crate::endpoints::status::parse_query(&req) {
            prop_assert!(matches!(e, Error::InvalidParameter { .. }), "{e:?}");
            prop_assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn whole_requests_are_answered_with_a_documented_status_and_error_shape(
        function in prop::sample::select(vec![
            "trigger-backup", "finalize-backup", "backup-status", "reconcile-backups", "nope",
        ]),
        method in prop::sample::select(vec!["POST", "GET", "OPTIONS", "post", "PUT", ""]),
        headers in prop::collection::vec((
            prop::sample::select(vec![
                "authorization", "content-type", "webhook-id", "webhook-timestamp",
                "webhook-signature", "origin", "apikey", "if-none-match",
            ]),
            ".{0,60}",
        ), 0..6),
        body in prop_oneof![json_text().prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..64)],
        mode in prop::sample::select(vec!["webhook", "oidc", "both"]),
    ) {
        let mut host = kit::host();
        host.env.insert("BACKUP_REPORT_AUTH".into(), mode.into());
        host.env.insert("SUPABASE_URL".into(), "https://ref.supabase.co".into());
        let store = kit::store();
        let req = Request::new(
            method,
            &format!("http://x/functions/v1/{function}?limit=1"),
            headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            body,
        );
        let r = block_on(crate::app::handle(&host, &store, function, &req));
        prop_assert!(
            [200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415, 500, 502, 503]
                .contains(&r.status),
            "{} {}", r.status, r.body
        );
        if r.status >= 400 {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            prop_assert!(body["error"]["code"].is_string(), "{}", r.body);
            prop_assert!(body["error"]["message"].is_string(), "{}", r.body);
        }
        // A server error here is only ever a missing setting or GitHub
        // being unreachable (the fake host answers no fetch), never a bug.
        if r.status == 500 {
            prop_assert!(r.body.contains("config_missing"), "{}", r.body);
        }
    }
}
