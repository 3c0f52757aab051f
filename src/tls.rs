//! TLS client configuration (rustls with the ring provider): system roots
//! plus configured trust anchors, and an optional client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::ClientCert;

/// TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{what} {path}: {reason}")]
    Pem {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// No trust anchors at all.
    #[error("no trusted CA certificates: the system store is empty and no ca_file is set")]
    NoRoots,
    /// rustls refused the combination (e.g. key does not match certificate).
    #[error("TLS configuration rejected: {0} (check that the key matches the certificate)")]
    Rustls(#[from] rustls::Error),
}

/// Installs ring as the process-wide rustls provider. Safe to call more
/// than once; only the first call installs.
pub fn install_crypto_provider() {
    // A second install returns Err with the already-installed provider,
    // which is exactly what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a client config trusting the system roots (Mozilla's bundled
/// roots when the system store is empty) plus `ca_file`.
///
/// # Errors
/// When a PEM file cannot be read or parsed, or nothing is trusted.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<&ClientCert>,
) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut roots = system_roots();
    if let Some(path) = ca_file {
        for cert in read_certs(path, "CA file")? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                what: "CA file",
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match client_cert {
        Some(cc) => {
            let chain = read_certs(&cc.cert_file, "client certificate")?;
            let key = read_key(&cc.key_file)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for err in &loaded.errors {
        tracing::debug!(error = %err, "skipping an unreadable system certificate");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// When the file is unreadable or holds no certificate.
pub fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| pem_err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| TlsError::Pem {
        what: "client key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| TlsError::Pem {
        what: "client key",
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem")), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
        assert!(msg.starts_with("CA file"), "{msg}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "hello").unwrap();
        let err = client_config(Some(&path), None).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }
}
