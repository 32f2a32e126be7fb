//! Why a node did not take events, in the one vocabulary every door answers in: HTTP
//! statuses (LogScale, OTLP, Elasticsearch), Splunk HEC codes, and the QUIC wire's
//! [`ErrorCode`]. A refusal is made once, where its cause is known (a full spool, Kafka
//! refusing a record, a body over the limit), and each door renders it with
//! [`Refusal::http_status`], [`Refusal::hec_code`] or [`Refusal::wire_code`]; no door maps
//! causes to answers by hand.

use std::borrow::Cow;
use std::time::Duration;

use crate::wire::ErrorCode;

/// What kind of refusal: decides the answer on every door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No credentials, or not in a form this node reads: 401.
    Unauthenticated,
    /// The credentials are not valid here, or this node may not store events (its Kafka
    /// credentials or ACLs): 403.
    Forbidden,
    /// The request can never be accepted as it is: 400.
    BadRequest,
    /// Over a size limit of this node or of Kafka: 413.
    TooLarge,
    /// The body did not arrive in time: 408.
    Timeout,
    /// A content type or encoding this node cannot read: 415.
    UnsupportedMedia,
    /// The node pushes back (spool full, too many requests, memory budget): 429.
    Overloaded,
    /// Temporarily unable to make events durable (Kafka did not acknowledge, the node is
    /// not ready): 503. Nothing was reported as accepted; a retry is safe.
    Unavailable,
    /// A wire protocol version this node does not speak.
    UnsupportedVersion,
    /// An unexpected failure: 500.
    Internal,
}

/// A refusal: its kind, a message that says what failed, and what the client can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    /// What to do, when the cause knows better than the kind's default ([`Refusal::hint`]).
    pub hint: Option<Cow<'static, str>>,
    /// When to retry (`Retry-After`), for the kinds worth retrying.
    pub retry_after: Option<Duration>,
    /// Splunk HEC's code, when more specific than the kind's (5 no data, 12 event field
    /// required, ...).
    pub hec: Option<u16>,
    /// The 0-based index of the first event that made the request unacceptable.
    pub invalid_event: Option<usize>,
}

impl Refusal {
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal { kind, message: message.into(), hint: None, retry_after: None, hec: None, invalid_event: None }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Refusal {
        Refusal::new(RefusalKind::Unavailable, message).with_retry_after(retry_after)
    }

    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Refusal {
        Refusal::new(RefusalKind::Overloaded, message).with_retry_after(retry_after)
    }

