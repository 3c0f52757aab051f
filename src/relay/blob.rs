//! Request bodies fetched from a blob SAS URL, and response bodies pushed
//! through IoT Hub file upload (azure-iothub-mqtt.md §5, cloud-relay.md §3):
//! `POST /devices/{id}/files` for a blob SAS, `PUT` the blob, then
//! `POST /devices/{id}/files/notifications`, the last one even when the
//! upload failed so the hub frees the upload slot.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::hub::credentials::API_VERSION;
use crate::hub::sas::url_encode;

use super::controller::{classify, error_chain, is_local, read_bounded};
use super::error::{Failure, RelayError};
use super::uploader::Uploader;

/// The reply to step 1.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadSlot {
    correlation_id: String,
    host_name: String,
    container_name: String,
    blob_name: String,
    sas_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    correlation_id: &'a str,
    is_success: bool,
    status_code: u16,
    status_description: &'a str,
}

/// The HTTPS client for the cloud side: blob downloads and uploads.
#[derive(Debug)]
pub(crate) struct Cloud {
    client: reqwest::Client,
    uploader: Uploader,
    /// `{scheme}://{host}` of the file-upload API, `None` when disabled.
    base: Option<String>,
}

impl Cloud {
    /// Builds the client: system roots plus the uploader's `ca_file`.
    ///
    /// # Errors
    /// An unreadable `ca_file` or an unusable upload URL.
    pub(crate) fn new(uploader: Uploader, timeout: Duration) -> Result<Self, RelayError> {
        let (ca_file, base) = match &uploader {
            Uploader::Azure {
                host_name, ca_file, ..
            } => (ca_file.clone(), Some(format!("https://{host_name}"))),
            Uploader::Endpoint {
                base_url, ca_file, ..
            } => {
                let url = Url::parse(base_url).map_err(|e| RelayError::UploadUrl {
                    url: base_url.clone(),
                    reason: e.to_string(),
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(RelayError::UploadUrl {
                        url: base_url.clone(),
                        reason: "must be an absolute http(s) URL".into(),
                    });
                }
                (
                    ca_file.clone(),
                    Some(base_url.trim_end_matches('/').to_string()),
                )
            }
            Uploader::Disabled => (None, None),
        };
        let tls = crate::tls::client_config(ca_file.as_deref(), None)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(|source| RelayError::Client {
                which: "cloud",
                source,
            })?;
        Ok(Self {
            client,
            uploader,
            base,
        })
    }

    /// Whether responses can be uploaded.
    pub(crate) fn can_upload(&self) -> bool {
        self.base.is_some()
    }

    /// Downloads a request body with a plain GET of its SAS URL: HTTPS,
    /// or plain HTTP to a loopback host (local stand-ins).
    ///
    /// # Errors
    /// [`Failure::InvalidRequest`] for an unusable URL,
    /// [`Failure::TooLarge`] past `max` bytes, [`Failure::BlobDownload`]
    /// otherwise.
    pub(crate) async fn download(&self, sas_url: &str, max: usize) -> Result<Vec<u8>, Failure> {
        let url = Url::parse(sas_url)
            .map_err(|e| Failure::InvalidRequest(format!("blobUrl is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        let allowed = match url.scheme() {
            "https" => !host.is_empty(),
            "http" => is_local(host),
            _ => false,
        };
        if !allowed || !url.username().is_empty() || url.password().is_some() {
            return Err(Failure::InvalidRequest(
                "blobUrl must be an https URL without credentials".into(),
            ));
        }
        let mut resp = self.client.get(url).send().await.map_err(download_error)?;
        if !resp.status().is_success() {
            return Err(Failure::BlobDownload(format!(
                "blob storage answered {}",
                resp.status()
            )));
        }
        read_bounded(&mut resp, max, "request blob")
            .await
            .map_err(|f| match f {
                Failure::TooLarge(_) | Failure::Timeout(_) => f,
                other => Failure::BlobDownload(other.to_string()),
            })
    }

    /// Uploads `bytes` as blob `name` (`{MethodName}/{uuid}`) and notifies
    /// the hub of the outcome.
    ///
    /// # Errors
    /// [`Failure::Upload`] when any step before the notification fails;
    /// a failed notification after a good upload is only logged, as the
    /// blob is in place for the Cloud Relay to read.
    pub(crate) async fn upload(
        &self,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Failure> {
        let (Some(base), Some(device_id)) = (&self.base, self.uploader.device_id()) else {
            return Err(Failure::Upload("file upload is not configured".into()));
        };
        let device = url_encode(device_id);
        let auth = self.uploader.authorization()?;
        let slot = self
            .request_slot(base, &device, name, auth.as_ref())
            .await?;
        let put = self.put_blob(base, &slot, content_type, bytes).await;
        let (ok, code, description) = match &put {
            Ok(code) => (true, *code, "uploaded".to_string()),
            Err(e) => (false, 500, e.to_string()),
        };
        let note = Notification {
            correlation_id: &slot.correlation_id,
            is_success: ok,
            status_code: code,
            status_description: &description,
        };
        let url = format!("{base}/devices/{device}/files/notifications?api-version={API_VERSION}");
        let mut req = self.client.post(url).json(&note);
        if let Some(a) = &auth {
            req = req.header(AUTHORIZATION, a.expose());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "file upload notification refused"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e.without_url()), "file upload notification failed")
            }
        }
        put.map(|_| ())
    }

    async fn request_slot(
        &self,
        base: &str,
        device: &str,
        name: &str,
        auth: Option<&Secret>,
    ) -> Result<UploadSlot, Failure> {
        let url = format!("{base}/devices/{device}/files?api-version={API_VERSION}");
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .json(&serde_json::json!({ "blobName": name }));
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a.expose());
        }
        let resp = req.send().await.map_err(upload_error)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure::Upload(format!(
                "the hub refused the upload slot: {status}"
            )));
        }
        let bytes = resp.bytes().await.map_err(upload_error)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Upload(format!("the hub's upload slot is not understood: {e}")))
    }

    /// Step 2; the blob storage status on success.
    async fn put_blob(
        &self,
        base: &str,
        slot: &UploadSlot,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<u16, Failure> {
        // hostName comes from the hub; refuse anything that would change
        // the URL's shape rather than the host.
        if slot.host_name.is_empty()
            || slot
                .host_name
                .contains(|c: char| matches!(c, '/' | '@' | '?' | '#' | '\\') || c.is_whitespace())
        {
            return Err(Failure::Upload(format!(
                "unusable blob host {:?}",
                slot.host_name
            )));
        }
        let scheme = if base.starts_with("http://") {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/{}/{}{}",
            slot.host_name, slot.container_name, slot.blob_name, slot.sas_token
        );
        let url =
            Url::parse(&url).map_err(|e| Failure::Upload(format!("unusable blob URL: {e}")))?;
        let resp = self
            .client
            .put(url)
            .header("x-ms-blob-type", "BlockBlob")
            .header(CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(upload_error)?;
        let status = resp.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(Failure::Upload(format!("blob storage answered {status}")))
        }
    }
}

fn download_error(e: reqwest::Error) -> Failure {
    match classify(e) {
        Failure::Timeout(d) => Failure::Timeout(d),
        other => Failure::BlobDownload(other.to_string()),
    }
}

fn upload_error(e: reqwest::Error) -> Failure {
    match classify(e) {
        Failure::Timeout(d) => Failure::Timeout(d),
        other => Failure::Upload(other.to_string()),
    }
}
