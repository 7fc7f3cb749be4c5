//! Requests and responses as plain data.
//!
//! The host hands the core a [`Request`] (method, URL, lower-cased headers,
//! raw body bytes) and turns the returned [`Response`] into a real one with a
//! single small helper. Nothing here knows about wasm-bindgen, so every flow
//! can be tested natively.

use crate::error::Error;
use serde::Serialize;

/// Bodies larger than this are refused with 413 before anything is parsed.
/// The host reads at most `MAX_BODY_BYTES + 1` bytes, so an oversized body
/// is detected without buffering it whole.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the headers as the host hands them over: one string in which every
/// name and every value is followed by a NUL (`name\0value\0…`).
///
/// One string crosses the boundary, not two per header read from an object
/// of pairs by serde-wasm-bindgen (five calls into JS and two string copies
/// per header). A report's path through host and core took 33.4 and 34.2
/// against 35.1 and 34.7 µs in process, two runs (bench/README.md, "Why one
/// client is at the 0.9× line"), and a function's module no longer carries
/// a deserializer for the request: 0.6 to 1 KB less gzipped. NUL cannot
/// occur in a header name or value (RFC 9110 §5.5; the fetch standard's
/// `Headers` refuses it), so the split is exact. `None` when the fields do
/// not pair up, which only a host bug can cause.
pub fn host_headers(joined: &str) -> Option<Vec<(String, String)>> {
    let mut fields = joined.split_terminator('\0');
    let mut headers = Vec::new();
    while let Some(name) = fields.next() {
        let value = fields.next()?;
        headers.push((name.to_string(), value.to_string()));
    }
    Some(headers)
}

/// An incoming request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query, e.g. `/functions/v1/trigger-backup`.
    pub path: String,
    /// Raw query string without the `?`.
    pub query: String,
    /// Header names lower-cased; values as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Where `needle` first occurs in `text`, by a plain byte scan: `str::find`
/// with a string pattern sets up a substring searcher on every call (about
/// a microsecond), and the searches here run on every request or report,
/// over short texts.
pub fn find(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    text.as_bytes()
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

impl Request {
    /// Builds a request from a full URL (`https://host/path?query`).
    pub fn new(method: &str, url: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        let after_scheme = find(url, "://").map_or(url, |i| &url[i + 3..]);
        let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Request {
            // As sent: methods are case-sensitive (RFC 9110 §9.1), so
            // `post` is not POST and gets a 405.
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: headers
                .into_iter()
                .map(|(mut k, v)| {
                    k.make_ascii_lowercase();
                    (k, v)
                })
                .collect(),
            body,
        }
    }

    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// Names of all query parameters, to reject unknown ones.
    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
    }

    /// The bearer token of the `Authorization` header.
    ///
    /// # Errors
    /// [`Error::MissingToken`] when there is no `Authorization: Bearer` header.
    pub fn bearer_token(&self) -> Result<&str, Error> {
        let value = self.header("authorization").ok_or(Error::MissingToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Error::MissingToken)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::MissingToken);
        }
        Ok(token)
    }

    /// Refuses bodies over [`MAX_BODY_BYTES`].
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`].
    pub fn check_size(&self) -> Result<(), Error> {
        if self.body.len() > MAX_BODY_BYTES {
            return Err(Error::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Ok(())
    }

    /// Refuses bodies that are not declared as JSON.
    ///
    /// # Errors
    /// [`Error::UnsupportedMediaType`].
    pub fn require_json(&self) -> Result<(), Error> {
        let media = self
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"))
        {
            Ok(())
        } else {
            Err(Error::UnsupportedMediaType)
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    // Not UTF-8: an empty value, which every parameter then rejects.
    String::from_utf8(out).unwrap_or_default()
}

/// An outgoing response: status, headers and a text body. The host receives
/// it as `{status, headers: [[name, value]], body}` and builds a `Response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A JSON response of any serializable body (a typed answer struct).
    pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Self {
        match serde_json::to_string(body) {
            Ok(text) => Response::json_text(status, text),
            // Only a map with non-string keys can fail, which no answer has.
            Err(_) => Response::json_text(
                500,
                r#"{"error":{"code":"internal","message":"internal error"}}"#.into(),
            ),
        }
    }

    /// A JSON response from an already serialized body.
    pub fn json_text(status: u16, body: String) -> Self {
        Response {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        }
    }

    /// A response without a body (204, 304).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The first value of a header (tests and the host use it).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Cross-origin rules for the browser-facing endpoints.
