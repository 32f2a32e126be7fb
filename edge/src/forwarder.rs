//! Forwards spooled batches over QUIC to any reachable core, and removes a batch from
//! the spool only when a core acknowledged it (which it does after Kafka did).
//!
//! Life of a batch: the spool hands out pending batches in sequence order; up to
//! `max_in_flight` travel at once, each on its own stream; an ack removes it from the
//! spool. Any failure of the link (connection lost, timeout, a retryable error from the
//! core) ends the session: every batch not acknowledged stays pending, and the next
//! session, on the next core in the list, starts again from the oldest. Delivery is
//! therefore at least once; the batch id (edge id + sequence) lets the digest drop a copy
//! Kafka already holds. A batch a core refuses as unacceptable (not retryable) is moved to
//! the [`DeadLetters`] directory and then removed from the spool.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use weir_proto::wire::{self, BatchId, ErrorCode, PROTOCOL_VERSION, RequestHeader, Response};

use crate::config::{CoreAddress, ForwardConfig};
use crate::dead_letter::{DeadLetters, Refusal};
use crate::ingest::decode_spooled;
use crate::spool::{Spool, SpooledBatch};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot resolve core address {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot connect to core {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("link to core lost: {0}")]
    Link(String),
    #[error("core answered batch {seq} with {code:?}: {message}")]
    Refused { seq: u64, code: ErrorCode, message: String },
    #[error("no answer for batch {seq} within {timeout_ms} ms")]
    Timeout { seq: u64, timeout_ms: u64 },
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
}

pub struct Forwarder {
    endpoint: quinn::Endpoint,
    spool: Spool,
    config: ForwardConfig,
    edge_id: String,
    incarnation: String,
    dead_letters: DeadLetters,
    core_refusals: CoreRefusals,
}

/// Cores that refused a batch for a reason of their own (protocol version, Kafka
/// permissions), by sequence: the batch is dead-lettered only once every core did.
#[derive(Default)]
struct CoreRefusals(Mutex<HashMap<u64, BTreeSet<String>>>);

impl CoreRefusals {
    /// Records that the core at `addr` refused batch `seq`; true once every one of
    /// `cores` did (the refusals of `seq` are then forgotten).
    fn refused_by_every_core(&self, seq: u64, addr: &str, cores: &[CoreAddress]) -> bool {
        let mut refusals = self.0.lock().expect("lock");
        let by = refusals.entry(seq).or_default();
        by.insert(addr.to_owned());
        let every = cores.iter().all(|core| by.contains(&core.addr));
        if every {
            refusals.remove(&seq);
        }
        every
    }
}

impl Forwarder {
    pub fn new(
        endpoint: quinn::Endpoint,
        spool: Spool,
        config: ForwardConfig,
        edge_id: String,
        incarnation: String,
        dead_letters: DeadLetters,
    ) -> Forwarder {
        Forwarder { endpoint, spool, config, edge_id, incarnation, dead_letters, core_refusals: CoreRefusals::default() }
    }

