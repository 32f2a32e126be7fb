//! The read API's view of the cluster: which segments may hold a repository's events
//! (from one Global state, so a query sees each event once even across a re-parse swap),
//! and where their files are (this node's, or fetched from a core that has a copy:
//! [`crate::peer::SegmentFiles`]). The query language and endpoints are `weir-query`'s.

use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use weir_global::SegmentInfo;
use weir_query::{SegmentSource, SourceError};

use crate::peer::SegmentFiles;

pub struct ClusterSegments {
    pub files: Arc<SegmentFiles>,
}

impl SegmentSource for ClusterSegments {
    fn segments(&self, repo: &str, start_ms: i64, end_ms: i64) -> Vec<SegmentInfo> {
        self.files.global.read(|state| {
            state
                .partitions()
                .flat_map(|p| state.segments(p))
                .map(|s| &s.info)
                .filter(|info| info.n_events > 0 && info.repositories.iter().any(|r| r == repo))
                .filter(|info| info.min_ts_ms <= end_ms && info.max_ts_ms >= start_ms)
                .cloned()
                .collect()
        })
    }

    fn local_path(&self, segment: &SegmentInfo) -> BoxFuture<'static, Result<PathBuf, SourceError>> {
        let (files, segment) = (self.files.clone(), segment.clone());
        async move { files.local_path(&segment).await.map_err(|e| SourceError(e.to_string())) }.boxed()
    }
}
