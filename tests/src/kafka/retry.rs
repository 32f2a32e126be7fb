//! Kafka's transient answers, asked again. A loaded two-core machine makes a broker slow to
//! answer (a CI run once saw a watermark query time out for 30 s), a leader election
//! answers "no leader yet", and a topic being created answers "unknown topic": none of
//! these says anything about the code under test. So every harness call to Kafka metadata,
//! watermarks or the admin API goes through [`retry_transient`] (or its async twin), which
//! asks again until one overall deadline: a loaded machine gives a slow test, not a failed
//! one. A permanent answer (a replication factor the cluster cannot meet, a refused login)
//! fails at once, named.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long, in all, the harness waits for Kafka to answer a metadata, watermark or admin
/// question. A loaded two-core CI machine has stalled a broker's answer for over 10 s, and
/// a request stuck on a connection is only abandoned after the harness clients'
/// `socket.timeout.ms` ([`super::client_config`]).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of one attempt: short, so a request the broker dropped is asked again, but long
/// enough for a slow answer to arrive.
const ATTEMPT_MIN: Duration = Duration::from_millis(500);
const ATTEMPT_MAX: Duration = Duration::from_secs(5);
/// Between attempts.
const PAUSE: Duration = Duration::from_millis(200);

/// Is `code` an answer that asking again can change: a timeout, a broker not reachable
/// yet, a leader moving or not elected yet, or a topic not yet known to every broker?
pub fn is_transient_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        OperationTimedOut
            | RequestTimedOut
            | TimedOutQueue
            | BrokerTransportFailure
            | AllBrokersDown
            | BrokerNotAvailable
            | NetworkException
            | Resolve
            | Retry
            | RebootstrapRequired
            | NotLeaderForPartition
            | LeaderNotAvailable
            | PreferredLeaderNotAvailable
            | EligibleLeadersNotAvailable
            | ReplicaNotAvailable
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | KafkaStorageError
            | NotController
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | WaitingForCoordinator
            | ThrottlingQuotaExceeded
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition
    )
}

/// Is `error` transient (see [`is_transient_code`])? Errors without a Kafka code (a client
/// that cannot be created, a bad config) are not.
pub fn is_transient(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    code.is_some_and(is_transient_code)
}

/// An error that may be transient: Kafka's own, or one of Weir's that carries Kafka's.
pub trait Transient: fmt::Display + fmt::Debug {
    fn is_transient(&self) -> bool;
}

impl Transient for KafkaError {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

/// Why a Kafka question got no answer.
#[derive(Debug)]
pub enum KafkaFailure<E = KafkaError> {
    /// An answer that asking again cannot change.
    Permanent { what: String, error: E },
    /// Only transient answers until the deadline.
    TimedOut { what: String, attempts: u32, waited: Duration, last: E },
}

impl<E> KafkaFailure<E> {
    /// The last error Kafka answered.
    pub fn error(&self) -> &E {
        match self {
            KafkaFailure::Permanent { error, .. } => error,
            KafkaFailure::TimedOut { last, .. } => last,
        }
    }
}

impl<E: fmt::Display> fmt::Display for KafkaFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaFailure::Permanent { what, error } => write!(f, "{what}: {error}"),
            KafkaFailure::TimedOut { what, attempts, waited, last } => {
                write!(f, "{what}: only transient errors for {waited:?} ({attempts} attempts), the last: {last}")
            }
        }
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for KafkaFailure<E> {}

/// The bookkeeping both faces of the retry share: attempts, the deadline, and what a failed
/// attempt means.
struct Attempts<'a> {
    what: &'a str,
    started: Instant,
    deadline: Instant,
    attempts: u32,
}

