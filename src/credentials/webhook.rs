//! Standard Webhooks signatures, as sent by the workflow to finalize-backup.
//!
//! A delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA256>` entries separated by
//! spaces, so a secret can be rotated). The signed content is
//! `"{id}.{timestamp}.{raw body}"`; the key is the base64 part of the secret
//! `whsec_<base64>`. Comparison is constant-time (`Mac::verify_slice`).

use crate::error::Error;
use crate::http::Request;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a delivery's timestamp may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

/// A parsed `whsec_` secret.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `BACKUP_WEBHOOK_SECRET` when the value is
    /// not of that form or decodes to fewer than 16 bytes.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let bad = |m: &str| Error::Config {
            setting: "BACKUP_WEBHOOK_SECRET",
            message: m.to_string(),
        };
        let b64 = value
            .trim()
            .strip_prefix("whsec_")
            .ok_or_else(|| bad("must start with whsec_"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| bad("must be whsec_ followed by base64"))?;
        if key.len() < 16 {
            return Err(bad("must decode to at least 16 bytes"));
        }
        Ok(WebhookSecret(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; new_from_slice cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any size"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for a delivery: what the alert
    /// sender signs with (the workflow signs its reports with openssl).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Verifies a request's `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` headers against its raw body.
    ///
    /// # Errors
    /// As [`WebhookSecret::verify`].
    pub fn verify_request(&self, req: &Request, now_secs: i64) -> Result<(), Error> {
        self.verify(
            req.header("webhook-id"),
            req.header("webhook-timestamp"),
            req.header("webhook-signature"),
            &req.body,
            now_secs,
        )
    }

    /// Verifies a delivery.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] when a header is missing or malformed, the
    /// timestamp is outside [`TOLERANCE_SECONDS`] of `now_secs`, or no `v1`
    /// signature matches.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), Error> {
        let missing = || {
            Error::InvalidSignature(
                "webhook-id, webhook-timestamp and webhook-signature headers are required".into(),
            )
        };
        let id = id
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(missing)?;
        let timestamp = timestamp.ok_or_else(missing)?;
        let signatures = signatures.ok_or_else(missing)?;
        let ts: i64 = timestamp.parse().map_err(|_| {
            Error::InvalidSignature("webhook-timestamp must be unix seconds".into())
        })?;
        if (now_secs - ts).abs() > TOLERANCE_SECONDS {
            return Err(Error::InvalidSignature(
                "webhook-timestamp is outside the allowed tolerance".into(),
            ));
        }
        let mac = self.mac(id, timestamp, body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|tag| mac.clone().verify_slice(&tag).is_ok());
        if matched {
            Ok(())
        } else {
            Err(Error::InvalidSignature(
                "no valid v1 webhook-signature".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn signing_matches_the_specification_example() {
        assert_eq!(secret().sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
    }

    #[test]
    fn verify_accepts_the_specification_example() {
        let ts = SPEC_TS.to_string();
        assert_eq!(
            secret().verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS),
            Ok(())
        );
    }

    #[test]
    fn verify_accepts_any_of_several_signatures() {
        let ts = SPEC_TS.to_string();
        let header = format!("v1,AAAA v2,xyz {SPEC_SIG}");
        assert!(secret()
            .verify(Some(SPEC_ID), Some(&ts), Some(&header), SPEC_BODY, SPEC_TS)
            .is_ok());
    }

    #[test]
    fn verify_rejects_a_tampered_body() {
        let ts = SPEC_TS.to_string();
        let err = secret()
            .verify(
                Some(SPEC_ID),
                Some(&ts),
                Some(SPEC_SIG),
                br#"{"test": 2432232315}"#,
                SPEC_TS,
            )
            .unwrap_err();
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn verify_rejects_a_stale_or_future_timestamp() {
        let ts = SPEC_TS.to_string();
        for now in [SPEC_TS + 301, SPEC_TS - 301] {
            let err = secret()
                .verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIG), SPEC_BODY, now)
                .unwrap_err();
            assert!(err.public_message().contains("tolerance"), "{now}");
        }
        assert!(secret()
            .verify(
                Some(SPEC_ID),
                Some(&ts),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS + 300
            )
            .is_ok());
    }

    #[test]
    fn verify_rejects_missing_headers_and_a_wrong_secret() {
        let ts = SPEC_TS.to_string();
        assert!(secret()
            .verify(None, Some(&ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS)
            .is_err());
        assert!(secret()
            .verify(Some(SPEC_ID), None, Some(SPEC_SIG), SPEC_BODY, SPEC_TS)
            .is_err());
        assert!(secret()
            .verify(Some(SPEC_ID), Some(&ts), None, SPEC_BODY, SPEC_TS)
            .is_err());
        assert!(secret()
            .verify(
                Some(SPEC_ID),
                Some("soon"),
                Some(SPEC_SIG),
                SPEC_BODY,
                SPEC_TS
            )
            .is_err());
        let other = WebhookSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(other
            .verify(Some(SPEC_ID), Some(&ts), Some(SPEC_SIG), SPEC_BODY, SPEC_TS)
            .is_err());
    }

    #[test]
    fn secret_must_be_whsec_base64() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_AAAA").is_err());
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(<redacted>)");
    }
}
