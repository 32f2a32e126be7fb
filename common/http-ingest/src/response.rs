//! Response bodies: LogScale endpoints answer `{"error", "hint"}`; HEC endpoints answer the
//! shape HEC shippers parse (`{"text", "code"}`), with the same hint beside it; OTLP answers
//! a `google.rpc.Status` in the request's encoding; the Elasticsearch bulk API answers
//! `{"error": {"type", "reason"}, "status"}` with `X-Elastic-Product` (its clients refuse an
//! answer without it).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use weir_proto::Refusal;

use crate::otlp;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    LogScale,
    Hec,
    Otlp(otlp::Encoding),
    Elastic,
}

/// Header Elasticsearch clients (8.x) check on every answer before they trust it.
pub(crate) const ELASTIC_PRODUCT: (&str, &str) = ("x-elastic-product", "Elasticsearch");

pub(crate) fn success(flavor: Flavor) -> Response {
    match flavor {
        Flavor::LogScale => Json(json!({"status": "ok"})).into_response(),
        Flavor::Hec => Json(json!({"text": "Success", "code": 0})).into_response(),
        Flavor::Otlp(encoding) => {
            ([(header::CONTENT_TYPE, encoding.content_type())], otlp::success_body(encoding)).into_response()
        }
        Flavor::Elastic => ([ELASTIC_PRODUCT], Json(json!({"acknowledged": true}))).into_response(),
    }
}

/// A refusal in the flavor's error shape, with its HTTP status, HEC code and Retry-After.
pub(crate) fn refusal(flavor: Flavor, refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, hint, hec_code, invalid_event, retry_after) =
        (refusal.message.as_str(), refusal.hint(), refusal.hec_code(), refusal.invalid_event, refusal.retry_after);
    let mut response = match flavor {
        Flavor::LogScale | Flavor::Hec => {
            let mut body = match flavor {
                Flavor::Hec => json!({"text": message, "code": hec_code, "hint": hint}),
                _ => json!({"error": message, "hint": hint}),
            };
            if let Some(index) = invalid_event {
                body["invalid-event-number"] = json!(index);
            }
            (status, Json(body)).into_response()
        }
        Flavor::Otlp(encoding) => {
            let body = otlp::status_body(encoding, status, message, hint);
            (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Flavor::Elastic => {
            let kind = match status.as_u16() {
                401 | 403 => "security_exception",
                413 => "content_too_long_exception",
                429 => "es_rejected_execution_exception",
                503 => "unavailable_shards_exception",
                400 => "parse_exception",
                _ => "exception",
            };
            let reason = format!("{message}; {hint}");
            let body = json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status.as_u16()});
            (status, [ELASTIC_PRODUCT], Json(body)).into_response()
        }
    };
    if let Some(after) = retry_after {
        let seconds = after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
