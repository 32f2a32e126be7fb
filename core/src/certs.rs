//! `weir-core certs`: a development CA and node certificates, so a local setup needs no
//! hand-run openssl. Not for production PKI: keys are written unencrypted (mode 0600).
//!
//! The CA is created once per directory and reused, so certificates for nodes added later
//! are signed by the same CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid node name {0:?}: use letters, digits, '-', '_' and '.'")]
    Name(String),
}

const CA_NAME: &str = "weir dev CA";

fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // Ten years: a dev setup should not break on a date.
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

fn write(path: &Path, contents: &str) -> Result<(), CertsError> {
    std::fs::write(path, contents).map_err(|source| CertsError::Write { path: path.to_owned(), source })
}

/// Writes a private key readable by its owner only (0600 from the start, never briefly
/// readable by others).
fn write_key(path: &Path, contents: &str) -> Result<(), CertsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |source| CertsError::Write { path: path.to_owned(), source };
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// What kind of node a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A core: serves QUIC (server auth) and may connect to other cores (client auth).
    Core,
    /// An edge: client auth only.
    Edge,
}

/// Writes `ca.pem`/`ca.key` (if missing) and `NAME.pem`/`NAME.key` for every node into
/// `dir`; returns the paths written.
pub fn generate(dir: &Path, nodes: &[(String, Role)]) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write { path: dir.to_owned(), source })?;
    let mut written = Vec::new();
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_key = if ca_key_path.exists() && ca_cert_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|source| CertsError::Read { path: ca_key_path.clone(), source })?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write(&ca_cert_path, &cert.pem())?;
        write_key(&ca_key_path, &key.serialize_pem())?;
        written.extend([ca_cert_path, ca_key_path]);
        key
    };
    // The issuer needs only the CA's name, key usages and key, all of which are fixed or
    // stored, so an existing CA is reused without parsing its certificate.
    let issuer = Issuer::new(ca_params()?, &ca_key);
    for (name, role) in nodes {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(CertsError::Name(name.clone()));
        }
        let mut sans = vec![name.clone()];
        if *role == Role::Core {
            sans.extend(["localhost".into(), "127.0.0.1".into(), "::1".into()]);
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Core => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Edge => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        write(&cert_path, &cert.pem())?;
        write_key(&key_path, &key.serialize_pem())?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_keys_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &[("edge-1".into(), Role::Edge)]).unwrap();
        for name in ["ca.key", "edge-1.key"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        let mode = std::fs::metadata(dir.path().join("edge-1.pem")).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode & 0o044, 0, "certificates stay readable");
    }
}
