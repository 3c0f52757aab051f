//! The HTTP client for the controller's local REST API: base URL, Basic
//! auth, TLS choices, bounded response reading and error classification.
//!
//! tether authenticates itself (ECLYPSE runs relayed calls as its admin
//! user); nothing the cloud sends about credentials reaches the controller.
//! Redirects are not followed: a 3xx goes back to the cloud as is, and the
//! Basic credentials never leave for another host.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Url;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tether_protocol::relay::path::CheckedPath;
use tether_protocol::relay::{ForwardHeaders, HttpMethod};

use crate::config::{ControllerConfig, Secret};

use super::error::{Failure, RelayError};

/// What the controller answered, with only the headers the cloud may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControllerReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// `Content-Disposition`, when sent.
    pub content_disposition: Option<String>,
    /// The body bytes.
    pub body: Vec<u8>,
}

fn reqwest_method(method: HttpMethod) -> reqwest::Method {
    match method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Delete => reqwest::Method::DELETE,
    }
}

/// A client bound to one controller.
#[derive(Debug)]
pub(crate) struct Controller {
    client: reqwest::Client,
    base: Url,
    username: Option<String>,
    password: Option<Secret>,
}

impl Controller {
    /// Builds the client; `timeout` bounds each whole exchange.
    ///
    /// # Errors
    /// A base URL that is not http(s), `accept_invalid_certs` for a host
    /// that is not loopback or link-local, or an unreadable `ca_file`.
    pub(crate) fn new(cfg: &ControllerConfig, timeout: Duration) -> Result<Self, RelayError> {
        let bad = |reason: &str| RelayError::BaseUrl {
            url: cfg.base_url.clone(),
            reason: reason.to_string(),
        };
        let base =
            Url::parse(cfg.base_url.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let host = base.host_str().ok_or_else(|| bad("no host"))?.to_string();
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4);
        if base.scheme() == "https" {
            let tls = if cfg.accept_invalid_certs {
                if !is_local(&host) {
                    return Err(RelayError::InsecureTlsNotLocal { host });
                }
                tracing::warn!(%host, "controller certificate is not verified (controller.accept_invalid_certs)");
                accept_any_certificate()
            } else {
                (*crate::tls::client_config(cfg.ca_file.as_deref(), None)?).clone()
            };
            builder = builder.tls_backend_preconfigured(tls);
        }
        let client = builder.build().map_err(|source| RelayError::Client {
            which: "controller",
            source,
        })?;
        Ok(Self {
            client,
            base,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
        })
    }

    /// The URL for a checked path: the base URL's path, then the request's.
    ///
    /// # Errors
    /// [`Failure::InvalidRequest`] if the result would leave the
    /// controller: impossible for a checked path, kept as a second line of
    /// defence.
    pub(crate) fn url_for(&self, path: &CheckedPath) -> Result<Url, Failure> {
        let joined = format!(
            "{}{}",
            self.base.as_str().trim_end_matches('/'),
            path.path_and_query()
        );
        let url = Url::parse(&joined)
            .map_err(|e| Failure::InvalidRequest(format!("path does not form a URL: {e}")))?;
        let same_origin = url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && url
                .path()
                .starts_with(self.base.path().trim_end_matches('/'));
        if !same_origin {
            return Err(Failure::InvalidRequest(
                "path would leave the controller's API".into(),
            ));
        }
        Ok(url)
    }

    /// Sends one request and reads at most `max_body` bytes of the answer.
    ///
    /// # Errors
    /// [`Failure::Timeout`], [`Failure::Tls`], [`Failure::Unreachable`], or
    /// [`Failure::TooLarge`] for an answer over `max_body` bytes.
    pub(crate) async fn send(
        &self,
        method: HttpMethod,
        url: Url,
        headers: &ForwardHeaders,
        body: Option<Vec<u8>>,
        max_body: usize,
    ) -> Result<ControllerReply, Failure> {
        let mut req = self.client.request(reqwest_method(method), url);
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_ref().map(Secret::expose));
        }
        if let Some(v) = &headers.accept {
            req = req.header(ACCEPT, v);
        }
        if let Some(v) = &headers.content_type {
            req = req.header(CONTENT_TYPE, v);
        }
        if let Some(v) = &headers.content_disposition {
            req = req.header(CONTENT_DISPOSITION, v);
        }
        // reqwest sets Content-Length from the bytes given, which is the
        // recomputed length the controller must see (§7.2).
        if let Some(bytes) = body {
            if bytes.is_empty() {
                // hyper omits the header for an empty body; servers that
                // want a length on every POST/PUT would answer 411.
                req = req.header(CONTENT_LENGTH, "0");
            }
            req = req.body(bytes);
        }
        let mut resp = req.send().await.map_err(classify)?;
        let text_header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = text_header(CONTENT_TYPE);
        let content_disposition = text_header(CONTENT_DISPOSITION);
        let status = resp.status().as_u16();
        let body = read_bounded(&mut resp, max_body, "controller response").await?;
        Ok(ControllerReply {
            status,
            content_type,
            content_disposition,
            body,
        })
    }
}

