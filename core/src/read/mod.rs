//! The read API's view of the cluster: which segments may hold a repository's events
//! (from one Global state, so a query sees each event once even across a re-parse swap),
//! and where their files are ([`locate`]: this node's, or fetched from a core that has a
//! copy). The query language and endpoints are `weir-query`'s.

pub mod locate;

use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use weir_global::SegmentInfo;
use weir_query::{SegmentSource, SourceError};

use locate::SegmentFiles;

use crate::peer::FetchError;

pub struct ClusterSegments {
    pub files: Arc<SegmentFiles>,
}

impl SegmentSource for ClusterSegments {
    fn segments(&self, repo: &str, start_ms: i64, end_ms: i64) -> Vec<SegmentInfo> {
        self.files.global.read(|state| state.segments_overlapping(repo, start_ms, end_ms).into_iter().map(|s| s.info.clone()).collect())
    }

    fn local_path(&self, segment: &SegmentInfo) -> BoxFuture<'static, Result<PathBuf, SourceError>> {
        let (files, segment) = (self.files.clone(), segment.clone());
        async move { files.local_path(&segment).await.map_err(source_error) }.boxed()
    }

    /// The repositories of the registered segments (for a `["*"]` token's `/graphql`
    /// `searchDomains`, which the console's repository picker lists).
    fn repositories(&self) -> Vec<String> {
        self.files.global.read(|state| {
            let names: std::collections::BTreeSet<&String> =
                state.partitions().flat_map(|p| state.segments(p)).flat_map(|s| s.info.repositories.iter()).collect();
            names.into_iter().cloned().collect()
        })
    }
}

/// A copy whose bytes are not the registered ones is damage a retry will not mend (500,
/// naming the node); no copy reachable, a failed transfer or this node failing to store
/// the fetched file may come right (503).
fn source_error(error: FetchError) -> SourceError {
    match error {
        FetchError::HashMismatch { ref node, .. } => SourceError::Damaged { location: format!("the copy on {node}"), reason: error.to_string() },
        FetchError::NoCopy { .. } | FetchError::Transfer { .. } | FetchError::Io { .. } => SourceError::Unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_that_is_not_the_registered_one_is_damage_and_a_missing_one_is_unavailable() {
        let mismatch = FetchError::HashMismatch { segment_id: "s".into(), node: "core-2".into(), expected: "a".into(), got: "b".into() };
        assert!(matches!(source_error(mismatch), SourceError::Damaged { location, .. } if location.contains("core-2")));
        assert!(matches!(source_error(FetchError::NoCopy { segment_id: "s".into() }), SourceError::Unavailable(_)));
        let cut = FetchError::Transfer { segment_id: "s".into(), node: "core-2".into(), reason: "reset".into() };
        assert!(matches!(source_error(cut), SourceError::Unavailable(_)));
    }
}
