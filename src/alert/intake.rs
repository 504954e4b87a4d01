//! `POST /hooks/{alertmanager,grafana,generic}`: size-check, authenticate,
//! parse, store, then answer. Every refusal is a 4xx with the reason in a
//! JSON body and one log line; a 200 means the alerts are durable. A 500
//! (the store failed) makes Alertmanager and Grafana retry.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::Alerts;
use super::config::HookAuth;
use super::model::Ingest;
use super::source::{self, SourceKind};
use crate::metrics as m;

pub fn routes(alerts: Arc<Alerts>) -> Router {
    // Each source's own limit is checked in the handler; this is the ceiling.
    let ceiling = alerts.config.sources.values().map(|s| s.max_body_bytes).max().unwrap_or(0);
    Router::new().route("/hooks/{source}", post(receive)).layer(DefaultBodyLimit::max(ceiling)).with_state(alerts)
}

fn refuse(status: StatusCode, source: &str, reason: &str) -> Response {
    tracing::warn!(status = status.as_u16(), source, reason, "alert webhook refused");
    metrics::counter!(m::ALERTS_REJECTED, "source" => source.to_owned(), "status" => status.as_str().to_owned())
        .increment(1);
    (status, axum::Json(json!({"error": reason}))).into_response()
}

async fn receive(
    State(alerts): State<Arc<Alerts>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = match name.as_str() {
        "alertmanager" => SourceKind::Alertmanager,
        "grafana" => SourceKind::Grafana,
        "generic" => SourceKind::Generic,
        _ => return refuse(StatusCode::NOT_FOUND, "-", "unknown alert source (alertmanager, grafana, generic)"),
    };
    let Some(config) = alerts.config.sources.get(&kind) else {
        return refuse(StatusCode::NOT_FOUND, &name, "this source is not enabled in [alerts.sources]");
    };
    if body.len() > config.max_body_bytes {
        let reason = format!("body of {} bytes is over this source's limit of {}", body.len(), config.max_body_bytes);
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, &name, &reason);
    }
    if let Err(reason) = authenticate(&config.auth, &headers, &body) {
        return refuse(StatusCode::UNAUTHORIZED, &name, reason);
    }
    let batch = match source::parse(kind, &body) {
        Ok(batch) => batch,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &name, &e.to_string()),
    };
    let ingest = Ingest::new(batch, &config.group_by);
    let n_alerts = ingest.alert_count();
    match alerts.ingest(ingest).await {
        Ok(groups) => {
            metrics::counter!(m::ALERTS_IN, "source" => name.clone()).increment(n_alerts as u64);
            tracing::debug!(source = name, alerts = n_alerts, changed = groups.len(), "alerts stored");
            (StatusCode::OK, axum::Json(json!({"status": "ok", "alerts": n_alerts, "groups_changed": groups.len()})))
                .into_response()
        }
        Err(e) => {
            tracing::error!(source = name, error = %e, "storing alerts failed");
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "could not store the alerts; retry"})))
                .into_response()
        }
    }
}

/// Checks the request against the source's auth; the reason never echoes a secret.
fn authenticate(auth: &HookAuth, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    match auth {
        HookAuth::None => Ok(()),
        HookAuth::Bearer(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes())) {
                Ok(())
            } else {
                Err("missing or wrong bearer token")
            }
        }
        HookAuth::Hmac { secret, header } => {
            let given = headers.get(header.as_str()).and_then(|v| v.to_str().ok()).ok_or("missing signature header")?;
            let hex = given.trim().strip_prefix("sha256=").unwrap_or(given.trim());
            let given = decode_hex(hex).ok_or("signature is not hex")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
            mac.update(body);
            // verify_slice compares in constant time.
            mac.verify_slice(&given).map_err(|_| "wrong signature")
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_hmac_are_checked() {
        let bearer = HookAuth::Bearer("s3cret".into());
        assert!(authenticate(&bearer, &headers(&[("authorization", "Bearer s3cret")]), b"{}").is_ok());
        assert_eq!(
            authenticate(&bearer, &headers(&[("authorization", "Bearer nope")]), b"{}"),
            Err("missing or wrong bearer token")
        );
        assert!(authenticate(&bearer, &headers(&[]), b"{}").is_err());

        let hmac = HookAuth::Hmac { secret: "key".into(), header: "x-sig".into() };
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"body");
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(authenticate(&hmac, &headers(&[("x-sig", &sig)]), b"body").is_ok());
        assert!(authenticate(&hmac, &headers(&[("x-sig", &format!("sha256={sig}"))]), b"body").is_ok());
        assert_eq!(authenticate(&hmac, &headers(&[("x-sig", &sig)]), b"other"), Err("wrong signature"));
        assert_eq!(authenticate(&hmac, &headers(&[("x-sig", "zz")]), b"body"), Err("signature is not hex"));
        assert_eq!(authenticate(&hmac, &headers(&[]), b"body"), Err("missing signature header"));
    }
}
