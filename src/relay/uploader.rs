//! Where relayed response blobs are uploaded, and with which credentials:
//! IoT Hub file upload (a fresh SAS token each time) or a server with the
//! hub's URL layout (plain-broker mode).

use std::path::PathBuf;

use crate::clock::SharedClock;
use crate::config::Secret;
use crate::hub::credentials::CredentialSource;

use super::error::Failure;

/// Where response blobs go.
#[derive(Clone)]
pub(crate) enum Uploader {
    /// Azure IoT Hub file upload at `https://{host_name}`, authenticated
    /// with a fresh device SAS token for each upload.
    Azure {
        /// The connection string's `HostName`.
        host_name: String,
        /// `DeviceId`.
        device_id: String,
        /// `ModuleId`. IoT Hub offers file upload to devices only, so a
        /// module identity's uploads are refused by the hub.
        module_id: Option<String>,
        /// Mints the SAS token (`current(now).password`).
        credentials: CredentialSource,
        /// Time for token expiry.
        clock: SharedClock,
        /// Extra trust anchors for the hub and blob storage (`hub.ca_file`).
        ca_file: Option<PathBuf>,
    },
    /// A server with the hub's URL layout (`relay.upload_url`, plain-broker
    /// mode). An `http://` base also makes the blob `PUT` plain HTTP (local
    /// stand-ins); `hostName` may carry a port.
    Endpoint {
        /// `relay.upload_url`.
        base_url: String,
        /// The device id in the URL path.
        device_id: String,
        /// What goes in `Authorization`.
        auth: EndpointAuth,
        /// Extra trust anchors.
        ca_file: Option<PathBuf>,
    },
    /// No file upload: large text answers that still fit a method response
    /// go inline, others are answered 413.
    Disabled,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uploader::Azure {
                host_name,
                device_id,
                module_id,
                ..
            } => f
                .debug_struct("Azure")
                .field("host_name", host_name)
                .field("device_id", device_id)
                .field("module_id", module_id)
                .finish_non_exhaustive(),
            Uploader::Endpoint {
                base_url,
                device_id,
                ..
            } => f
                .debug_struct("Endpoint")
                .field("base_url", base_url)
                .field("device_id", device_id)
                .finish_non_exhaustive(),
            Uploader::Disabled => f.write_str("Disabled"),
        }
    }
}

/// Authorization for [`Uploader::Endpoint`].
#[derive(Clone)]
pub(crate) enum EndpointAuth {
    /// The device's own credentials: a SAS token as is, otherwise Basic
    /// with the broker username and password.
    Device {
        /// The hub session's credential source.
        credentials: CredentialSource,
        /// Time for token expiry.
        clock: SharedClock,
    },
}

impl Uploader {
    /// The device id in upload URLs; `None` when uploads are off.
    pub(crate) fn device_id(&self) -> Option<&str> {
        match self {
            Uploader::Azure { device_id, .. } | Uploader::Endpoint { device_id, .. } => {
                Some(device_id)
            }
            Uploader::Disabled => None,
        }
    }

    /// A fresh `Authorization` value, minted at each upload so it is never
    /// stale.
    pub(crate) fn authorization(&self) -> Result<Option<Secret>, Failure> {
        let (credentials, clock, sas_only) = match self {
            Uploader::Azure {
                credentials, clock, ..
            } => (credentials, clock, true),
            Uploader::Endpoint {
                auth: EndpointAuth::Device { credentials, clock },
                ..
            } => (credentials, clock, false),
            Uploader::Disabled => return Ok(None),
        };
        // An expired pre-made token is still tried: the clock may be wrong.
        let creds = credentials
            .current(clock.now())
            .ok()
            .or_else(|| credentials.expired_fallback())
            .ok_or_else(|| Failure::Upload("no usable device credentials".into()))?;
        match creds.password {
            Some(p) if p.expose().starts_with("SharedAccessSignature ") => Ok(Some(p)),
            _ if sas_only => Err(Failure::Upload(
                "IoT Hub file upload needs a SAS token; x509 devices are not supported".into(),
            )),
            None if creds.username.is_empty() => Ok(None),
            password => {
                use base64::Engine as _;
                let pair = format!(
                    "{}:{}",
                    creds.username,
                    password.as_ref().map(Secret::expose).unwrap_or_default()
                );
                Ok(Some(Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))))
            }
        }
    }
}
