//! Edge connections (see `weir_proto::wire` for the frames), once `accept::quic` verified
//! the edge's certificate and chose this handler by ALPN.
//!
//! Each bidirectional stream carries one batch; the answer is an ack only after Kafka
//! acknowledged every event of it, else a typed error the edge can act on. Edges are
//! authenticated by their client certificate during the handshake (I8); a peer without
//! one never gets a stream, and a batch id naming another edge than the certificate is
//! refused. A frame's header is read and checked before its payload, so an oversized
//! frame is refused unread.
//!
//! Order: an edge opens its streams in spool order and keeps several in flight. Their
//! frames arrive and decode concurrently, but each stream hands its records to the
//! producer only after the stream opened before it on the same connection did (or gave
//! up), so one source's batches land in Kafka in the order the edge spooled them. Only the
//! hand-over is serialised; waiting for Kafka's acks overlaps. A stream cut off inside
//! its frame stops every stream behind it from publishing and closes the connection, so
//! the first copy of each batch in Kafka stays in spool order across failures too. A
//! batch refused for a reason a retry can get past (this core's memory budget, the core
//! not ready) before it reached the producer does the same to the streams behind it, and
//! the core then closes the connection once they are answered: the edge resends from its
//! oldest unacknowledged batch, in order, instead of retrying that one batch after the
//! ones behind it were published. A batch refused for good (dead-lettered by the edge)
//! lets the streams behind it go once the stream before it went.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_http_ingest::{BudgetShare, MemoryBudget};
use weir_proto::wire::{self, BatchId, ErrorCode, PROTOCOL_VERSION, RequestHeader, Response};

use crate::config::QuicConfig;
use crate::kafka::{BatchPart, PublishError, Publisher, Record};

/// What every edge connection of this core shares.
pub struct EdgeConnections {
    pub publisher: Arc<Publisher>,
    pub config: QuicConfig,
    /// Shared with the HTTP API: frames take their bytes before they are read.
    pub budget: MemoryBudget,
}

