//! The QUIC endpoint edges forward to (see `weir_proto::wire` for the frames).
//!
//! Each bidirectional stream carries one batch; the answer is an ack only after Kafka
//! acknowledged every event of it, else a typed error the edge can act on. Edges are
//! authenticated by their client certificate during the handshake (I8); a peer without
//! one never gets a stream.
//!
//! Order: an edge opens its streams in spool order and keeps several in flight. Their
//! frames arrive and decode concurrently, but each stream hands its records to the
//! producer only after the stream opened before it on the same connection did (or gave
//! up), so one source's batches land in Kafka in the order the edge spooled them. Only the
//! hand-over is serialised; waiting for Kafka's acks overlaps.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_proto::wire::{self, ErrorCode, PROTOCOL_VERSION, Response};

use crate::config::QuicConfig;
use crate::kafka::{PublishError, Publisher, Record};

pub struct EdgeEndpoint {
    pub endpoint: quinn::Endpoint,
    pub publisher: Arc<Publisher>,
    pub config: QuicConfig,
}

impl EdgeEndpoint {
    pub async fn serve(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let this = Arc::new(self);
        loop {
            let incoming = tokio::select! {
                incoming = this.endpoint.accept() => incoming,
                _ = shutdown.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            let this = this.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => this.serve_connection(connection, shutdown).await,
                    // Includes edges without a valid client certificate.
                    Err(error) => tracing::warn!(%remote, %error, "edge connection refused"),
                }
            });
        }
        this.endpoint.close(0u32.into(), b"core shutting down");
        tasks.close();
        tasks.wait().await;
    }

    async fn serve_connection(self: Arc<Self>, connection: quinn::Connection, shutdown: CancellationToken) {
        let remote = connection.remote_address();
        tracing::info!(%remote, "edge connected");
        let streams = TaskTracker::new();
        // The previous stream's turn: fires (or is dropped) once it enqueued its records.
        let mut previous: Option<oneshot::Receiver<()>> = None;
        loop {
            let stream = tokio::select! {
                stream = connection.accept_bi() => stream,
                _ = shutdown.cancelled() => break,
            };
            match stream {
                Ok((send, recv)) => {
                    let this = self.clone();
                    let (done, next) = oneshot::channel();
                    let turn = Turn { previous: previous.replace(next), done: Some(done) };
                    streams.spawn(async move { this.serve_stream(send, recv, turn).await });
                }
                Err(error) => {
                    tracing::info!(%remote, %error, "edge connection closed");
                    break;
                }
            }
        }
        // Let batches in flight finish publishing and answering before the connection goes.
        streams.close();
        streams.wait().await;
    }

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream, turn: Turn) {
        let frame = recv.read_to_end(self.config.max_frame_bytes).await;
        let response = match frame {
            Ok(frame) => self.handle_frame(&frame, turn).await,
            Err(quinn::ReadToEndError::TooLong) => {
                drop(turn);
                error(
                    ErrorCode::TooLarge,
                    format!("batch frame exceeds {} bytes: lower the edge's batch size", self.config.max_frame_bytes),
                )
            }
            Err(error) => {
                tracing::debug!(%error, "edge stream ended before its frame");
                return;
            }
        };
        let result = match &response {
            Response::Ack { .. } => "acked",
            Response::Error { code, .. } if code.is_retryable() => "unavailable",
            Response::Error { .. } => "refused",
        };
        metrics::counter!("weir_edge_batches_total", "result" => result).increment(1);
        let bytes = serde_json::to_vec(&response).expect("response serialises");
        if let Err(error) = send.write_all(&bytes).await {
            tracing::debug!(%error, "could not answer edge");
            return;
        }
        let _ = send.finish();
        // Wait until the edge read the answer, so it is not cut off by a close.
        let _ = send.stopped().await;
    }

    /// `turn` is released (dropped) on every early return, so a refused batch never holds
    /// up the streams after it.
    async fn handle_frame(&self, frame: &[u8], mut turn: Turn) -> Response {
        let (header, payload) = match wire::decode_request(frame) {
            Ok(decoded) => decoded,
            Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
        };
        if header.version != PROTOCOL_VERSION {
            return error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {} is not supported (this core speaks {PROTOCOL_VERSION}): upgrade the edge or core", header.version),
            );
        }
        let json = match wire::decompress_payload(payload, self.config.max_batch_bytes) {
            Ok(json) => json,
            Err(e) => return error(ErrorCode::TooLarge, e.to_string()),
        };
        let (records, n_events) = match self.records(bytes::Bytes::from(json)) {
            Ok(decoded) => decoded,
            Err(response) => return response,
        };
        if n_events != header.n_events {
            return error(
                ErrorCode::BadRequest,
                format!("header announces {} events but the payload holds {n_events}", header.n_events),
            );
        }
        turn.wait().await;
        let delivery = self.publisher.enqueue(records, Some(&header.batch_id)).await;
        turn.pass();
        match delivery.acknowledged().await {
            Ok(_) => Response::Ack { batch_id: header.batch_id, n_events },
            Err(PublishError::Unavailable(reason)) => {
                tracing::warn!(batch_id = %header.batch_id, %reason, "forwarded batch not acknowledged by kafka");
                error(ErrorCode::Unavailable, format!("kafka did not acknowledge the batch: {reason}"))
            }
            Err(other) => error(ErrorCode::Internal, other.to_string()),
        }
    }
}

impl EdgeEndpoint {
    /// The Kafka records of a decompressed payload and its event count. A batch that fits
    /// one record is published as the edge encoded it; only an oversized one is decoded
    /// and split.
    fn records(&self, json: bytes::Bytes) -> Result<(Vec<Record>, u64), Response> {
        let batches = wire::split_payload(&json).map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let mut records = Vec::with_capacity(batches.len());
        let mut n_events = 0;
        for batch in batches {
            n_events += batch.n_events;
            if batch.json.len() <= self.publisher.max_record_bytes() {
                records.push(Record { key: batch.source_key(), payload: json.slice_ref(batch.json.as_bytes()) });
            } else {
                let decoded = serde_json::from_str(batch.json).map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
                self.publisher.encode(decoded, &mut records).map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
            }
        }
        Ok((records, n_events))
    }
}

/// A stream's place in its connection's order of hand-over to the producer.
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until the stream before this one enqueued its records or gave up.
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
    }

    /// Lets the next stream enqueue. Dropping the turn does the same.
    fn pass(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}
