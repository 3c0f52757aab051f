//! The state the Cloud Relay API's handlers share: the API's own
//! ([`serve`](super::serve)) and the upload endpoint's
//! ([`upload`](super::upload)).

use std::time::Duration;

use super::auth::Authenticator;
use super::blobs::BlobStore;
use super::broker::Broker;
use super::devices::DeviceCheck;

/// State shared by the handlers.
pub(crate) struct App {
    /// The one MQTT connection calls go out on.
    pub(crate) broker: Broker,
    /// Who may call the API.
    pub(crate) auth: Authenticator,
    /// Request and upload blobs on disk.
    pub(crate) blobs: BlobStore,
    /// Who may upload.
    pub(crate) devices: DeviceCheck,
    /// `{scheme}://{host[:port]}` devices use.
    pub(crate) public_url: String,
    /// `host[:port]` of it: the upload slot's `hostName`.
    pub(crate) public_host: String,
    /// The method every API call goes out as.
    pub(crate) method_name: String,
    /// Without `responseTimeout`.
    pub(crate) response_timeout: Duration,
    /// What `responseTimeout` is clamped to.
    pub(crate) bounds: (Duration, Duration),
    /// Request bodies above this go through the blob store.
    pub(crate) inline_limit: usize,
}