impl EdgeConnections {
    /// Serves one edge's connection (its certificate verified by the handshake) until it
    /// closes, or `shutdown` and its batches in flight are answered.
    pub async fn serve_connection(self: Arc<Self>, connection: quinn::Connection, certificate: CertificateDer<'static>, shutdown: CancellationToken) {
        let remote = connection.remote_address();
        tracing::info!(%remote, "edge connected");
        let certificate = Arc::new(certificate);
        let streams = TaskTracker::new();
        // The previous stream's turn: fires (or is dropped) once it enqueued its records.
        let mut previous: Option<oneshot::Receiver<TurnSignal>> = None;
        let mut draining: Option<tokio::time::Instant> = None;
        // Cancelled by a stream refused (retryably) before it published: the connection
        // then drains and closes so that the edge resends in order.
        let resend = CancellationToken::new();
        loop {
            let stream = match draining {
                None => tokio::select! {
                    stream = connection.accept_bi() => stream,
                    // Shutdown, or a batch to resend in order: no credit for new streams;
                    // the ones the edge already opened are still accepted and answered
                    // below (after a resend request, refused: they come after it).
                    _ = async { tokio::select! { _ = shutdown.cancelled() => {}, _ = resend.cancelled() => {} } } => {
                        connection.set_max_concurrent_bi_streams(0u32.into());
                        draining = Some(tokio::time::Instant::now() + Duration::from_millis(self.config.drain_timeout_ms));
                        continue;
                    }
                },
                Some(deadline) => {
                    // Streams opened before the credit was withdrawn arrive quickly; once
                    // none came for a moment and every accepted one is answered, done.
                    let quiet = tokio::time::sleep(Duration::from_millis(200));
                    tokio::select! {
                        stream = connection.accept_bi() => stream,
                        _ = quiet, if streams.is_empty() => break,
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            };
            match stream {
                Ok((send, recv)) => {
                    let this = self.clone();
                    let (done, next) = oneshot::channel();
                    let turn = Turn { previous: previous.replace(next), done: Some(done) };
                    let (connection, certificate, resend) = (connection.clone(), certificate.clone(), resend.clone());
                    streams.spawn(async move { this.serve_stream(send, recv, turn, &connection, &certificate, &resend).await });
                }
                Err(error) => {
                    tracing::info!(%remote, %error, "edge connection closed");
                    break;
                }
            }
        }
        // Let batches in flight finish publishing and answering before the connection goes.
        let answered = streams.len();
        streams.close();
        streams.wait().await;
        if resend.is_cancelled() {
            tracing::info!(%remote, in_flight_at_drain_end = answered, "edge connection closed so that the edge resends in order after a batch it must retry");
            connection.close(CLOSE_RESEND_IN_ORDER.into(), b"a batch on this connection was not published: reconnect and resend from the oldest unacknowledged one");
        } else if draining.is_some() {
            tracing::info!(%remote, in_flight_at_drain_end = answered, "edge connection drained; closing it");
            connection.close(0u32.into(), b"core shutting down");
        }
    }

    async fn serve_stream(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        mut turn: Turn,
        connection: &quinn::Connection,
        certificate: &CertificateDer<'static>,
        resend: &CancellationToken,
    ) {
        let response = match self.read_frame(&mut recv).await {
            Ok((header, frame)) => self.handle_frame(header, frame, turn, certificate, resend).await,
            Err(FrameError::Refused(response)) => {
                // Answered without reading the rest: tell the edge to stop sending it.
                let _ = recv.stop(0u32.into());
                refused_before_publishing(turn, resend, response).await
            }
            Err(FrameError::Cut(error)) => {
                // The streams behind this one must not publish: their batches would land in
                // Kafka before this one's first copy. Closing the connection makes the edge
                // resend everything unacknowledged, in order, on a new one.
                tracing::info!(remote = %connection.remote_address(), %error, "edge stream cut off before its frame ended; closing the connection");
                turn.cut();
                connection.close(CLOSE_CUT_FRAME.into(), b"a batch frame was cut off; reconnect and resend in order");
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

    /// Reads one request frame. The header comes first and is checked before the payload
    /// is read, so a frame over the limit or of another version is refused unread.
    async fn read_frame(&self, recv: &mut quinn::RecvStream) -> Result<(RequestHeader, Frame), FrameError> {
        let mut prefix = [0u8; 4];
        read_exact(recv, &mut prefix).await?;
        let header_len = wire::header_len(prefix).map_err(|e| FrameError::refused(ErrorCode::BadRequest, e.to_string()))?;
        let mut header = vec![0u8; header_len];
        read_exact(recv, &mut header).await?;
        let header = wire::decode_header(&header).map_err(|e| FrameError::refused(ErrorCode::BadRequest, e.to_string()))?;
        if header.version != PROTOCOL_VERSION {
            return Err(FrameError::refused(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {} is not supported (this core speaks {PROTOCOL_VERSION}): upgrade the edge or core", header.version),
            ));
        }
        if header.payload_bytes > self.config.max_frame_bytes as u64 {
            return Err(FrameError::refused(
                ErrorCode::TooLarge,
                format!(
                    "batch of {} bytes exceeds this core's quic.max_frame_bytes of {}: lower the edge's batch size or raise the limit",
                    header.payload_bytes, self.config.max_frame_bytes
                ),
            ));
        }
        // Taken before the payload is read: a core facing many large frames pushes back
        // instead of holding them all.
        let Some(share) = self.budget.try_take(header.payload_bytes as usize) else {
            return Err(FrameError::Refused(over_budget(&self.budget)));
        };
        let mut payload = vec![0u8; header.payload_bytes as usize];
        read_exact(recv, &mut payload).await?;
        match recv.read_to_end(0).await {
            Ok(_) => Ok((header, Frame { payload, share })),
            Err(quinn::ReadToEndError::TooLong) => {
                Err(FrameError::refused(ErrorCode::BadRequest, "frame continues past the payload length its header declares".into()))
            }
            Err(quinn::ReadToEndError::Read(error)) => Err(FrameError::Cut(error.to_string())),
        }
    }

    /// Every early return goes through [`refused_before_publishing`], so a refused batch
    /// never holds up the streams after it for good, nor lets them overtake the ones
    /// before it.
    async fn handle_frame(
        &self,
        header: RequestHeader,
        frame: Frame,
        mut turn: Turn,
        certificate: &CertificateDer<'static>,
        resend: &CancellationToken,
    ) -> Response {
        if let Err(reason) = weir_node::tls::certificate_names(certificate, &header.batch_id.edge_id) {
            tracing::warn!(edge_id = %header.batch_id.edge_id, %reason, "edge names itself differently from its certificate");
            let refusal = error(
                ErrorCode::Forbidden,
                format!(
                    "edge id {:?} is not the name in this edge's client certificate ({reason}): set the edge's edge_id to the name its certificate was issued for",
                    header.batch_id.edge_id
                ),
            );
            return refused_before_publishing(turn, resend, refusal).await;
        }
        let Frame { payload, mut share } = frame;
        // The decompressed size, as the payload declares it (bounded below by the check
        // in `decompress_payload`), joins the frame's share before anything is inflated.
        let inflated = wire::declared_size(&payload).map_or(self.config.max_batch_bytes, |n| (n as usize).min(self.config.max_batch_bytes));
        let Some(more) = self.budget.try_take(inflated) else {
            return refused_before_publishing(turn, resend, over_budget(&self.budget)).await;
        };
        share.merge(more);
        // Decompressing and splitting a batch of many MiB takes milliseconds: off the
        // runtime's workers, which serve every other stream.
        let (max_batch_bytes, max_record_bytes, batch_id) =
            (self.config.max_batch_bytes, self.publisher.max_record_bytes(), header.batch_id.clone());
        let publisher = self.publisher.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let json = wire::decompress_payload(&payload, max_batch_bytes).map_err(|e| error(ErrorCode::TooLarge, e.to_string()))?;
            drop(payload);
            records(&publisher, max_record_bytes, bytes::Bytes::from(json), &batch_id)
        })
        .await;
        let (records, n_events) = match decoded {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(response)) => return refused_before_publishing(turn, resend, response).await,
            Err(join) => return refused_before_publishing(turn, resend, error(ErrorCode::Internal, format!("decoding task failed: {join}"))).await,
        };
        if n_events != header.n_events {
            let refusal = error(ErrorCode::BadRequest, format!("header announces {} events but the payload holds {n_events}", header.n_events));
            return refused_before_publishing(turn, resend, refusal).await;
        }
        // An unready core acknowledges nothing (see `KafkaSink::ingest`); the edge retries
        // or fails over.
        if let Some(reason) = self.publisher.not_ready() {
            return refused_before_publishing(turn, resend, error(ErrorCode::Unavailable, format!("this core is not ready: {reason}"))).await;
        }
        if !turn.wait().await {
            turn.cut();
            resend.cancel();
            return error(
                ErrorCode::Unavailable,
                "an earlier batch on this connection was not published, so this one was not either: resend both in order".into(),
            );
        }
        let delivery = self.publisher.enqueue(records, header.batch_id.seq).await;
        turn.pass();
        match delivery.acknowledged().await {
            Ok(_) => Response::Ack { batch_id: header.batch_id, n_events },
            Err(failure) => {
                match &failure {
                    PublishError::Unavailable { reason, .. } => tracing::warn!(batch_id = %header.batch_id, %reason, "forwarded batch not acknowledged by kafka"),
                    PublishError::Refused { code, reason, .. } => tracing::warn!(batch_id = %header.batch_id, %code, %reason, "kafka refused a forwarded batch for good"),
                    _ => {}
                }
                // No Retry-After on the wire: the edge's own backoff decides.
                let refusal = failure.into_refusal(Duration::ZERO);
                error(refusal.wire_code(), refusal.message)
            }
        }
    }
}

/// Application close code: a frame was cut off, resend in order on a new connection.
const CLOSE_CUT_FRAME: u32 = 2;
/// Application close code: a batch was refused before it was published (a retry can
/// succeed), so were the ones behind it; resend from the oldest unacknowledged one.
const CLOSE_RESEND_IN_ORDER: u32 = 6;

/// Answers a batch refused before its records reached the producer. Refused for good (the
/// edge dead-letters it): the streams behind it may go once the stream before it went.
/// Refused for now (the edge will resend it): the streams behind it must not publish
/// before it, so they are refused too and the connection closes once they are answered.
async fn refused_before_publishing(mut turn: Turn, resend: &CancellationToken, refusal: Response) -> Response {
    match &refusal {
        Response::Error { code, .. } if code.is_retryable() => {
            turn.cut();
            resend.cancel();
        }
        _ => turn.release().await,
    }
    refusal
}

/// A frame's payload, with the budget share it holds until the batch is answered.
struct Frame {
    payload: Vec<u8>,
    share: BudgetShare,
}

fn over_budget(budget: &MemoryBudget) -> Response {
    metrics::counter!("weir_memory_budget_refusals_total", "input" => "quic").increment(1);
    error(
        ErrorCode::Unavailable,
        format!("this core holds its limit of {} bytes of batches in progress: retry shortly or elsewhere", budget.total_bytes()),
    )
}

/// Why a frame was not read completely.
enum FrameError {
    /// The frame is unacceptable; answered without reading the rest.
    Refused(Response),
    /// The stream or connection ended inside the frame.
    Cut(String),
}

impl FrameError {
    fn refused(code: ErrorCode, message: String) -> FrameError {
        FrameError::Refused(error(code, message))
    }
}

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => FrameError::refused(
            ErrorCode::BadRequest,
            format!("frame ended {} bytes before the length its header declares", buf.len() - n),
        ),
        quinn::ReadExactError::ReadError(error) => FrameError::Cut(error.to_string()),
    })
}

