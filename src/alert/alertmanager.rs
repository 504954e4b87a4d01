//! The Prometheus Alertmanager API v2 client (`api/v2/openapi.yaml` in
//! prometheus/alertmanager): create a silence, expire it. It knows the HTTP
//! API and how Alertmanager words its refusals; it knows nothing about chats,
//! cards or who may silence what. Retrying is the caller's job; this client
//! only classifies: [`AlertmanagerError::Rejected`] carries Alertmanager's own
//! words for the card, [`AlertmanagerError::Unavailable`] means try later.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest Alertmanager message kept for a card; its refusals are one short sentence.
const MAX_MESSAGE_CHARS: usize = 200;

/// One Alertmanager. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    http: reqwest::Client,
    /// Where the API lives below: `/api/v2/…` is appended to its path.
    base: Url,
    timeout: Duration,
}

/// A silence to create. Each matcher is `name = value`, exact equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSilence {
    pub matchers: Vec<(String, String)>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertmanagerError {
    /// Alertmanager answered and refused (4xx): the message is Alertmanager's own text, to be shown on the card.
    /// Also 0.25's 500 "silence not found"; not 408 and 429, which a proxy in front sends and which pass.
    #[error("Alertmanager refused: {message}")]
    Rejected { status: u16, message: String },
    /// Could not reach it, timed out, 5xx, or an unreadable answer: worth retrying later.
    #[error("Alertmanager unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be made at all (base URL, bearer token or a timestamp out of range):
    /// a configuration mistake or a bug, so retrying will not help.
    #[error("{0}")]
    Invalid(String),
}

/// `postableSilence` in the OpenAPI spec; timestamps are RFC 3339.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence<'a> {
    matchers: Vec<Matcher<'a>>,
    starts_at: String,
    ends_at: String,
    created_by: &'a str,
    comment: &'a str,
}

/// `matcher` in the OpenAPI spec.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Matcher<'a> {
    name: &'a str,
    value: &'a str,
    is_regex: bool,
    is_equal: bool,
}

/// The answer to `POST /api/v2/silences`.
#[derive(Debug, Deserialize)]
struct Created {
    #[serde(rename = "silenceID")]
    silence_id: String,
}

impl Alertmanager {
    /// `base_url` like `http://127.0.0.1:9093`; a path prefix such as
    /// `http://proxy/alertmanager` works too. The timeout bounds each whole call.
    pub fn new(base_url: &str, bearer_token: Option<String>, timeout: Duration) -> Result<Self, AlertmanagerError> {
        let base = parse_base(base_url)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = bearer_token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                AlertmanagerError::Invalid("the Alertmanager bearer token is not a valid HTTP header value".into())
            })?;
            // Sensitive values print as `Sensitive` in Debug output, so the token cannot leak into logs.
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("opsclaw/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with rustls");
        Ok(Self { http, base, timeout })
    }

    /// `POST /api/v2/silences`; returns the new silence's id.
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<String, AlertmanagerError> {
        let body = PostableSilence::new(silence)?;
        let answer = self.send(self.http.post(self.endpoint(&["silences"])).json(&body)).await?;
        let created: Created = serde_json::from_str(&answer)
            .map_err(|e| AlertmanagerError::Unavailable(format!("unreadable answer to a new silence: {e}")))?;
        Ok(created.silence_id)
    }

    /// `DELETE /api/v2/silence/{id}`. Alertmanager answers 200 for a silence
    /// that has already expired, so expiring twice succeeds twice.
    pub async fn expire_silence(&self, id: &str) -> Result<(), AlertmanagerError> {
        self.send(self.http.delete(self.endpoint(&["silence", id]))).await.map(drop)
    }

    /// The URL of an API v2 path below the base; each segment is percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("parse_base accepts only URLs with a path")
            .pop_if_empty()
            .extend(["api", "v2"])
            .extend(segments);
        url
    }

    /// Sends one request; returns the body of a 2xx answer and classifies everything else.
    async fn send(&self, request: RequestBuilder) -> Result<String, AlertmanagerError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| self.transport_error(&e))?;
        classify(status, &body)?;
        Ok(body)
    }

    /// A transport failure in a few words. reqwest's own Display names the URL
    /// and hides the cause; the innermost cause says what happened, such as
    /// "Connection refused (os error 111)".
    fn transport_error(&self, error: &reqwest::Error) -> AlertmanagerError {
        if error.is_timeout() {
            return AlertmanagerError::Unavailable(format!("no answer within {:?}", self.timeout));
        }
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let what = if error.is_connect() { "cannot connect" } else { "request failed" };
        AlertmanagerError::Unavailable(format!("{what}: {cause}"))
    }
}

