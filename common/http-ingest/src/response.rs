//! Response bodies: LogScale endpoints answer `{"error", "hint"}`; HEC endpoints answer the
//! shape HEC shippers parse (`{"text", "code"}`), with the same hint beside it.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::FormatError;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    LogScale,
    Hec,
}

pub(crate) fn success(flavor: Flavor) -> Response {
    match flavor {
        Flavor::LogScale => Json(json!({"status": "ok"})).into_response(),
        Flavor::Hec => Json(json!({"text": "Success", "code": 0})).into_response(),
    }
}

pub(crate) fn error(
    flavor: Flavor,
    status: StatusCode,
    message: &str,
    hint: &str,
    hec_code: u16,
    retry_after: Option<Duration>,
) -> Response {
    error_with_event(flavor, status, message, hint, hec_code, None, retry_after)
}

pub(crate) fn error_with_event(
    flavor: Flavor,
    status: StatusCode,
    message: &str,
    hint: &str,
    hec_code: u16,
    invalid_event: Option<usize>,
    retry_after: Option<Duration>,
) -> Response {
    let mut body = match flavor {
        Flavor::LogScale => json!({"error": message, "hint": hint}),
        Flavor::Hec => json!({"text": message, "code": hec_code, "hint": hint}),
    };
    if let Some(index) = invalid_event {
        body["invalid-event-number"] = json!(index);
    }
    let mut response = (status, Json(body)).into_response();
    if let Some(after) = retry_after {
        let seconds = after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

pub(crate) fn format_error(flavor: Flavor, e: &FormatError) -> Response {
    error_with_event(
        flavor,
        StatusCode::BAD_REQUEST,
        &e.message,
        "fix the request body; nothing of this request was ingested",
        e.hec_code,
        e.invalid_event,
        None,
    )
}