    pub fn too_large(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::TooLarge, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Internal, message)
    }

    /// What a wire answer from a core means to whoever waits on it.
    pub fn from_wire(code: ErrorCode, message: impl Into<String>) -> Refusal {
        let kind = match code {
            ErrorCode::Unavailable => RefusalKind::Unavailable,
            ErrorCode::BadRequest => RefusalKind::BadRequest,
            ErrorCode::TooLarge => RefusalKind::TooLarge,
            ErrorCode::UnsupportedVersion => RefusalKind::UnsupportedVersion,
            ErrorCode::Forbidden => RefusalKind::Forbidden,
            ErrorCode::Internal | ErrorCode::Unknown => RefusalKind::Internal,
        };
        Refusal::new(kind, message)
    }

    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Refusal {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, retry_after: Duration) -> Refusal {
        self.retry_after = Some(retry_after);
        self
    }

    pub fn with_hec_code(mut self, code: u16) -> Refusal {
        self.hec = Some(code);
        self
    }

    pub fn with_invalid_event(mut self, index: usize) -> Refusal {
        self.invalid_event = Some(index);
        self
    }

    /// The HTTP status every HTTP door answers with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            RefusalKind::Unauthenticated => 401,
            RefusalKind::Forbidden => 403,
            RefusalKind::BadRequest | RefusalKind::UnsupportedVersion => 400,
            RefusalKind::TooLarge => 413,
            RefusalKind::Timeout => 408,
            RefusalKind::UnsupportedMedia => 415,
            RefusalKind::Overloaded => 429,
            RefusalKind::Unavailable => 503,
            RefusalKind::Internal => 500,
        }
    }

    /// Splunk HEC's numeric code (2 token required, 4 invalid token, 6 invalid data,
    /// 8 internal error, 9 server busy), unless the cause set a more specific one.
    pub fn hec_code(&self) -> u16 {
        self.hec.unwrap_or(match self.kind {
            RefusalKind::Unauthenticated => 2,
            RefusalKind::Forbidden => 4,
            RefusalKind::BadRequest
            | RefusalKind::TooLarge
            | RefusalKind::Timeout
            | RefusalKind::UnsupportedMedia
            | RefusalKind::UnsupportedVersion => 6,
            RefusalKind::Overloaded | RefusalKind::Unavailable => 9,
            RefusalKind::Internal => 8,
        })
    }

    /// The QUIC answer to an edge; the edge resends on `Unavailable`/`Internal`, tries
    /// another core on `Forbidden`/`UnsupportedVersion`, and dead-letters the rest.
    pub fn wire_code(&self) -> ErrorCode {
        match self.kind {
            RefusalKind::Unavailable | RefusalKind::Overloaded | RefusalKind::Timeout => ErrorCode::Unavailable,
            RefusalKind::BadRequest | RefusalKind::Unauthenticated | RefusalKind::UnsupportedMedia => ErrorCode::BadRequest,
            RefusalKind::TooLarge => ErrorCode::TooLarge,
            RefusalKind::Forbidden => ErrorCode::Forbidden,
            RefusalKind::UnsupportedVersion => ErrorCode::UnsupportedVersion,
            RefusalKind::Internal => ErrorCode::Internal,
        }
    }

    /// Whether the same request sent again may succeed with nothing changed.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, RefusalKind::Unavailable | RefusalKind::Overloaded | RefusalKind::Timeout | RefusalKind::Internal)
    }

    /// What the client can do: the cause's hint, else the kind's.
    pub fn hint(&self) -> &str {
        if let Some(hint) = &self.hint {
            return hint;
        }
        match self.kind {
            RefusalKind::Unauthenticated => "send `Authorization: Bearer <ingest token>`",
            RefusalKind::Forbidden => {
                "nothing of this request was acknowledged: this node is not allowed to store events; ask its operator to check its Kafka credentials and ACLs"
            }
            RefusalKind::BadRequest => "nothing of this request was acknowledged and a retry would fail the same way: fix the events",
            RefusalKind::TooLarge => "nothing of this request was acknowledged: split the events over several smaller requests",
            RefusalKind::Timeout => "nothing of this request was ingested: send the body at once, or smaller requests",
            RefusalKind::UnsupportedMedia => "nothing of this request was ingested: send it in an encoding this node reads",
            RefusalKind::Overloaded => "nothing of this request was acknowledged: slow down and retry after Retry-After seconds",
            RefusalKind::Unavailable => "nothing of this request was acknowledged: retry it after Retry-After seconds",
            RefusalKind::UnsupportedVersion => "upgrade the edge or the core so that both speak the same protocol version",
            RefusalKind::Internal => "nothing of this request was acknowledged: retry, and report this if it persists",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_answers_alike_on_every_door() {
        // (kind, HTTP, HEC, wire, retryable)
        let table = [
            (RefusalKind::Unauthenticated, 401, 2, ErrorCode::BadRequest, false),
            (RefusalKind::Forbidden, 403, 4, ErrorCode::Forbidden, false),
            (RefusalKind::BadRequest, 400, 6, ErrorCode::BadRequest, false),
            (RefusalKind::TooLarge, 413, 6, ErrorCode::TooLarge, false),
            (RefusalKind::Timeout, 408, 6, ErrorCode::Unavailable, true),
            (RefusalKind::UnsupportedMedia, 415, 6, ErrorCode::BadRequest, false),
            (RefusalKind::Overloaded, 429, 9, ErrorCode::Unavailable, true),
            (RefusalKind::Unavailable, 503, 9, ErrorCode::Unavailable, true),
            (RefusalKind::UnsupportedVersion, 400, 6, ErrorCode::UnsupportedVersion, false),
            (RefusalKind::Internal, 500, 8, ErrorCode::Internal, true),
        ];
        for (kind, http, hec, wire, retryable) in table {
            let refusal = Refusal::new(kind, "m");
            assert_eq!((refusal.http_status(), refusal.hec_code(), refusal.wire_code(), refusal.retryable()), (http, hec, wire, retryable), "{kind:?}");
            assert_eq!(refusal.wire_code().is_retryable() || matches!(kind, RefusalKind::Timeout | RefusalKind::Overloaded), retryable, "{kind:?}");
            assert!(!refusal.hint().is_empty());
        }
        assert_eq!(Refusal::bad_request("m").with_hec_code(12).hec_code(), 12);
        assert_eq!(Refusal::too_large("m").with_hint("split it").hint(), "split it");
    }

    #[test]
    fn a_wire_answer_keeps_its_meaning() {
        for code in [ErrorCode::Unavailable, ErrorCode::BadRequest, ErrorCode::TooLarge, ErrorCode::UnsupportedVersion, ErrorCode::Forbidden, ErrorCode::Internal] {
            assert_eq!(Refusal::from_wire(code, "m").wire_code(), code);
        }
        assert_eq!(Refusal::from_wire(ErrorCode::Unknown, "m").kind, RefusalKind::Internal);
    }
}
