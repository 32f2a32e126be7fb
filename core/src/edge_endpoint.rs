//! The QUIC endpoint edges forward to (see `weir_proto::wire` for the frames).
//!
//! Each bidirectional stream carries one batch; the answer is an ack only after Kafka
//! acknowledged every event of it, else a typed error the edge can act on. Edges are
//! authenticated by their client certificate during the handshake (I8); a peer without
//! one never gets a stream.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_proto::wire::{self, ErrorCode, PROTOCOL_VERSION, Response};

use crate::config::QuicConfig;
use crate::kafka::{PublishError, Publisher};

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
        loop {
            let stream = tokio::select! {
                stream = connection.accept_bi() => stream,
                _ = shutdown.cancelled() => break,
            };
            match stream {
                Ok((send, recv)) => {
                    let this = self.clone();
                    streams.spawn(async move { this.serve_stream(send, recv).await });
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

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let response = match recv.read_to_end(self.config.max_frame_bytes).await {
            Ok(frame) => self.handle_frame(&frame).await,
            Err(quinn::ReadToEndError::TooLong) => error(
                ErrorCode::TooLarge,
                format!("batch frame exceeds {} bytes: lower the edge's batch size", self.config.max_frame_bytes),
            ),
            Err(error) => {
                tracing::debug!(%error, "edge stream ended before its frame");
                return;
            }
        };
        let bytes = serde_json::to_vec(&response).expect("response serialises");
        if let Err(error) = send.write_all(&bytes).await {
            tracing::debug!(%error, "could not answer edge");
            return;
        }
        let _ = send.finish();
        // Wait until the edge read the answer, so it is not cut off by a close.
        let _ = send.stopped().await;
    }

    async fn handle_frame(&self, frame: &[u8]) -> Response {
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
        let batches = match wire::decode_payload(payload, self.config.max_batch_bytes) {
            Ok(batches) => batches,
            Err(e @ wire::WireError::Decompress { .. }) => return error(ErrorCode::TooLarge, e.to_string()),
            Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
        };
        let n_events: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        if n_events != header.n_events {
            return error(
                ErrorCode::BadRequest,
                format!("header announces {} events but the payload holds {n_events}", header.n_events),
            );
        }
        match self.publisher.publish(batches, Some(&header.batch_id)).await {
            Ok(_) => Response::Ack { batch_id: header.batch_id, n_events },
            Err(PublishError::Unavailable(reason)) => {
                tracing::warn!(batch_id = %header.batch_id, %reason, "forwarded batch not acknowledged by kafka");
                error(ErrorCode::Unavailable, format!("kafka did not acknowledge the batch: {reason}"))
            }
            Err(other) => error(ErrorCode::Internal, other.to_string()),
        }
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}
