//! Where a query finds each segment's file: this node's own segments directory, the files
//! fetched before, another core that has a copy (fetched over the peer channel, verified,
//! and kept in the bounded fetched cache), or the bucket (downloaded, verified, cached).

use std::path::PathBuf;
use std::sync::Arc;

use weir_global::SegmentInfo;

use crate::cluster::GlobalLog;
use crate::config::CoreConfig;
use crate::peer::{FetchError, PeerClient, PeerSetupError};
use crate::store::bucket::{Bucket, BucketError};
use crate::store::fetched::FetchedCache;
use crate::store::{DataDir, data_dir};

/// Where a query finds a segment's file: this node's own segments directory, the files
/// fetched before, another core that has a copy or the bucket (fetched, verified and kept
/// in the bounded [`FetchedCache`]).
pub struct SegmentFiles {
    pub node_id: String,
    pub global: Arc<GlobalLog>,
    pub data_dir: DataDir,
    pub fetched: Arc<FetchedCache>,
    /// `None` on a core without a QUIC endpoint (no certificate to present to peers).
    pub client: Option<PeerClient>,
    /// `None` without `[bucket]`.
    pub bucket: Option<Arc<Bucket>>,
}

impl SegmentFiles {
    /// This node's files as `config` lays them out, with a peer client when the node has a
    /// QUIC section (its certificate is what other cores let fetch).
    pub fn open(config: &CoreConfig, global: Arc<GlobalLog>) -> Result<SegmentFiles, PeerSetupError> {
        let data_dir = DataDir::new(&config.data_dir);
        Ok(SegmentFiles {
            node_id: config.node_id.clone(),
            global,
            fetched: Arc::new(FetchedCache::open(data_dir.fetched_dir(), config.limits.fetched_segments_bytes)),
            data_dir,
            client: config.quic.as_ref().map(|q| PeerClient::new(&q.tls)).transpose()?,
            bucket: config.bucket.as_ref().map(|b| Arc::new(Bucket::new(b))),
        })
    }

    pub async fn local_path(&self, segment: &SegmentInfo) -> Result<PathBuf, FetchError> {
        let name = data_dir::file_name(&segment.segment_id);
        let own = self.data_dir.segment_path(&segment.segment_id);
        if tokio::fs::try_exists(&own).await.unwrap_or(false) {
            return Ok(own);
        }
        let fetched = self.fetched.dir().join(&name);
        if tokio::fs::try_exists(&fetched).await.unwrap_or(false) {
            self.fetched.touch(&name);
            return Ok(fetched);
        }
        let mut last = FetchError::NoCopy { segment_id: segment.segment_id.clone() };
        // Nodes with a copy, and their QUIC address; a node holds one copy (its current
        // disk's, else whichever it still announces), so each is asked once. Live holders
        // first, then the bucket, then holders whose heartbeat is overdue: a dead node
        // costs a connection timeout per segment, a bucket download does not.
        let (live, overdue, bucket_key) = self.global.read(|state| {
            let Some(registered) = state.segment(&segment.segment_id) else { return (Vec::new(), Vec::new(), None) };
            let now_ms = weir_proto::event::now_ms().max(0) as u64;
            let timeout = state.storage_rule().map_or(u64::MAX, |rule| rule.node_timeout_ms);
            let holders: std::collections::BTreeMap<String, String> = registered
                .copies
                .iter()
                .filter_map(|location| match location {
                    weir_global::Location::Node { node, .. } if *node != self.node_id => {
                        let addr = state.nodes().get(node)?.addresses.quic.clone()?;
                        Some((node.clone(), addr))
                    }
                    _ => None,
                })
                .collect();
            let (live, overdue): (Vec<_>, Vec<_>) = holders.into_iter().partition(|(node, _)| state.is_live(node, now_ms, timeout));
            let key = registered.copies.iter().find_map(|l| match l {
                weir_global::Location::Bucket(key) => Some(key.clone()),
                weir_global::Location::Node { .. } => None,
            });
            (live, overdue, key)
        });
        if let Some(path) = self.from_nodes(segment, live, &mut last).await {
            return Ok(self.cached(&name, path).await);
        }
        if let (Some(bucket), Some(key)) = (&self.bucket, bucket_key) {
            let node = || "the bucket".to_owned();
            match bucket.download(&key, segment, self.fetched.dir()).await {
                Ok(path) => {
                    metrics::counter!("weir_segments_fetched_from_bucket_total").increment(1);
                    return Ok(self.cached(&name, path).await);
                }
                Err(error) => {
                    tracing::warn!(segment = %segment.segment_id, %key, %error, "segment download from the bucket failed");
                    last = match error {
                        BucketError::Mismatch { why, .. } => {
                            FetchError::HashMismatch { segment_id: segment.segment_id.clone(), node: node(), expected: segment.blake3.clone(), got: why }
                        }
                        BucketError::Request { reason, .. } => FetchError::Transfer { segment_id: segment.segment_id.clone(), node: node(), reason },
                        BucketError::Local { source, .. } => FetchError::Io { segment_id: segment.segment_id.clone(), source },
                    };
                }
            }
        }
        if let Some(path) = self.from_nodes(segment, overdue, &mut last).await {
            return Ok(self.cached(&name, path).await);
        }
        Err(last)
    }

    /// Fetches `segment` from the first of `holders` (node, QUIC address) that serves it;
    /// each failure is logged and kept in `last`.
    async fn from_nodes(&self, segment: &SegmentInfo, holders: Vec<(String, String)>, last: &mut FetchError) -> Option<PathBuf> {
        let client = self.client.as_ref()?;
        for (node, address) in holders {
            // An advertised address may be a host name: resolved here, at fetch time.
            let Some(addr) = tokio::net::lookup_host(address.as_str()).await.ok().and_then(|mut a| a.next()) else {
                *last = FetchError::Transfer { segment_id: segment.segment_id.clone(), node: node.clone(), reason: format!("cannot resolve its address {address}") };
                continue;
            };
            match client.fetch(&node, addr, segment, self.fetched.dir()).await {
                Ok(path) => {
                    metrics::counter!("weir_segments_fetched_total").increment(1);
                    return Some(path);
                }
                Err(error) => {
                    tracing::warn!(segment = %segment.segment_id, %node, %error, "segment fetch failed, trying the next copy");
                    *last = error;
                }
            }
        }
        None
    }

    /// Puts a fetched file in the bounded cache (evicting what no longer fits) and returns it.
    async fn cached(&self, name: &str, path: PathBuf) -> PathBuf {
        let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        let (cache, global, name) = (self.fetched.clone(), self.global.clone(), name.to_owned());
        // Eviction removes files: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            cache.added(&name, bytes, |file| {
                let id = data_dir::segment_id(std::path::Path::new(file)).unwrap_or(file);
                global.read(|state| state.segment(id).is_some())
            })
        })
        .await;
        path
    }
}
