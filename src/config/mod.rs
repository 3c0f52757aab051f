//! Configuration: the TOML file, parsed and validated into typed settings
//! before any task starts. Each component receives only its own section.
//!
//! Layers: `raw` mirrors the file (serde, unknown keys rejected);
//! [`load`]/[`parse`] resolve secrets from files, apply defaults and check
//! every rule, naming the offending key in the error.

pub mod connection_string;
mod error;
pub(crate) mod provisioning;
mod raw;
mod resolve;
pub mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use connection_string::{ConnectionAuth, ConnectionString, ConnectionStringError};
pub use error::ConfigError;
pub use provisioning::{ProvisioningAuth, ProvisioningConfig};
pub use resolve::{load, parse};
pub use summary::summary;
// The `[store]` settings are the outbox crate's types; reading them from the
// file (defaults, checks, error messages) is done here like every section.
pub use tether_outbox::config::{FullPolicy, StoreConfig, StoreEngine};
pub use tether_protocol::Secret;

/// Everything tether needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cloud hub connection.
    pub hub: HubConfig,
    /// The local controller whose REST API the relay calls.
    pub controller: ControllerConfig,
    /// Relay settings (direct method `RestApi`).
    pub relay: RelayConfig,
    /// Durable outbox settings.
    pub store: StoreConfig,
    /// afLib4 serial bridge; `None` when no `[bridge]` device is configured.
    pub bridge: Option<BridgeConfig>,
    /// Local admin API (health, metrics, attribute intake).
    pub admin: AdminConfig,
    /// `[[webhook]]` outbox sinks.
    pub webhooks: Vec<WebhookConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Warnings found while loading (e.g. world-readable secret files):
    /// logged at start and printed by `check-config`.
    pub warnings: Vec<String>,
}

/// How tether reaches its hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Azure IoT Hub or a plain MQTT broker.
    pub endpoint: HubEndpoint,
    /// Raw MQTT over TCP/TLS, or MQTT over WebSocket (TLS on 443).
    pub transport: Transport,
    /// Extra trust anchors (PEM) added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// HTTPS proxy for the WebSocket transport (`http://host:port`).
    pub proxy: Option<String>,
    /// MQTT keep-alive; default 240 s.
    pub keep_alive: Duration,
    /// Lifetime of SAS tokens tether mints; renewed at 80 %. Default 1 h.
    pub sas_ttl: Duration,
    /// Timeout for TCP+TLS+CONNECT; default 30 s.
    pub connect_timeout: Duration,
    /// Upstream pacing; `None` is unlimited (`0` in the file). Default
    /// 100/s for Azure, unlimited for a plain broker.
    pub max_messages_per_second: Option<u32>,
    /// `[hub.provisioning]`: the hub and device id come from DPS; `endpoint`
    /// is then Azure with an empty host name until assigned.
    pub provisioning: Option<ProvisioningConfig>,
}

/// The hub flavour, with its identity and credentials.
#[derive(Debug, Clone)]
pub enum HubEndpoint {
    /// Azure IoT Hub from a device connection string.
    Azure(AzureHub),
    /// Any MQTT broker, using the device-scoped topic scheme.
    Broker(BrokerHub),
}

impl AzureHub {
    /// Whether the hub is known: false while DPS has not assigned one.
    pub fn is_assigned(&self) -> bool {
        !self.host_name.is_empty()
    }
}

impl HubEndpoint {
    /// The device id used in topics.
    pub fn device_id(&self) -> &str {
        match self {
            HubEndpoint::Azure(a) => &a.device_id,
            HubEndpoint::Broker(b) => &b.device_id,
        }
    }
}

/// Azure IoT Hub identity and auth, from the connection string.
#[derive(Debug, Clone)]
pub struct AzureHub {
    /// `HostName`: used in the username and the SAS resource URI.
    pub host_name: String,
    /// `GatewayHostName`: where the TCP/TLS connection goes, when set.
    pub gateway_host_name: Option<String>,
    /// `DeviceId`.
    pub device_id: String,
    /// `ModuleId`.
    pub module_id: Option<String>,
    /// How the device proves its identity.
    pub auth: AzureAuth,
    /// `hub.port`: overrides 8883 (gateways, tests).
    pub port: Option<u16>,
}

