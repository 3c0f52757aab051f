//! TLS to the broker: rustls with the ring provider, trusting Mozilla's
//! root certificates (hosted brokers) plus the broker's `ca_file` (a
//! private CA).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::error::CloudError;

/// The client configuration for the broker connection.
///
/// # Errors
/// [`CloudError::Tls`] when `ca_file` cannot be read or holds no usable
/// certificate.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, CloudError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let unusable = |reason: String| {
            CloudError::Tls(format!(
                "ca_file {}: {reason}; give a PEM file with the broker's CA certificate",
                path.display()
            ))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| unusable(e.to_string()))?;
        if certs.is_empty() {
            return Err(unusable("no CERTIFICATE block found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| unusable(e.to_string()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| CloudError::Tls(format!("rustls refused its defaults: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello").unwrap();
        for (path, why) in [
            (dir.path().join("missing.pem"), "No such file"),
            (empty, "no CERTIFICATE"),
        ] {
            let err = client_config(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
            assert!(err.contains(why), "{err}");
        }
        assert!(client_config(None).is_ok());
    }
}
