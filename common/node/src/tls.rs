//! Mutual TLS for the edge↔core QUIC link: both sides present a certificate signed by the
//! configured CA, or the handshake fails. TLS 1.3 only, and no 0-RTT: early data could be
//! replayed, and ingest data must never be.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

use weir_proto::wire::{ALPN, MAX_STREAMS_PER_CONNECTION, PEER_ALPN};

/// PEM files of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA that signs the peers' certificates.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {source} (create dev certificates with `weir-core certs`)")]
    Read { what: &'static str, path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid CA certificate for client verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS config not usable for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("the certificate {path} is not issued for {name:?} ({reason}): use the name the certificate names, or issue one for this name (`weir-core certs`)")]
    Name { path: PathBuf, name: String, reason: String },
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// Whether `certificate` was issued for `name` (a DNS name among its subject alternative
/// names). An edge's batch ids carry its name; a core checks it against the edge's
/// certificate, so one edge cannot forge another's ids.
pub fn certificate_names(certificate: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| "not a valid certificate name".to_owned())?;
    let certificate = webpki::EndEntityCert::try_from(certificate).map_err(|e| format!("unreadable certificate: {e}"))?;
    certificate
        .verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| "the certificate names another node".to_owned())
}

/// [`certificate_names`] for the first certificate of a PEM file: an edge checks its own
/// at start, so a wrong `edge_id` fails there instead of at every core.
pub fn check_certificate_name(path: &Path, name: &str) -> Result<(), TlsError> {
    let leaf = certs(path, "certificate")?.remove(0);
    certificate_names(&leaf, name).map_err(|reason| TlsError::Name { path: path.to_owned(), name: name.to_owned(), reason })
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        what: "private key",
        path: path.to_owned(),
        source,
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The core's QUIC server config: requires a client certificate signed by `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider.clone())
            .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert, "certificate")?, key(&files.key)?)?;
    // Edges speak ALPN; other cores PEER_ALPN (the endpoint routes by what was negotiated).
    tls.alpn_protocols = vec![ALPN.to_vec(), PEER_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("valid idle")));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// The edge's QUIC client config: presents `files.cert` and trusts only cores signed by
/// `files.ca`.
pub fn client_config(files: &TlsFiles, idle_timeout: Duration) -> Result<quinn::ClientConfig, TlsError> {
    client_config_for(files, idle_timeout, ALPN)
}

/// A core's client config towards other cores (`PEER_ALPN`), with its own certificate.
pub fn peer_client_config(files: &TlsFiles, idle_timeout: Duration) -> Result<quinn::ClientConfig, TlsError> {
    client_config_for(files, idle_timeout, PEER_ALPN)
}

fn client_config_for(files: &TlsFiles, idle_timeout: Duration, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certs(&files.cert, "certificate")?, key(&files.key)?)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Keep-alives well inside the idle timeout, so a dead core is noticed within it and an
    // idle but healthy link stays up.
    transport.keep_alive_interval(Some(idle_timeout / 3));
    transport.max_idle_timeout(Some(idle_timeout.try_into().expect("idle timeout fits")));
    client.transport_config(Arc::new(transport));
    Ok(client)
}