impl<'a> Attempts<'a> {
    fn new(what: &'a str, deadline: Instant) -> Attempts<'a> {
        Attempts { what, started: Instant::now(), deadline, attempts: 0 }
    }

    /// The timeout of the next attempt.
    fn next(&mut self) -> Duration {
        self.attempts += 1;
        self.deadline.saturating_duration_since(Instant::now()).clamp(ATTEMPT_MIN, ATTEMPT_MAX)
    }

    fn succeeded(&self) {
        if self.attempts > 1 {
            tracing::info!(what = self.what, attempts = self.attempts, took = ?self.started.elapsed(), "kafka answered after transient errors");
        }
    }

    /// After a failed attempt: how long to pause before the next one, or the failure.
    fn failed<E: Transient>(&self, error: E) -> Result<Duration, KafkaFailure<E>> {
        if !error.is_transient() {
            return Err(KafkaFailure::Permanent { what: self.what.to_owned(), error });
        }
        if Instant::now() + PAUSE >= self.deadline {
            return Err(KafkaFailure::TimedOut {
                what: self.what.to_owned(),
                attempts: self.attempts,
                waited: self.started.elapsed(),
                last: error,
            });
        }
        tracing::debug!(what = self.what, error = %error, attempt = self.attempts, "transient kafka error, asking again");
        Ok(PAUSE)
    }
}

/// Runs `attempt(timeout of this attempt)` until it succeeds, a permanent error comes, or
/// `deadline` passes with only transient errors; blocks the thread between attempts.
/// `what` names the question in the failure ("high watermark of topic/0 from host:port").
pub fn retry_transient<T, E: Transient>(what: &str, deadline: Instant, mut attempt: impl FnMut(Duration) -> Result<T, E>) -> Result<T, KafkaFailure<E>> {
    let mut attempts = Attempts::new(what, deadline);
    loop {
        match attempt(attempts.next()) {
            Ok(value) => {
                attempts.succeeded();
                return Ok(value);
            }
            Err(error) => std::thread::sleep(attempts.failed(error)?),
        }
    }
}

/// [`retry_transient`] for the async admin API: pauses on the runtime's timer.
pub async fn retry_transient_async<T, E: Transient, Fut>(what: &str, deadline: Instant, mut attempt: impl FnMut(Duration) -> Fut) -> Result<T, KafkaFailure<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = Attempts::new(what, deadline);
    loop {
        match attempt(attempts.next()).await {
            Ok(value) => {
                attempts.succeeded();
                return Ok(value);
            }
            Err(error) => tokio::time::sleep(attempts.failed(error)?).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed_out() -> KafkaError {
        KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut)
    }

    #[test]
    fn transient_errors_are_asked_again_until_an_answer() {
        let mut calls = 0;
        let answer = retry_transient("a question", Instant::now() + Duration::from_secs(10), |_| {
            calls += 1;
            if calls < 3 { Err(timed_out()) } else { Ok(calls) }
        });
        assert_eq!(answer.unwrap(), 3);
    }

    #[test]
    fn a_permanent_error_fails_at_once_and_is_named() {
        let mut calls = 0;
        let failure = retry_transient("create topic t", Instant::now() + Duration::from_secs(10), |_| {
            calls += 1;
            Err::<(), _>(KafkaError::AdminOp(RDKafkaErrorCode::InvalidReplicationFactor))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(failure, KafkaFailure::Permanent { .. }), "{failure:?}");
        let text = failure.to_string();
        assert!(text.starts_with("create topic t: ") && text.contains("replication factor"), "{text}");
    }

    #[test]
    fn only_transient_errors_until_the_deadline_fail_with_the_last() {
        let started = Instant::now();
        let failure = retry_transient("high watermark of t/0", started + Duration::from_millis(700), |_| Err::<(), _>(timed_out())).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "stops at the deadline: {:?}", started.elapsed());
        let KafkaFailure::TimedOut { attempts, .. } = &failure else { panic!("{failure:?}") };
        assert!(*attempts >= 2, "{failure}");
        assert!(failure.to_string().contains("OperationTimedOut"), "{failure}");
    }

    #[test]
    fn the_codes_seen_under_load_and_during_elections_are_transient() {
        for code in [
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert!(is_transient(&KafkaError::MetadataFetch(code)), "{code:?}");
            assert!(is_transient(&KafkaError::AdminOp(code)), "admin {code:?}");
        }
        for code in [RDKafkaErrorCode::TopicAlreadyExists, RDKafkaErrorCode::SaslAuthenticationFailed, RDKafkaErrorCode::InvalidConfig] {
            assert!(!is_transient(&KafkaError::AdminOp(code)), "{code:?}");
        }
        assert!(!is_transient(&KafkaError::ClientCreation("bad".into())));
    }
}
