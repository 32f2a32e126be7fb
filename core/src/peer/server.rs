//! Serving this node's segment files to other cores: a peer must present a certificate
//! naming a node Global knows, and may ask only for registered segment ids, which are
//! then looked up in this node's segments directory (no path can be smuggled in).

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::{FetchHeader, FetchRequest, MAX_REQUEST_BYTES};
use crate::cluster::GlobalLog;
use crate::store::DataDir;

/// Connection closed: the client certificate names no node Global knows.
pub const CLOSE_NOT_A_CORE: u32 = 0x10;

/// Serves this node's segment files to other cores.
pub struct PeerServer {
    pub global: Arc<GlobalLog>,
    pub data_dir: DataDir,
}

impl PeerServer {
    pub async fn serve_connection(self: Arc<Self>, connection: quinn::Connection, certificate: CertificateDer<'static>) {
        let remote = connection.remote_address();
        let peer = self.global.read(|s| s.nodes().keys().find(|id| weir_node::tls::certificate_names(&certificate, id).is_ok()).cloned());
        let Some(peer) = peer else {
            tracing::warn!(%remote, "peer connection refused: its certificate names no core known to Global");
            connection.close(CLOSE_NOT_A_CORE.into(), b"not a core of this cluster");
            return;
        };
        while let Ok((send, recv)) = connection.accept_bi().await {
            let this = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                if let Err(error) = this.serve_stream(send, recv).await {
                    tracing::warn!(%peer, %error, "segment fetch failed");
                }
            });
        }
    }

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<(), String> {
        let request = recv.read_to_end(MAX_REQUEST_BYTES).await.map_err(|e| e.to_string())?;
        let (header, file) = match self.open(&request).await {
            Ok((file, bytes, blake3)) => (FetchHeader::Ok { bytes, blake3 }, Some(file)),
            Err(message) => (FetchHeader::Error { message }, None),
        };
        let header = serde_json::to_vec(&header).expect("header encodes");
        send.write_all(&(header.len() as u32).to_be_bytes()).await.map_err(|e| e.to_string())?;
        send.write_all(&header).await.map_err(|e| e.to_string())?;
        if let Some(mut file) = file {
            tokio::io::copy(&mut file, &mut send).await.map_err(|e| e.to_string())?;
        }
        send.finish().map_err(|e| e.to_string())?;
        // Wait until the client has everything (or went away) before the stream is dropped.
        let _ = send.stopped().await;
        Ok(())
    }

    async fn open(&self, request: &[u8]) -> Result<(tokio::fs::File, u64, String), String> {
        let request: FetchRequest = serde_json::from_slice(request).map_err(|e| format!("malformed fetch request: {e}"))?;
        let id = request.segment_id;
        let blake3 = self
            .global
            .read(|s| s.segment(&id).map(|seg| seg.info.blake3.clone()))
            .ok_or_else(|| format!("segment {id} is not registered in Global"))?;
        // Only ids Global registered reach the file system, so no path can be smuggled in.
        let path = self.data_dir.segment_path(&id);
        let file = tokio::fs::File::open(&path).await.map_err(|e| format!("segment {id} is not on this node: {e}"))?;
        let bytes = file.metadata().await.map_err(|e| e.to_string())?.len();
        Ok((file, bytes, blake3))
    }
}
