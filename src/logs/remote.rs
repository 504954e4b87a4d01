//! What the HTTP backends (Loki, Elasticsearch) share: one exchange with
//! a bounded body, and the mapping of transport failures and statuses to
//! [`LogError`]s.

use std::time::Duration;

use reqwest::StatusCode;

use super::LogError;

/// Largest answer read from a remote backend; a 5000-line page is far below.
const MAX_BODY: usize = 32 << 20;

/// Sends `request` and reads its answer: a success's whole body (at most
/// [`MAX_BODY`]), or as much of a failure's as fits.
pub(super) async fn exchange(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(StatusCode, Vec<u8>), LogError> {
    let mut response = request.send().await.map_err(|e| transport_error(&e, timeout))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e, timeout))? {
        if body.len() + chunk.len() > MAX_BODY {
            if status.is_success() {
                return Err(LogError::Garbage(format!("the answer is larger than {} MiB", MAX_BODY >> 20)));
            }
            // A failure's reason is at its start.
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// A failed exchange in a few words. reqwest's Display names the URL and
/// hides the cause; the innermost cause says what happened, such as
/// "Connection refused (os error 111)".
fn transport_error(error: &reqwest::Error, timeout: Duration) -> LogError {
    if error.is_timeout() {
        return LogError::Timeout(timeout);
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_builder() {
        return LogError::Unavailable(format!("cannot build the request: {cause}"));
    }
    let what = if error.is_connect() { "cannot connect" } else { "request failed" };
    LogError::Unreachable(format!("{what}: {cause}"))
}

/// The first non-blank line of a body, trimmed, at most 300 characters.
pub(super) fn first_line(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(300).collect())
}

/// A failure status other than the backend-specific ones (400, and 404 for
/// Elasticsearch), with the backend's reason when it gave one.
pub(super) fn status_error(status: StatusCode, reason: Option<String>) -> LogError {
    let said = |what: String| match &reason {
        Some(r) => format!("{what}: {r}"),
        None => what,
    };
    match status.as_u16() {
        401 | 403 => LogError::Unauthorized(said(format!("HTTP {}", status.as_u16()))),
        429 => LogError::Unreachable(said("rate limited (HTTP 429)".into())),
        500..=599 => LogError::Unreachable(said(format!("HTTP {}", status.as_u16()))),
        _ => LogError::Garbage(said(format!("unexpected HTTP {}", status.as_u16()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_errors() {
        assert!(matches!(status_error(StatusCode::FORBIDDEN, None), LogError::Unauthorized(_)));
        assert!(
            matches!(status_error(StatusCode::TOO_MANY_REQUESTS, None), LogError::Unreachable(m) if m.contains("rate limited"))
        );
        assert!(
            matches!(status_error(StatusCode::BAD_GATEWAY, Some("x".into())), LogError::Unreachable(m) if m == "HTTP 502: x")
        );
        assert!(matches!(status_error(StatusCode::NOT_FOUND, None), LogError::Garbage(_)));
        assert_eq!(first_line(b"\n  parse error at line 1  \nmore"), Some("parse error at line 1".into()));
    }
}
