//! The core's [`IngestSink`]: an HTTP ingest request is accepted once Kafka acknowledged
//! every event of it (I1); refused as `PublishError::into_refusal` says (503 when a retry
//! can succeed, 4xx when Kafka refused the events for good), as the QUIC door does.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use weir_http_ingest::{IngestRequest, IngestSink, Refusal};

use crate::cluster::GlobalLog;
use crate::kafka::{PublishError, Publisher};

pub struct KafkaSink {
    pub publisher: Arc<Publisher>,
    /// Only for `/ready`: a node still catching up on Global is not ready.
    pub global: Arc<GlobalLog>,
    pub retry_after: Duration,
}

impl IngestSink for KafkaSink {
    fn ingest(&self, request: IngestRequest) -> BoxFuture<'static, Result<(), Refusal>> {
        let publisher = self.publisher.clone();
        let retry_after = self.retry_after;
        // An unready core acknowledges nothing: its topic may take writes (created by
        // someone else, with fewer replicas) without the durability an ack promises.
        // Ingest depends on the ingest topic alone, not on Global having caught up.
        let ready = self.publisher.not_ready().map_or(Ok(()), Err);
        async move {
            if let Err(reason) = ready {
                return Err(Refusal::unavailable(format!("this core is not ready: {reason}"), retry_after));
            }
            // The core's ack always follows Kafka's, so the client's ack-mode choice
            // (which matters on an edge) changes nothing here.
            publisher.publish(request.batches).await.map(drop).map_err(|error| {
                match &error {
                    PublishError::Unavailable { reason, .. } => tracing::warn!(n_events = request.n_events, %reason, "ingest request not acknowledged by kafka"),
                    PublishError::Refused { code, reason, .. } => tracing::warn!(n_events = request.n_events, %code, %reason, "kafka refused an ingest request for good"),
                    _ => {}
                }
                error.into_refusal(retry_after)
            })
        }
        .boxed()
    }

    fn ready(&self) -> Result<(), String> {
        let reasons: Vec<String> = self.publisher.not_ready().into_iter().chain(self.global.not_ready()).collect();
        if reasons.is_empty() { Ok(()) } else { Err(reasons.join("; ")) }
    }

    fn observe(&self) {
        metrics::gauge!("weir_kafka_topic_ready").set(if self.publisher.topic_ready().is_ok() { 1.0 } else { 0.0 });
    }
}