impl<'a> PostableSilence<'a> {
    fn new(silence: &'a NewSilence) -> Result<Self, AlertmanagerError> {
        let matchers = silence
            .matchers
            .iter()
            .map(|(name, value)| Matcher { name, value, is_regex: false, is_equal: true })
            .collect();
        Ok(Self {
            matchers,
            starts_at: rfc3339(silence.starts_at_ms)?,
            ends_at: rfc3339(silence.ends_at_ms)?,
            created_by: &silence.created_by,
            comment: &silence.comment,
        })
    }
}

/// Accepts an absolute http(s) URL without query or fragment, which would end up after the API path.
fn parse_base(raw: &str) -> Result<Url, AlertmanagerError> {
    // The URL itself stays out of these messages: it may carry credentials.
    let invalid = |why: String| AlertmanagerError::Invalid(format!("invalid Alertmanager URL: {why}"));
    let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid(format!("expected http:// or https://, not {}:", url.scheme())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a query or fragment has no place in a base URL".into()));
    }
    Ok(url)
}

fn rfc3339(ms: i64) -> Result<String, AlertmanagerError> {
    let at = jiff::Timestamp::from_millisecond(ms)
        .map_err(|_| AlertmanagerError::Invalid(format!("silence time {ms} ms is out of range")))?;
    // Display is RFC 3339 in UTC (`2026-11-22T08:55:09.903Z`), which Alertmanager's Go side parses.
    Ok(at.to_string())
}

/// What a non-2xx answer means.
fn classify(status: StatusCode, body: &str) -> Result<(), AlertmanagerError> {
    if status.is_success() {
        return Ok(());
    }
    let message = message(body);
    match status {
        // Alertmanager 0.25 answers an unknown silence id with 500 "silence not found"
        // (0.26 made it a 404); retrying will not make the silence appear.
        StatusCode::INTERNAL_SERVER_ERROR if message.as_deref() == Some("silence not found") => {
            Err(AlertmanagerError::Rejected { status: status.as_u16(), message: "silence not found".into() })
        }
        // A proxy in front timing out or rate limiting: these pass with time.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Err(unavailable(status, message)),
        _ if status.is_client_error() => Err(AlertmanagerError::Rejected {
            status: status.as_u16(),
            message: message.unwrap_or_else(|| status.to_string()),
        }),
        _ => Err(unavailable(status, message)),
    }
}

fn unavailable(status: StatusCode, message: Option<String>) -> AlertmanagerError {
    match message {
        Some(message) => AlertmanagerError::Unavailable(format!("answered {status}: {message}")),
        None => AlertmanagerError::Unavailable(format!("answered {status}")),
    }
}