/// Azure device authentication.
#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// `SharedAccessKey`: tether mints and renews SAS tokens. Holds the
    /// decoded key bytes (base64 already checked).
    SharedAccessKey(SecretBytes),
    /// `SharedAccessSignature`: a pre-made token; cannot be renewed.
    SharedAccessSignature {
        /// The full `SharedAccessSignature sr=...` token.
        token: Secret,
        /// Its `se` (expiry, Unix seconds).
        expires_at: u64,
    },
    /// `x509=true`: TLS client certificate, no password.
    X509(ClientCert),
}

/// Decoded key bytes that never print.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// A TLS client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// A plain MQTT broker (Mosquitto, EMQX, ...).
#[derive(Debug, Clone)]
pub struct BrokerHub {
    /// Host name or address.
    pub host: String,
    /// Port (default 8883 for mqtts, 1883 for mqtt, 443 for wss).
    pub port: u16,
    /// TLS on (mqtts/wss) or off (mqtt with `allow_insecure = true`).
    pub tls: bool,
    /// WebSocket request path from a `wss://host/path` URL (default
    /// `/mqtt`); empty for `mqtt://` and `mqtts://`.
    pub path: String,
    /// Device id: the MQTT client id and the topic scope.
    pub device_id: String,
    /// Optional username.
    pub username: Option<String>,
    /// Optional password.
    pub password: Option<Secret>,
    /// Optional client certificate.
    pub client_cert: Option<ClientCert>,
}

/// Wire transport to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP (TLS unless the broker config allows plaintext).
    Mqtt,
    /// MQTT over WebSocket Secure (port 443, `/$iothub/websocket` on Azure).
    WebSocket,
}

/// The controller's local REST API.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Base URL; default `https://127.0.0.1` (stored without a trailing `/`).
    pub base_url: String,
    /// Basic auth username.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<Secret>,
    /// Extra trust anchors for the controller's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept self-signed certificates; only allowed for loopback and
    /// link-local hosts.
    pub accept_invalid_certs: bool,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Direct method name; default `RestApi`.
    pub method_name: String,
    /// Allowed path prefixes; empty allows all.
    pub allowed_paths: Vec<String>,
    /// Concurrent controller calls; default 4.
    pub max_concurrent: usize,
    /// Calls waiting for a slot before answering 503; default 16.
    pub max_queued: usize,
    /// Per-request timeout; default 25 s (below the hub's 30 s).
    pub request_timeout: Duration,
    /// Bodies above this many bytes go through blob upload; default 16384.
    pub inline_limit: usize,
    /// Upload endpoint in plain-broker mode (hub file-upload URL layout).
    pub upload_url: Option<String>,
    /// Scheduled REST calls whose results go upstream.
    pub schedules: Vec<ScheduleConfig>,
}

/// One `[[relay.schedule]]` entry.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Name, carried in the upstream message.
    pub name: String,
    /// Period.
    pub every: Duration,
    /// HTTP method.
    pub method: String,
    /// Path relative to the controller base URL.
    pub path: String,
    /// Optional body.
    pub body: Option<String>,
}

/// One `[[webhook]]`: an outbox sink POSTing each message's JSON.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Sink name: the failures' `partnerId`; unique, not `hub`.
    pub name: String,
    /// Endpoint (`https://...`; `http://` only on loopback).
    pub url: String,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<Secret>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Extra query parameters.
    pub query: Vec<(String, String)>,
    /// Trust anchors added for this endpoint (PEM), e.g. a private CA.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout; default 10 s.
    pub timeout: Duration,
}

/// afLib4 serial bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Serial device, e.g. `/dev/ttyS1`.
    pub device: PathBuf,
    /// 9600 (default), 19200, 38400, 57600 or 115200.
    pub baud: u32,
    /// Afero `device-description.json`.
    pub profile: Option<PathBuf>,
    /// GPIO line resetting the MCU: (`/dev/gpiochipN`, line).
    pub mcu_reset_line: Option<(PathBuf, u32)>,
    /// GPIO line on which the MCU resets us.
    pub module_reset_line: Option<(PathBuf, u32)>,
    /// Attributes forwarded upstream; empty = default set.
    pub forward: Vec<u16>,
    /// Answer timeout for cloud set/get; default 25 s.
    pub timeout: Duration,
}

/// Local admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where to listen; `None` (the default) disables the admin API.
    pub listen: Option<AdminListen>,
    /// Bearer token for `/v1/` routes (required on TCP).
    pub token: Option<Secret>,
}

/// Admin listener address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Log filter, e.g. `info` or `tether=debug,info` (`logging::parse_filter`);
    /// `RUST_LOG` wins when it parses.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, journald-friendly (no timestamps under systemd).
    Text,
    /// One JSON object per line.
    Json,
}
