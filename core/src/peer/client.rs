//! Fetching a segment file from another core: the bytes are hashed on their way to a
//! temporary file, and only a file whose blake3 is the one Global registered (I6) gets its
//! segment's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use weir_global::SegmentInfo;
use weir_node::tls::TlsFiles;

use super::{FetchError, FetchHeader, FetchRequest, MAX_HEADER_BYTES, PeerSetupError};
use crate::store::data_dir;

/// Fetches segment files from other cores into a local directory.
pub struct PeerClient {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl PeerClient {
    pub fn new(tls: &TlsFiles) -> Result<PeerClient, PeerSetupError> {
        let config = weir_node::tls::peer_client_config(tls, Duration::from_secs(30))?;
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(PeerSetupError::Bind)?;
        Ok(PeerClient { endpoint, config })
    }

    /// Fetches `segment` from `node` at `addr` into `dir/<id>.parquet`, checking its blake3
    /// against Global's before the file appears under that name.
    pub async fn fetch(&self, node: &str, addr: SocketAddr, segment: &SegmentInfo, dir: &Path) -> Result<PathBuf, FetchError> {
        let id = &segment.segment_id;
        let transfer = |reason: String| FetchError::Transfer { segment_id: id.clone(), node: node.to_owned(), reason };
        let io = |source| FetchError::Io { segment_id: id.clone(), source };
        let connecting = self.endpoint.connect_with(self.config.clone(), addr, node).map_err(|e| transfer(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| transfer("no QUIC handshake within 10 s".into()))?
            .map_err(|e| transfer(e.to_string()))?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| transfer(e.to_string()))?;
        let request = serde_json::to_vec(&FetchRequest { segment_id: id.clone() }).expect("request encodes");
        send.write_all(&request).await.map_err(|e| transfer(e.to_string()))?;
        send.finish().map_err(|e| transfer(e.to_string()))?;
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await.map_err(|e| transfer(e.to_string()))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(transfer(format!("answer header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        recv.read_exact(&mut header).await.map_err(|e| transfer(e.to_string()))?;
        let (bytes, blake3) = match serde_json::from_slice(&header).map_err(|e| transfer(format!("malformed answer header: {e}")))? {
            FetchHeader::Ok { bytes, blake3 } => (bytes, blake3),
            FetchHeader::Error { message } => return Err(transfer(message)),
        };
        if blake3 != segment.blake3 {
            return Err(FetchError::HashMismatch { segment_id: id.clone(), node: node.to_owned(), expected: segment.blake3.clone(), got: blake3 });
        }
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let final_path = dir.join(data_dir::file_name(id));
        let tmp = dir.join(format!(".{id}.{}.tmp", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = blake3::Hasher::new();
        let mut received = 0u64;
        let outcome = async {
            while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(|e| transfer(e.to_string()))? {
                received += chunk.bytes.len() as u64;
                if received > bytes {
                    return Err(transfer(format!("more than the {bytes} bytes announced")));
                }
                hasher.update(&chunk.bytes);
                file.write_all(&chunk.bytes).await.map_err(io)?;
            }
            if received != bytes {
                return Err(transfer(format!("{received} of {bytes} bytes arrived")));
            }
            let got = hasher.finalize().to_hex().to_string();
            if got != segment.blake3 {
                return Err(FetchError::HashMismatch { segment_id: id.clone(), node: node.to_owned(), expected: segment.blake3.clone(), got });
            }
            file.sync_all().await.map_err(io)?;
            tokio::fs::rename(&tmp, &final_path).await.map_err(io)?;
            Ok(())
        }
        .await;
        connection.close(0u32.into(), b"done");
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        outcome.map(|()| final_path)
    }
}