/// The Kafka records of a decompressed payload and its event count. A batch that fits
/// one record is published as the edge encoded it; only an oversized one is decoded and
/// split.
fn records(publisher: &Publisher, max_record_bytes: usize, json: bytes::Bytes, batch_id: &BatchId) -> Result<(Vec<Record>, u64), Response> {
        let batches = wire::split_payload(&json).map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let mut records = Vec::with_capacity(batches.len());
        let mut n_events = 0;
        for batch in batches {
            n_events += batch.n_events;
            if batch.json.len() <= max_record_bytes {
                records.push(Record { key: batch.source_key(), payload: json.slice_ref(batch.json.as_bytes()), batch: None });
            } else {
                let decoded = serde_json::from_str(batch.json).map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
                publisher.encode(decoded, &mut records).map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
            }
        }
        // Every record names the batch and its place in it, so the digest can drop a
        // re-sent batch whole (all its parts) and tell a complete batch from a partial one.
        let n_parts = records.len() as u32;
        for (index, record) in records.iter_mut().enumerate() {
            record.batch = Some(BatchPart { id: batch_id.to_string(), index: index as u32, count: n_parts });
        }
        Ok((records, n_events))
}

/// What a stream tells the one opened after it.
enum TurnSignal {
    /// It enqueued its records, or refused its batch for good: the next may go.
    Passed,
    /// Its frame was cut off or refused for now (or an earlier one was): the next must
    /// not publish.
    Cut,
}