/// Reads a body, refusing more than `max` bytes without buffering them.
///
/// # Errors
/// [`Failure::TooLarge`] past `max`, or the classified transport error.
pub(crate) async fn read_bounded(
    resp: &mut reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::TooLarge(format!("{what} is larger than {max} bytes"));
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Maps a transport error to the failure answered to the cloud.
pub(crate) fn classify(err: reqwest::Error) -> Failure {
    let tls = tls_cause(&err);
    let timed_out = err.is_timeout();
    // The URL may carry query values the audit log would redact.
    let detail = error_chain(&err.without_url());
    if let Some(tls) = tls {
        Failure::Tls(tls)
    } else if timed_out {
        Failure::Timeout(detail)
    } else {
        Failure::Unreachable(detail)
    }
}

/// The rustls error somewhere in the chain, if any. rustls errors travel
/// inside `io::Error`s, whose `source()` skips the wrapped error, hence the
/// `get_ref` step.
fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls.to_string());
            }
            if let Some(found) = tls_cause(inner) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

/// `outer: inner: innermost`, for the answer's `detail`.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Whether `host` is loopback or link-local, where skipping certificate
/// checks cannot be exploited from the network. `localhost` counts
/// (RFC 6761 reserves it for loopback).
pub(crate) fn is_local(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
        }
        Err(_) => false,
    }
}

/// A rustls config that accepts any certificate but still checks the
/// handshake signatures, so the session is at least bound to the key the
/// controller presented.
fn accept_any_certificate() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        })
        // ring supports the default versions; failing would be a build bug.
        .unwrap_or_else(|_| unreachable_config())
}

#[cold]
fn unreachable_config() -> rustls::ClientConfig {
    // Falls back to a verifying config: refusing is safer than panicking.
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_hosts_are_local() {
        for h in [
            "127.0.0.1",
            "127.9.9.9",
            "localhost",
            "[::1]",
            "::1",
            "169.254.1.2",
            "[fe80::1]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_local(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "192.168.1.1",
            "controller.example",
            "8.8.8.8",
            "[2001:db8::1]",
            "localhost.evil.example",
        ] {
            assert!(!is_local(h), "{h}");
        }
    }

    fn cfg(base: &str, accept_invalid: bool) -> ControllerConfig {
        ControllerConfig {
            base_url: base.into(),
            username: None,
            password: None,
            ca_file: None,
            accept_invalid_certs: accept_invalid,
        }
    }

    #[test]
    fn accept_invalid_certs_is_refused_for_remote_hosts() {
        let err = Controller::new(
            &cfg("https://controller.example", true),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            matches!(err, RelayError::InsecureTlsNotLocal { .. }),
            "{err}"
        );
        assert!(
            Controller::new(&cfg("https://127.0.0.1:8443", true), Duration::from_secs(1)).is_ok()
        );
        assert!(Controller::new(&cfg("https://[fe80::1]", true), Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn base_urls_must_be_http_or_https() {
        for bad in ["ftp://x", "not a url", "/relative", "https://x/?q=1"] {
            assert!(
                Controller::new(&cfg(bad, false), Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_keep_the_base_path_and_stay_on_the_controller() {
        let c = Controller::new(
            &cfg("http://127.0.0.1:8080/eclypse/", false),
            Duration::from_secs(1),
        )
        .unwrap();
        let p = tether_protocol::relay::path::check("/api/x?a=1").unwrap();
        assert_eq!(
            c.url_for(&p).unwrap().as_str(),
            "http://127.0.0.1:8080/eclypse/api/x?a=1"
        );
        let c =
            Controller::new(&cfg("http://127.0.0.1:8080", false), Duration::from_secs(1)).unwrap();
        let p = tether_protocol::relay::path::check("/@evil.example/x").unwrap();
        assert_eq!(
            c.url_for(&p).unwrap().as_str(),
            "http://127.0.0.1:8080/@evil.example/x"
        );
    }
}
