//! Component tests of the relay: a direct-method call in, an answer out,
//! against real HTTP servers on loopback (the ECLYPSE stand-in, blob
//! sources and upload hubs of `tether-testkit`, which carry no tether type)
//! and controllers that misbehave at the TCP level. The whole path through
//! the broker is `tests/it/relay_e2e.rs`'s.
//!
//! Areas: [`requests`] (cloud-relay.md §1, §5), [`responses`] (§2, §3,
//! §5), [`limits`] (admission, de-duplication, schedules, metrics, audit),
//! [`chaos_controller`]. This file holds their shared configs, calls and
//! answer decoding.

mod chaos_controller;
mod limits;
mod requests;
mod responses;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tether_testkit::http::{eclypse, Eclypse, UploadHub, ECLYPSE_PASSWORD, ECLYPSE_USER};
use tether_testkit::ManualClock;

use crate::config::{
    AzureAuth, AzureHub, BrokerHub, ControllerConfig, HubEndpoint, RelayConfig, Secret, SecretBytes,
};
use crate::hub::credentials::CredentialSource;
use crate::hub::methods::{MethodCall, MethodResponse};
use crate::relay::{EndpointAuth, Relay, Uploader};

/// The device id used by the uploaders.
pub(super) const DEVICE: &str = "dev1";
/// The clock every SAS token is minted at.
pub(super) const NOW_UNIX: u64 = 1_700_000_000;

/// Relay defaults, with a test-sized timeout.
pub(super) fn relay_config() -> RelayConfig {
    RelayConfig {
        method_name: "RestApi".into(),
        allowed_paths: Vec::new(),
        max_concurrent: 4,
        max_queued: 16,
        request_timeout: Duration::from_secs(2),
        inline_limit: 16384,
        upload_url: None,
        schedules: Vec::new(),
    }
}

/// A controller at `base_url` with the stand-in's credentials.
pub(super) fn controller_config(base_url: &str) -> ControllerConfig {
    ControllerConfig {
        base_url: base_url.into(),
        username: Some(ECLYPSE_USER.into()),
        password: Some(Secret::new(ECLYPSE_PASSWORD)),
        ca_file: None,
        accept_invalid_certs: false,
    }
}

/// A relay on a plain-HTTP ECLYPSE stand-in, upload disabled.
pub(super) async fn plain_relay(cfg: RelayConfig) -> (Eclypse, Relay) {
    let eclypse = eclypse().await;
    let relay = Relay::new(
        &cfg,
        &controller_config(&eclypse.base_url()),
        Uploader::Disabled,
    )
    .expect("relay builds");
    (eclypse, relay)
}

/// A `RestApi` call on connection 1.
pub(super) fn call(rid: &str, payload: &Value) -> MethodCall {
    call_on(1, rid, payload.to_string().as_bytes())
}

/// A call with raw payload bytes on `connection`.
pub(super) fn call_on(connection: u64, rid: &str, payload: &[u8]) -> MethodCall {
    MethodCall {
        name: "RestApi".into(),
        rid: rid.into(),
        connection,
        payload: payload.to_vec(),
    }
}

/// Decodes an answer, checking the invariants every answer keeps: a JSON
/// object whose root `status` is the method status.
pub(super) fn decode(resp: &MethodResponse) -> Value {
    let v: Value = serde_json::from_slice(&resp.body).expect("answer is JSON");
    assert!(v.is_object(), "answer is an object: {v}");
    assert_eq!(
        v["status"],
        u64::from(resp.status),
        "root status is the method status: {v}"
    );
    assert!(v["headers"].is_object(), "headers present: {v}");
    v
}

/// The `error` code of a failure answer, checking its shape.
pub(super) fn error_of(resp: &MethodResponse) -> String {
    let v = decode(resp);
    assert_eq!(
        v["headers"],
        serde_json::json!({"Content-Type": "application/json"}),
        "{v}"
    );
    let body: Value = serde_json::from_str(v["body"].as_str().expect("body is text"))
        .expect("error body is JSON");
    assert!(body["detail"].is_string(), "{body}");
    body["error"].as_str().expect("error is text").to_string()
}

/// `Basic base64(user:password)`.
pub(super) fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The controller's expected Authorization.
pub(super) fn eclypse_basic() -> String {
    basic(ECLYPSE_USER, ECLYPSE_PASSWORD)
}

/// Writes a PEM into `dir` and returns its path.
pub(super) fn write_pem(dir: &tempfile::TempDir, name: &str, pem: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

/// Credentials of an Azure device on `host` with a device key.
pub(super) fn azure_credentials(host: &str) -> CredentialSource {
    CredentialSource::new(
        &HubEndpoint::Azure(AzureHub {
            host_name: host.into(),
            gateway_host_name: None,
            device_id: DEVICE.into(),
            module_id: None,
            auth: AzureAuth::SharedAccessKey(SecretBytes(b"device-key".to_vec())),
            port: None,
        }),
        Duration::from_secs(3600),
    )
}

/// Credentials of a plain-broker device with a username and password.
pub(super) fn broker_credentials() -> CredentialSource {
    CredentialSource::new(
        &HubEndpoint::Broker(BrokerHub {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            path: String::new(),
            device_id: DEVICE.into(),
            username: Some(DEVICE.into()),
            password: Some(Secret::new("broker-pw")),
            client_cert: None,
        }),
        Duration::from_secs(3600),
    )
}

/// The Azure uploader for a TLS [`UploadHub`] trusted through `ca_file`.
pub(super) fn azure_uploader(hub: &UploadHub, ca_file: PathBuf) -> Uploader {
    let host = hub.server.host_port();
    Uploader::Azure {
        host_name: host.clone(),
        device_id: DEVICE.into(),
        module_id: None,
        credentials: azure_credentials(&host),
        clock: Arc::new(ManualClock::at_unix(NOW_UNIX)),
        ca_file: Some(ca_file),
    }
}

/// The plain-broker uploader for an HTTP [`UploadHub`], Basic auth.
pub(super) fn endpoint_uploader(hub: &UploadHub, ca_file: Option<PathBuf>) -> Uploader {
    Uploader::Endpoint {
        base_url: hub.server.base_url(),
        device_id: DEVICE.into(),
        auth: EndpointAuth::Device {
            credentials: broker_credentials(),
            clock: Arc::new(ManualClock::at_unix(NOW_UNIX)),
        },
        ca_file,
    }
}
