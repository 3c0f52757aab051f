//! The relay's two error types: [`RelayError`] when it cannot be built,
//! [`Failure`] when one call cannot be served (and becomes an answer).

use tether_protocol::relay::path::PathError;
use tether_protocol::relay::RequestError;

/// The relay could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// `controller.base_url` is not an absolute http(s) URL.
    #[error("controller.base_url {url:?} is not usable: {reason}")]
    BaseUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
    },
    /// `accept_invalid_certs` was asked for a host that is not loopback or
    /// link-local: a certificate check may only be skipped where no network
    /// path could be intercepted.
    #[error(
        "controller.accept_invalid_certs is only allowed for loopback or link-local hosts, \
         not {host:?}: set controller.ca_file to the controller's certificate instead"
    )]
    InsecureTlsNotLocal {
        /// The controller's host.
        host: String,
    },
    /// The upload URL (`relay.upload_url`) is not an absolute http(s) URL.
    #[error("upload URL {url:?} is not usable: {reason}")]
    UploadUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
    },
    /// Trust anchors could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP client could not be built.
    #[error("cannot build the {which} HTTP client: {source}")]
    Client {
        /// `controller` or `cloud`.
        which: &'static str,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
}

/// Why one call could not be served. Every variant maps to an HTTP status
/// and an answer the Cloud Relay understands ([`Failure::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The payload is not a request we can read.
    #[error("{0}")]
    InvalidRequest(String),
    /// The path broke a rule (see [`super::path`]).
    #[error("{0}")]
    InvalidPath(#[from] PathError),
    /// The path is outside `relay.allowed_paths`.
    #[error("path {0:?} is not in relay.allowed_paths")]
    PathNotAllowed(String),
    /// Not GET, PUT, POST or DELETE.
    #[error("method {0:?} is not allowed: only GET, PUT, POST and DELETE are relayed")]
    MethodNotAllowed(String),
    /// A body (request blob or controller response) over the size limit,
    /// or a response that needs file upload when none is configured.
    #[error("{0}")]
    TooLarge(String),
    /// Every slot and queue place is taken.
    #[error("the relay is busy: {0}")]
    Busy(String),
    /// The controller could not be reached or the connection broke.
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    /// The TLS handshake with the controller failed.
    #[error("TLS handshake with the controller failed: {0}")]
    Tls(String),
    /// The per-request timeout (or the HTTP client's) ran out.
    #[error("{0}")]
    Timeout(String),
    /// The request body could not be fetched from its `blobUrl`.
    #[error("request body download failed: {0}")]
    BlobDownload(String),
    /// The response body could not be uploaded.
    #[error("response upload failed: {0}")]
    Upload(String),
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid(why) => Failure::InvalidRequest(why),
            RequestError::MethodNotAllowed(name) => Failure::MethodNotAllowed(name),
        }
    }
}

impl Failure {
    /// The HTTP status answered for this failure.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Failure::InvalidRequest(_) | Failure::InvalidPath(_) => 400,
            Failure::PathNotAllowed(_) => 403,
            Failure::MethodNotAllowed(_) => 405,
            Failure::TooLarge(_) => 413,
            Failure::Unreachable(_)
            | Failure::Tls(_)
            | Failure::BlobDownload(_)
            | Failure::Upload(_) => 502,
            Failure::Busy(_) => 503,
            Failure::Timeout(_) => 504,
        }
    }

    /// A stable machine-readable name, the answer's `error` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Failure::InvalidRequest(_) => "invalid_request",
            Failure::InvalidPath(_) => "invalid_path",
            Failure::PathNotAllowed(_) => "path_not_allowed",
            Failure::MethodNotAllowed(_) => "method_not_allowed",
            Failure::TooLarge(_) => "payload_too_large",
            Failure::Busy(_) => "busy",
            Failure::Unreachable(_) => "controller_unreachable",
            Failure::Tls(_) => "tls_failure",
            Failure::Timeout(_) => "timeout",
            Failure::BlobDownload(_) => "blob_download_failed",
            Failure::Upload(_) => "upload_failed",
        }
    }
}