///
/// Only origins listed in `ALLOWED_ORIGINS` (comma-separated, or `*`) get CORS
/// headers; everyone else gets none, so a browser refuses to expose the answer.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// Parses `ALLOWED_ORIGINS`.
    pub fn from_setting(value: Option<&str>) -> Self {
        let origins = value
            .unwrap_or("")
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        Cors { origins }
    }

    /// The `Access-Control-Allow-Origin` value for a request origin, if allowed.
    pub fn allow(&self, origin: Option<&str>) -> Option<String> {
        let origin = origin?;
        if self.origins.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        let origin = origin.trim_end_matches('/');
        self.origins
            .iter()
            .any(|o| o == origin)
            .then(|| origin.to_string())
    }

    /// Answers a preflight (`OPTIONS`) request.
    ///
    /// # Errors
    /// [`Error::OriginNotAllowed`] for an origin not in the list.
    pub fn preflight(&self, req: &Request, methods: &str) -> Result<Response, Error> {
        let origin = self
            .allow(req.header("origin"))
            .ok_or(Error::OriginNotAllowed)?;
        Ok(Response::empty(204)
            .with_header("access-control-allow-origin", origin)
            .with_header("access-control-allow-methods", methods)
            .with_header(
                "access-control-allow-headers",
                "authorization, apikey, content-type, x-client-info, if-none-match",
            )
            .with_header("access-control-max-age", "600")
            .with_header("vary", "Origin"))
    }

    /// Adds CORS headers to an actual response when the origin is allowed.
    pub fn decorate(&self, req: &Request, mut response: Response) -> Response {
        if let Some(origin) = self.allow(req.header("origin")) {
            response
                .headers
                .push(("access-control-allow-origin".into(), origin));
            response
                .headers
                .push(("access-control-expose-headers".into(), "etag".into()));
            response.headers.push(("vary".into(), "Origin".into()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request::new(
            "post",
            "http://x/functions/v1/a?b=1&c=%2Fd+e",
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Vec::new(),
        )
    }

    #[test]
    fn url_is_split_into_path_and_query() {
        let r = req(&[]);
        assert_eq!(r.method, "post", "kept as sent: methods are case-sensitive");
        assert_eq!(r.path, "/functions/v1/a");
        assert_eq!(r.query_param("b").as_deref(), Some("1"));
        assert_eq!(r.query_param("c").as_deref(), Some("/d e"));
        assert_eq!(r.query_param("z"), None);
    }

    #[test]
    fn find_gives_the_first_occurrence_as_a_byte_offset() {
        assert_eq!(find("a://b://c", "://"), Some(1));
        assert_eq!(find("é http://x", "http://"), Some(3), "bytes, not chars");
        assert_eq!(find("http:/", "http://"), None, "longer than the text");
        assert_eq!(find("abc", ""), Some(0));
    }

    #[test]
    fn host_headers_pair_up_nul_terminated_fields_and_refuse_a_name_without_value() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            host_headers("content-type\0application/json\0webhook-id\0msg_1\0"),
            Some(pairs(&[
                ("content-type", "application/json"),
                ("webhook-id", "msg_1")
            ]))
        );
        assert_eq!(
            host_headers("x-empty\0\0accept\0*/*\0"),
            Some(pairs(&[("x-empty", ""), ("accept", "*/*")])),
            "an empty value is a field of its own"
        );
        assert_eq!(host_headers(""), Some(Vec::new()));
        assert_eq!(host_headers("accept\0*/*\0orphan\0"), None);
    }

    #[test]
    fn the_path_starts_after_the_scheme_and_host_and_a_path_alone_is_kept() {
        let at = |url: &str| {
            let r = Request::new("GET", url, Vec::new(), Vec::new());
            (r.path, r.query)
        };
        let pair = |p: &str, q: &str| (p.to_string(), q.to_string());
        assert_eq!(at("https://h.test:8443/a/b?x=1"), pair("/a/b", "x=1"));
        assert_eq!(at("http://h.test"), pair("/", ""));
        assert_eq!(
            at("https://h.test/r?to=https://y.test/z"),
            pair("/r", "to=https://y.test/z")
        );
        assert_eq!(at("/a:b?c=d"), pair("/a:b", "c=d"));
        assert_eq!(at("h.test/p"), pair("/p", ""));
    }

    #[test]
    fn bearer_token_requires_the_bearer_scheme() {
        assert_eq!(
            req(&[("Authorization", "Bearer abc")]).bearer_token(),
            Ok("abc")
        );
        assert_eq!(
            req(&[("authorization", "bearer  abc ")]).bearer_token(),
            Ok("abc")
        );
        assert_eq!(
            req(&[("authorization", "Basic abc")]).bearer_token(),
            Err(Error::MissingToken)
        );
        assert_eq!(
            req(&[("authorization", "Bearer ")]).bearer_token(),
            Err(Error::MissingToken)
        );
        assert_eq!(req(&[]).bearer_token(), Err(Error::MissingToken));
    }

    #[test]
    fn json_media_type_is_required() {
        assert!(req(&[("content-type", "application/json; charset=utf-8")])
            .require_json()
            .is_ok());
        assert_eq!(
            req(&[("content-type", "text/plain")]).require_json(),
            Err(Error::UnsupportedMediaType)
        );
        assert_eq!(req(&[]).require_json(), Err(Error::UnsupportedMediaType));
    }

    #[test]
    fn oversized_body_is_refused() {
        let mut r = req(&[]);
        r.body = vec![b' '; MAX_BODY_BYTES];
        assert!(r.check_size().is_ok());
        r.body.push(b' ');
        assert_eq!(
            r.check_size(),
            Err(Error::PayloadTooLarge {
                limit: MAX_BODY_BYTES
            })
        );
    }

    #[test]
    fn cors_allows_only_listed_origins() {
        let cors = Cors::from_setting(Some("https://app.example.com, http://localhost:3000/"));
        assert_eq!(
            cors.allow(Some("http://localhost:3000")).as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(cors.allow(Some("https://evil.example.com")), None);
        assert_eq!(cors.allow(None), None);
        let preflight = cors
            .preflight(
                &req(&[("origin", "https://app.example.com")]),
                "POST, OPTIONS",
            )
            .unwrap();
        assert_eq!(preflight.status, 204);
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            cors.preflight(&req(&[("origin", "https://evil.example.com")]), "POST")
                .unwrap_err(),
            Error::OriginNotAllowed
        );
    }
}