    /// Jittered exponential delays between `backoff_initial_ms` and `backoff_max_ms`:
    /// many edges that lost the same core do not come back in lockstep.
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.backoff_initial_ms))
            .with_max_delay(Duration::from_millis(self.config.backoff_max_ms))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Runs until `shutdown`: connect, forward, fail over, back off.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.config.cores.is_empty() {
            tracing::error!("no core addresses configured: spooled events cannot be forwarded");
        }
        let mut backoff = self.backoff();
        let mut next_core = 0usize;
        let mut failures_in_round = 0usize;
        while !shutdown.is_cancelled() && !self.config.cores.is_empty() {
            let core = self.config.cores[next_core % self.config.cores.len()].clone();
            let result = tokio::select! {
                result = self.session(&core) => result,
                _ = shutdown.cancelled() => break,
            };
            match result {
                // A session only ends without error when the core closed the link
                // gracefully; reconnect at once.
                Ok(n_acked) => {
                    tracing::info!(core = %core.addr, n_acked, "core closed the link");
                    backoff = self.backoff();
                    failures_in_round = 0;
                    continue;
                }
                Err((n_acked, error)) => {
                    tracing::warn!(core = %core.addr, n_acked, %error, "forwarding to core failed, trying the next core");
                    if n_acked > 0 {
                        backoff = self.backoff();
                        failures_in_round = 0;
                    }
                }
            }
            next_core += 1;
            failures_in_round += 1;
            // Only back off once every core failed in a row: failover itself is immediate.
            if failures_in_round >= self.config.cores.len() {
                failures_in_round = 0;
                let delay = backoff.next().unwrap_or(Duration::from_millis(self.config.backoff_max_ms));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        self.endpoint.close(0u32.into(), b"edge shutting down");
    }

    async fn connect(&self, core: &CoreAddress) -> Result<quinn::Connection, ForwardError> {
        let addr = core.addr.as_str();
        let resolved: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ForwardError::Resolve { addr: addr.into(), reason: e.to_string() })?
            .next()
            .ok_or_else(|| ForwardError::Resolve { addr: addr.into(), reason: "no address".into() })?;
        // Each core is checked against its own name: a certificate of one core does not
        // let it stand in for another.
        let name = core.name.as_deref().unwrap_or(&self.config.server_name);
        let connecting = self
            .endpoint
            .connect(resolved, name)
            .map_err(|e| ForwardError::Connect { addr: addr.into(), reason: e.to_string() })?;
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(ForwardError::Connect { addr: addr.into(), reason: e.to_string() }),
            Err(_) => Err(ForwardError::Connect { addr: addr.into(), reason: format!("no handshake within {timeout:?}") }),
        }
    }

    /// One connection's life. Returns the number of batches acknowledged, with the error
    /// that ended it.
    async fn session(&self, core: &CoreAddress) -> Result<u64, (u64, ForwardError)> {
        let connection = self.connect(core).await.map_err(|e| {
            metrics::counter!("weir_forward_session_failures_total").increment(1);
            (0, e)
        })?;
        let addr = core.addr.as_str();
        tracing::info!(core = %addr, "connected to core");
        let connected = metrics::gauge!("weir_forward_connected", "core" => addr.to_owned());
        connected.set(1.0);
        let mut n_acked = 0u64;
        let result = self.pump(addr, &connection, &mut n_acked).await;
        connected.set(0.0);
        if result.is_err() {
            metrics::counter!("weir_forward_session_failures_total").increment(1);
        }
        connection.close(0u32.into(), b"session over");
        result.map(|()| n_acked).map_err(|e| (n_acked, e))
    }

    async fn pump(&self, addr: &str, connection: &quinn::Connection, n_acked: &mut u64) -> Result<(), ForwardError> {
        let max_in_flight = self.config.max_in_flight.max(1);
        let mut in_flight: FuturesUnordered<BoxFuture<'_, Result<u64, ForwardError>>> = FuturesUnordered::new();
        let mut cursor: Option<u64> = None;
        // Transient refusals per batch on this link, and the delays between its retries.
        let mut retries: HashMap<u64, (u32, Box<dyn Iterator<Item = Duration> + Send>)> = HashMap::new();
        loop {
            if in_flight.len() < max_in_flight {
                let batches = self.spool.pending_after(cursor, max_in_flight - in_flight.len())?;
                for batch in batches {
                    cursor = Some(batch.seq);
                    // Streams are opened here, in spool order, rather than inside the
                    // send futures (which run in any order): the core hands batches to
                    // Kafka in the order their streams were opened.
                    let streams = connection.open_bi().await.map_err(|e| ForwardError::Link(e.to_string()))?;
                    in_flight.push(Box::pin(self.send(streams, batch)));
                }
            }
            tokio::select! {
                Some(result) = in_flight.next(), if !in_flight.is_empty() => match result {
                    Ok(seq) => {
                        retries.remove(&seq);
                        self.spool.ack(seq)?;
                        *n_acked += 1;
                        metrics::counter!("weir_forward_batches_acked_total").increment(1);
                    }
                    Err(ForwardError::Refused { seq, code, message }) if code.is_retryable() => {
                        // Kafka had a moment (a leader moving, a broker restarting): try the
                        // batch again on this link after a jittered delay, without tearing
                        // down the batches in flight beside it. Past the limit, fail over.
                        let (attempts, delays) = retries.entry(seq).or_insert_with(|| (0, Box::new(self.backoff())));
                        *attempts += 1;
                        if *attempts > self.config.retries_per_link {
                            return Err(ForwardError::Refused { seq, code, message });
                        }
                        let delay = delays.next().unwrap_or(Duration::from_millis(self.config.backoff_max_ms));
                        tracing::info!(seq, ?code, %message, attempt = *attempts, delay_ms = delay.as_millis() as u64, "core could not take a batch yet; retrying it on this link");
                        metrics::counter!("weir_forward_retries_total").increment(1);
                        in_flight.push(Box::pin(self.resend_after(delay, connection.clone(), seq)));
                    }
                    Err(ForwardError::Refused { seq, code, message }) if code.is_core_specific() => {
                        if !self.core_refusals.refused_by_every_core(seq, addr, &self.config.cores) {
                            // Another core may take it (a newer version, other credentials).
                            return Err(ForwardError::Refused { seq, code, message });
                        }
                        self.dead_letter(addr, seq, code, message).await?;
                    }
                    Err(ForwardError::Refused { seq, code, message }) => {
                        self.dead_letter(addr, seq, code, message).await?;
                    }
                    Err(error) => return Err(error),
                },
                _ = self.spool.wait_for_more(cursor), if in_flight.len() < max_in_flight => {}
                reason = connection.closed() => {
                    return match reason {
                        // Code 0: the core is shutting down and drained what it had; reconnect.
                        quinn::ConnectionError::ApplicationClosed(close) if close.error_code.into_inner() == 0 => Ok(()),
                        // Any other code says why this core cannot go on (not ready, at its
                        // connection limit, a batch to resend in order): the next core, or
                        // a backoff once every core said so. Unacknowledged batches are
                        // resent from the oldest on the next link.
                        quinn::ConnectionError::ApplicationClosed(close) => Err(ForwardError::Link(format!(
                            "the core closed the link (code {}): {}",
                            close.error_code,
                            String::from_utf8_lossy(&close.reason)
                        ))),
                        other => Err(ForwardError::Link(other.to_string())),
                    };
                }
            }
        }
    }

    /// Sends batch `seq` again on its own new stream after `delay`, reading it back from
    /// the spool, where it is still pending.
    async fn resend_after(&self, delay: Duration, connection: quinn::Connection, seq: u64) -> Result<u64, ForwardError> {
        tokio::time::sleep(delay).await;
        let Some(batch) = self.pending(seq)? else {
            return Ok(seq);
        };
        let streams = connection.open_bi().await.map_err(|e| ForwardError::Link(e.to_string()))?;
        self.send(streams, batch).await
    }

    /// Batch `seq` if it is still pending in the spool.
    fn pending(&self, seq: u64) -> Result<Option<SpooledBatch>, ForwardError> {
        Ok(self.spool.pending_after(seq.checked_sub(1), 1)?.into_iter().find(|b| b.seq == seq))
    }

    /// Moves a batch a core refused as unacceptable to the dead-letter directory, then out
    /// of the spool. If it cannot be written there, it stays in the spool and is sent
    /// again on the next session.
    async fn dead_letter(&self, addr: &str, seq: u64, code: ErrorCode, message: String) -> Result<(), ForwardError> {
        // A refused batch is still pending in the spool (refusals are rare: read it back
        // rather than keep every in-flight payload on the side).
        let Some(spooled) = self.pending(seq)? else {
            tracing::warn!(seq, "refused batch is no longer in the spool; nothing to dead-letter");
            return Ok(());
        };
        let spooled = spooled.payload;
        let batch_id = self.batch_id(seq);
        let refusal = Refusal {
            batch_id: batch_id.to_string(),
            core: addr.to_owned(),
            code,
            message: message.clone(),
            refused_at_ms: weir_proto::event::now_ms(),
            n_events: decode_spooled(&spooled).map_or(0, |(n, _)| n),
        };
        let letters = self.dead_letters.clone();
        let stored = tokio::task::spawn_blocking(move || letters.store(&batch_id, &spooled, refusal))
            .await
            .unwrap_or_else(|join| panic!("dead-letter task panicked: {join}"));
        match stored {
            Ok(path) => {
                tracing::error!(seq, ?code, %message, file = %path.display(), "core refused a spooled batch as unacceptable; moved it to the dead-letter directory");
                metrics::counter!("weir_dead_letters_total").increment(1);
                self.spool.ack(seq)?;
            }
            Err(error) => {
                tracing::error!(seq, ?code, %message, %error, "core refused a spooled batch and it could not be dead-lettered; it stays in the spool");
            }
        }
        Ok(())
    }

    fn batch_id(&self, seq: u64) -> BatchId {
        BatchId { edge_id: self.edge_id.clone(), incarnation: self.incarnation.clone(), seq }
    }

    /// Sends one batch on its own (already opened) stream and waits for the core's answer.
    /// The answer is read while the frame is still being written: a core that refuses
    /// the batch from its header answers at once and stops the upload.
    async fn send(&self, streams: (quinn::SendStream, quinn::RecvStream), batch: SpooledBatch) -> Result<u64, ForwardError> {
        let seq = batch.seq;
        let timeout_ms = self.config.ack_timeout_ms;
        let exchange = async {
            let Some((n_events, payload)) = decode_spooled(&batch.payload) else {
                return Err(ForwardError::Refused {
                    seq,
                    code: ErrorCode::BadRequest,
                    message: "spooled batch is shorter than its header".into(),
                });
            };
            let header = RequestHeader {
                version: PROTOCOL_VERSION,
                batch_id: self.batch_id(seq),
                n_events,
                payload_bytes: payload.len() as u64,
            };
            let frame = wire::encode_request(&header, &payload);
            let (mut send, mut recv) = streams;
            let write = async {
                send.write_all(&frame).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())
            };
            let (written, answer) = tokio::join!(write, recv.read_to_end(wire::MAX_RESPONSE_BYTES));
            let answer = answer.map_err(|e| match written {
                // The write's error is the cause when both failed (the link went).
                Err(write) => ForwardError::Link(format!("{write}; no answer: {e}")),
                Ok(()) => ForwardError::Link(e.to_string()),
            })?;
            match serde_json::from_slice::<Response>(&answer) {
                Ok(Response::Ack { batch_id, .. }) if batch_id.seq == seq => Ok(seq),
                Ok(Response::Ack { batch_id, .. }) => Err(ForwardError::Link(format!("core acked batch {batch_id} on the stream of {seq}"))),
                Ok(Response::Error { code, message }) => Err(ForwardError::Refused { seq, code, message }),
                Err(e) => Err(ForwardError::Link(format!("unreadable answer from core: {e}"))),
            }
        };
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .unwrap_or(Err(ForwardError::Timeout { seq, timeout_ms }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_specific_refusal_dead_letters_only_once_every_core_refused() {
        let cores: Vec<CoreAddress> = ["a:1", "b:2"].iter().map(|addr| CoreAddress { addr: (*addr).into(), name: None }).collect();
        let refusals = CoreRefusals::default();
        assert!(!refusals.refused_by_every_core(7, "a:1", &cores), "b may still take it");
        assert!(!refusals.refused_by_every_core(7, "a:1", &cores), "the same core twice is still one core");
        assert!(!refusals.refused_by_every_core(8, "b:2", &cores), "another batch is counted apart");
        assert!(refusals.refused_by_every_core(7, "b:2", &cores), "both refused 7");
        assert!(!refusals.refused_by_every_core(7, "a:1", &cores), "forgotten once decided");
    }
}