/// A stream's place in its connection's order of hand-over to the producer.
struct Turn {
    previous: Option<oneshot::Receiver<TurnSignal>>,
    done: Option<oneshot::Sender<TurnSignal>>,
}

impl Turn {
    /// Waits until the stream before this one enqueued its records or gave up; `false`
    /// when it was cut off.
    async fn wait(&mut self) -> bool {
        match self.previous.take() {
            Some(previous) => !matches!(previous.await, Ok(TurnSignal::Cut)),
            None => true,
        }
    }

    /// Lets the next stream enqueue. Dropping the turn does the same.
    fn pass(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(TurnSignal::Passed);
        }
    }

    /// Lets the next stream go once the one before this went: what a stream that publishes
    /// nothing owes the others (passing at once would let the next overtake the previous).
    async fn release(mut self) {
        if self.wait().await { self.pass() } else { self.cut() }
    }

    /// Tells the next stream (and through it every later one) not to publish.
    fn cut(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(TurnSignal::Cut);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.pass();
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Three streams of one connection, in the order they were opened.
    fn chain() -> (Turn, Turn, Turn) {
        let (done_1, next_1) = oneshot::channel();
        let (done_2, next_2) = oneshot::channel();
        let (done_3, _next_3) = oneshot::channel();
        (
            Turn { previous: None, done: Some(done_1) },
            Turn { previous: Some(next_1), done: Some(done_2) },
            Turn { previous: Some(next_2), done: Some(done_3) },
        )
    }

    fn refusal(code: ErrorCode) -> Response {
        error(code, "refused".into())
    }

    #[tokio::test]
    async fn a_batch_refused_for_good_lets_the_next_go_only_after_the_previous_went() {
        let (mut first, second, mut third) = chain();
        let resend = CancellationToken::new();
        let refused = tokio::spawn({
            let resend = resend.clone();
            async move { refused_before_publishing(second, &resend, refusal(ErrorCode::BadRequest)).await }
        });
        // The first stream has not handed its records over yet: the third must wait.
        assert!(tokio::time::timeout(Duration::from_millis(100), third.wait()).await.is_err(), "the third overtook the first");
        first.pass();
        assert!(third.wait().await, "the third goes once the first went");
        assert!(matches!(refused.await.unwrap(), Response::Error { code: ErrorCode::BadRequest, .. }));
        assert!(!resend.is_cancelled(), "a refusal for good needs no resend");
    }

    #[tokio::test]
    async fn a_batch_refused_for_now_stops_the_ones_behind_it_and_asks_for_a_resend() {
        let (_first, second, mut third) = chain();
        let resend = CancellationToken::new();
        // Refused before the first even went: the third must not publish at all.
        let answer = refused_before_publishing(second, &resend, refusal(ErrorCode::Unavailable)).await;
        assert!(matches!(answer, Response::Error { code: ErrorCode::Unavailable, .. }));
        assert!(!third.wait().await, "the third would land in Kafka before the second's first copy");
        assert!(resend.is_cancelled(), "the connection closes so that the edge resends in order");
    }
}