/// Alertmanager's own words in an error body, if it said anything usable. Its
/// handlers answer a JSON string ("Failed to create silence: start time must be
/// before end time"); its go-swagger layer answers `{"code": 612, "message":
/// "matchers in body should have at least 1 items"}` for a body that breaks the
/// schema; its router answers plain text ("404 page not found").
fn message(body: &str) -> Option<String> {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(Value::String(text)) => text,
        Ok(other) => other.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        Err(_) => body.lines().next().unwrap_or_default().to_owned(),
    };
    let text = text.trim();
    // An HTML error page from a proxy says nothing a card can use.
    if text.is_empty() || text.starts_with('<') {
        return None;
    }
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return Some(text.to_owned());
    }
    Some(text.chars().take(MAX_MESSAGE_CHARS - 1).chain(['…']).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn client(base: &str) -> Alertmanager {
        Alertmanager::new(base, None, Duration::from_secs(1)).expect("a valid base URL")
    }

    #[test]
    fn endpoints_join_below_the_base_path() {
        let check = |base: &str, segments: &[&str], expected: &str| {
            assert_eq!(client(base).endpoint(segments).as_str(), expected, "{base} + {segments:?}");
        };
        check("http://127.0.0.1:9093", &["silences"], "http://127.0.0.1:9093/api/v2/silences");
        check("http://127.0.0.1:9093/", &["silences"], "http://127.0.0.1:9093/api/v2/silences");
        check("https://ops.example/alertmanager", &["silences"], "https://ops.example/alertmanager/api/v2/silences");
        check(
            "https://ops.example/alertmanager/",
            &["silence", "5e1"],
            "https://ops.example/alertmanager/api/v2/silence/5e1",
        );
        check("http://am:9093", &["silence", "../x y"], "http://am:9093/api/v2/silence/..%2Fx%20y");
    }

    #[test]
    fn bad_base_urls_are_refused_without_echoing_them() {
        let check = |base: &str| match Alertmanager::new(base, None, Duration::from_secs(1)) {
            Err(AlertmanagerError::Invalid(message)) => assert!(!message.contains("secret"), "{message}"),
            other => panic!("{base}: {other:?}"),
        };
        check("127.0.0.1:9093");
        check("am.example:9093");
        check("ftp://user:secret@am.example/");
        check("http://user:secret@am.example/?x=1");
        check("http://am.example/#top");
    }

    #[test]
    fn the_bearer_token_is_checked_and_kept_out_of_debug_output() {
        let am = Alertmanager::new("http://am:9093", Some("s3cr3t-token".into()), Duration::from_secs(1)).unwrap();
        assert!(!format!("{am:?}").contains("s3cr3t-token"));
        let err = Alertmanager::new("http://am:9093", Some("line\nbreak".into()), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(&err, AlertmanagerError::Invalid(m) if !m.contains("line")), "{err:?}");
    }

    #[test]
    fn silences_are_sent_as_exact_matchers_with_rfc3339_times() {
        let silence = NewSilence {
            matchers: vec![("alertname".into(), "DiskFull".into()), ("instance".into(), "db1:9100".into())],
            starts_at_ms: 1_795_337_709_903,
            ends_at_ms: 1_795_341_300_000,
            created_by: "alice".into(),
            comment: "disk swap in progress".into(),
        };
        let body = serde_json::to_value(PostableSilence::new(&silence).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "matchers": [
                    {"name": "alertname", "value": "DiskFull", "isRegex": false, "isEqual": true},
                    {"name": "instance", "value": "db1:9100", "isRegex": false, "isEqual": true},
                ],
                "startsAt": "2026-11-22T08:55:09.903Z",
                "endsAt": "2026-11-22T09:55:00Z",
                "createdBy": "alice",
                "comment": "disk swap in progress",
            })
        );
        let far = NewSilence { ends_at_ms: i64::MAX, ..silence };
        assert!(matches!(PostableSilence::new(&far), Err(AlertmanagerError::Invalid(_))));
    }

    #[test]
    fn answers_are_classified_with_alertmanagers_own_words() {
        let rejected = |status: u16, message: &str| AlertmanagerError::Rejected { status, message: message.into() };
        let unavailable = |message: &str| AlertmanagerError::Unavailable(message.into());
        let check = |status: u16, body: &str, expected: Result<(), AlertmanagerError>| {
            assert_eq!(classify(StatusCode::from_u16(status).unwrap(), body), expected, "{status} {body:?}");
        };
        check(200, "", Ok(()));
        check(
            400,
            r#""Failed to create silence: start time must be before end time""#,
            Err(rejected(400, "Failed to create silence: start time must be before end time")),
        );
        check(
            422,
            r#"{"code":612,"message":"matchers in body should have at least 1 items"}"#,
            Err(rejected(422, "matchers in body should have at least 1 items")),
        );
        check(404, "404 page not found\n", Err(rejected(404, "404 page not found")));
        check(404, "", Err(rejected(404, "404 Not Found")));
        check(500, r#""silence not found""#, Err(rejected(500, "silence not found")));
        check(500, r#""snapshot failed""#, Err(unavailable("answered 500 Internal Server Error: snapshot failed")));
        check(502, "<html><body>Bad Gateway</body></html>", Err(unavailable("answered 502 Bad Gateway")));
        check(429, "slow down", Err(unavailable("answered 429 Too Many Requests: slow down")));
    }

    #[test]
    fn long_messages_are_cut_for_the_card() {
        let long = format!("\"{}\"", "x".repeat(500));
        let message = message(&long).unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(message.ends_with('…'));
    }
}
