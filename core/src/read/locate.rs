//! Where a query finds each segment's file: this node's own segments directory, the files
//! fetched before, or another core that has a copy (fetched over the peer channel,
//! verified, and kept in the bounded fetched cache).

use std::path::PathBuf;
use std::sync::Arc;

use weir_global::SegmentInfo;

use crate::cluster::GlobalLog;
use crate::config::CoreConfig;
use crate::peer::{FetchError, PeerClient, PeerSetupError};
use crate::store::fetched::FetchedCache;
use crate::store::{DataDir, data_dir};

/// Where a query finds a segment's file: this node's own segments directory, the files
/// fetched before, or another core that has a copy (fetched, verified and kept in the
/// bounded [`FetchedCache`]).
pub struct SegmentFiles {
    pub node_id: String,
    pub global: Arc<GlobalLog>,
    pub data_dir: DataDir,
    pub fetched: Arc<FetchedCache>,
    /// `None` on a core without a QUIC endpoint (no certificate to present to peers).
    pub client: Option<PeerClient>,
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
        let no_copy = || FetchError::NoCopy { segment_id: segment.segment_id.clone() };
        let client = self.client.as_ref().ok_or_else(no_copy)?;
        // Nodes with a copy, and their QUIC address; a node holds one copy (its current
        // disk's, else whichever it still announces), so each is asked once.
        let holders: Vec<(String, String)> = self.global.read(|state| {
            let Some(registered) = state.segment(&segment.segment_id) else { return Vec::new() };
            registered
                .copies
                .iter()
                .filter_map(|location| match location {
                    weir_global::Location::Node { node, .. } if *node != self.node_id => {
                        let addr = state.nodes().get(node)?.addresses.quic.clone()?;
                        Some((node.clone(), addr))
                    }
                    _ => None,
                })
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect()
        });
        let mut last = no_copy();
        for (node, address) in holders {
            // An advertised address may be a host name: resolved here, at fetch time.
            let Some(addr) = tokio::net::lookup_host(address.as_str()).await.ok().and_then(|mut a| a.next()) else {
                last = FetchError::Transfer { segment_id: segment.segment_id.clone(), node: node.clone(), reason: format!("cannot resolve its address {address}") };
                continue;
            };
            match client.fetch(&node, addr, segment, self.fetched.dir()).await {
                Ok(path) => {
                    metrics::counter!("weir_segments_fetched_total").increment(1);
                    let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                    let (cache, global) = (self.fetched.clone(), self.global.clone());
                    let name = name.clone();
                    // Eviction removes files: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || {
                        cache.added(&name, bytes, |file| {
                            let id = data_dir::segment_id(std::path::Path::new(file)).unwrap_or(file);
                            global.read(|state| state.segment(id).is_some())
                        })
                    })
                    .await;
                    return Ok(path);
                }
                Err(error) => {
                    tracing::warn!(segment = %segment.segment_id, %node, %error, "segment fetch failed, trying the next copy");
                    last = error;
                }
            }
        }
        Err(last)
    }
}
