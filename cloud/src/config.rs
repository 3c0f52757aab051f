//! Settings for `tether-cloud`: the broker connection (both commands) and
//! the HTTP API (`serve`). Built in code ([`ServeConfig::new`]), from the
//! TOML file of `serve --config` ([`ServeConfig::load`]), and overridden by
//! CLI flags.
//!
//! The file, every key but `broker.url` and `blobs.dir` optional:
//! ```toml
//! listen = "0.0.0.0:8080"
//! public_url = "https://relay.example.com"   # how devices reach us
//! device_auth = "broker"                      # or "none"
//! method_name = "RestApi"
//! response_timeout = "30s"
//! inline_limit = 16384
//! max_pending = 1024
//! [broker]
//! url = "mqtts://broker.example.com:8883"
//! username = "cloud"
//! password_file = "/etc/tether/cloud-mqtt-password"
//! # ca_file = "ca.pem"   allow_insecure = false
//! [auth]
//! tokens_file = "/etc/tether/cloud-tokens"   # one token per line
//! # anonymous = true
//! [auth.jwt]
//! algorithm = "RS256"
//! key_file = "/etc/tether/jwt-public.pem"    # the HMAC secret for HS*
//! issuer = "https://login.example.com/"
//! audience = "tether-cloud"
//! # leeway = "30s"
//! [blobs]
//! dir = "/var/lib/tether-cloud/blobs"
//! # max_bytes = 33554432   max_age = "7d"   signing_key_file = "..."
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use tether_protocol::Secret;

use super::error::CloudError;

/// The Cloud Relay's default `responseTimeout` (§4).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The clamp applied to `responseTimeout` (§4: `DirectMethodMin/Max`).
pub const RESPONSE_TIMEOUT_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(5), Duration::from_secs(300));
/// Request bodies above this go through a blob (the Cloud Relay's
/// `MessageSizeThreshold` in its ARM template).
pub const DEFAULT_INLINE_LIMIT: usize = 16 * 1024;
/// Largest blob kept, either way.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 32 * 1024 * 1024;
/// Blobs older than this are deleted (Cloud Relay's 10080 minutes).
pub const DEFAULT_BLOB_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `mqtts://host[:port]`, or `mqtt://host[:port]` with
    /// [`BrokerConfig::allow_insecure`].
    pub url: String,
    /// Allows `mqtt://` (no TLS).
    pub allow_insecure: bool,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<Secret>,
    /// Extra trust anchor for the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
}

impl BrokerConfig {
    /// A broker at `url` without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            allow_insecure: false,
            username: None,
            password: None,
            ca_file: None,
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// Where the broker is, parsed from [`BrokerConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerConfig {
    /// Parses the URL and applies the TLS policy.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, CloudError> {
        let bad = |reason: &str| CloudError::config("broker", format!("{:?}: {reason}", self.url));
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| bad("expected mqtts://host:port"))?;
        let tls = match scheme {
            "mqtts" => true,
            "mqtt" if self.allow_insecure => false,
            "mqtt" => return Err(bad("plain mqtt:// needs --allow-insecure")),
            _ => return Err(bad("the scheme must be mqtts or mqtt")),
        };
        let hostport = rest.trim_end_matches('/');
        if hostport.contains(['/', '@', '?', '#']) {
            return Err(bad("only host and port may follow the scheme"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (h, port_of(p)?),
                None => (h, default_port),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (hostport, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// How clients of the HTTP API authenticate (`Authorization: Bearer`).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Accepted static tokens.
    pub tokens: Vec<Secret>,
    /// Accepted JWTs.
    pub jwt: Option<JwtConfig>,
    /// No authentication at all (local demos); refused together with
    /// tokens or a JWT key so a typo cannot open the API.
    pub anonymous: bool,
}

/// JWT verification: signature, `exp`, `iss` and `aud` are all checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `HS256`, `RS256`, `ES256`, `EdDSA`, ...
    pub algorithm: jsonwebtoken::Algorithm,
    /// The shared secret (HS*) or the public key as PEM (others).
    pub key: Secret,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Duration,
}

/// Who may use the device upload endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAuth {
    /// Anyone (trusted networks, demos).
    None,
    /// Basic credentials the broker accepts (checked with an MQTT CONNECT,
    /// cached briefly), whose username is the device id in the URL:
    /// tether's plain-broker convention.
    Broker,
}

/// The blob store on disk.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// Directory holding both containers.
    pub dir: PathBuf,
    /// Largest blob (and largest API request body).
    pub max_bytes: u64,
    /// Blobs older than this are deleted.
    pub max_age: Duration,
    /// How often the cleanup runs.
    pub cleanup_every: Duration,
    /// Key signing blob URLs. Instances sharing `dir` behind a load
    /// balancer need the same key; `None` draws one at start.
    pub signing_key: Option<Secret>,
}

/// Everything `serve` needs. Fields are public so an in-process caller
/// (tests, `tether demo`) can build it directly.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP listen address (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// How devices reach this server, e.g. `https://relay.example.com`;
    /// without a path. Default `http://{bound address}`.
    pub public_url: Option<String>,
    /// The broker.
    pub broker: BrokerConfig,
    /// API clients.
    pub auth: AuthConfig,
    /// Device uploads.
    pub device_auth: DeviceAuth,
    /// Blob store.
    pub blobs: BlobConfig,
    /// The direct method carrying requests (`RestApi`).
    pub method_name: String,
    /// `responseTimeout` when the client gives none.
    pub response_timeout: Duration,
    /// Clamp for `responseTimeout`.
    pub response_timeout_bounds: (Duration, Duration),
    /// Request bodies above this many bytes go through a blob.
    pub inline_limit: usize,
    /// Calls awaiting an answer at once; more are answered 503.
    pub max_pending: usize,
}

impl ServeConfig {
    /// Defaults around the three settings that have none.
    pub fn new(listen: SocketAddr, broker: BrokerConfig, blob_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            listen,
            public_url: None,
            broker,
            auth: AuthConfig::default(),
            device_auth: DeviceAuth::Broker,
            blobs: BlobConfig {
                dir: blob_dir.into(),
                max_bytes: DEFAULT_MAX_BLOB_BYTES,
                max_age: DEFAULT_BLOB_MAX_AGE,
                cleanup_every: Duration::from_secs(3600),
                signing_key: None,
            },
            method_name: "RestApi".into(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            response_timeout_bounds: RESPONSE_TIMEOUT_BOUNDS,
            inline_limit: DEFAULT_INLINE_LIMIT,
            max_pending: 1024,
        }
    }

    /// Reads the TOML file of `serve --config`. Relative paths are
    /// relative to the file.
    ///
    /// # Errors
    /// An unreadable file, bad syntax, an unknown key or a bad value.
    pub fn load(path: &Path) -> Result<Self, CloudError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CloudError::io("configuration file", path, e))?;
        let raw: RawServe = toml::from_str(&text)
            .map_err(|e| CloudError::config(path.display().to_string(), e.to_string()))?;
        raw.resolve(path.parent().unwrap_or(Path::new(".")))
    }
}

/// Reads a secret file, trimming the trailing newline editors add.
pub(crate) fn read_secret(what: &'static str, path: &Path) -> Result<Secret, CloudError> {
    let text = std::fs::read_to_string(path).map_err(|e| CloudError::io(what, path, e))?;
    Ok(Secret::new(text.trim_end_matches(['\r', '\n'])))
}

/// Reads a token file: one token per line, blank lines and `#` comments
/// ignored.
pub(crate) fn read_tokens(path: &Path) -> Result<Vec<Secret>, CloudError> {
    let text = std::fs::read_to_string(path).map_err(|e| CloudError::io("token file", path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    broker: RawBroker,
    #[serde(default)]
    auth: RawAuth,
    blobs: RawBlobs,
    device_auth: Option<String>,
    method_name: Option<String>,
    #[serde(default, with = "humantime_serde_opt")]
    response_timeout: Option<Duration>,
    inline_limit: Option<usize>,
    max_pending: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: String,
    #[serde(default)]
    allow_insecure: bool,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    tokens_file: Option<PathBuf>,
    #[serde(default)]
    anonymous: bool,
    jwt: Option<RawJwt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    algorithm: String,
    key_file: PathBuf,
    issuer: String,
    audience: String,
    #[serde(default, with = "humantime_serde_opt")]
    leeway: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlobs {
    dir: PathBuf,
    max_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    max_age: Option<Duration>,
    signing_key_file: Option<PathBuf>,
}

impl RawServe {
    fn resolve(self, base: &Path) -> Result<ServeConfig, CloudError> {
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let mut broker = BrokerConfig::new(self.broker.url);
        broker.allow_insecure = self.broker.allow_insecure;
        broker.username = self.broker.username;
        broker.ca_file = self.broker.ca_file.map(rel);
        if let Some(p) = self.broker.password_file {
            broker.password = Some(read_secret("broker.password_file", &rel(p))?);
        }
        broker.endpoint()?;
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let mut cfg = ServeConfig::new(listen, broker, rel(self.blobs.dir));
        cfg.public_url = self.public_url;
        if let Some(p) = self.auth.tokens_file {
            cfg.auth.tokens = read_tokens(&rel(p))?;
        }
        cfg.auth.anonymous = self.auth.anonymous;
        if let Some(j) = self.auth.jwt {
            let algorithm = j.algorithm.parse().map_err(|_| {
                CloudError::config("auth.jwt.algorithm", format!("unknown {:?}", j.algorithm))
            })?;
            cfg.auth.jwt = Some(JwtConfig {
                algorithm,
                key: read_secret("auth.jwt.key_file", &rel(j.key_file))?,
                issuer: j.issuer,
                audience: j.audience,
                leeway: j.leeway.unwrap_or(Duration::from_secs(30)),
            });
        }
        cfg.device_auth = match self.device_auth.as_deref() {
            None | Some("broker") => DeviceAuth::Broker,
            Some("none") => DeviceAuth::None,
            Some(other) => {
                return Err(CloudError::config(
                    "device_auth",
                    format!("{other:?} is not \"broker\" or \"none\""),
                ))
            }
        };
        if let Some(n) = self.blobs.max_bytes {
            cfg.blobs.max_bytes = n;
        }
        if let Some(a) = self.blobs.max_age {
            cfg.blobs.max_age = a;
        }
        if let Some(p) = self.blobs.signing_key_file {
            cfg.blobs.signing_key = Some(read_secret("blobs.signing_key_file", &rel(p))?);
        }
        if let Some(m) = self.method_name {
            cfg.method_name = m;
        }
        if let Some(t) = self.response_timeout {
            cfg.response_timeout = t;
        }
        if let Some(n) = self.inline_limit {
            cfg.inline_limit = n;
        }
        if let Some(n) = self.max_pending {
            cfg.max_pending = n;
        }
        Ok(cfg)
    }
}

/// `"30s"`, `"7d"`: humantime strings for optional durations.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str, insecure: bool) -> Result<Endpoint, CloudError> {
        let mut b = BrokerConfig::new(url);
        b.allow_insecure = insecure;
        b.endpoint()
    }

    #[test]
    fn broker_urls_parse_with_default_ports_and_tls_policy() {
        let e = ep("mqtts://broker.example.com", false).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("broker.example.com", 8883, true)
        );
        let e = ep("mqtt://127.0.0.1:1884", true).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("127.0.0.1", 1884, false));
        assert!(ep("mqtt://127.0.0.1:1884", false).is_err());
        assert!(ep("http://x", true).is_err());
        assert!(ep("mqtts://u:p@x", false).is_err());
        assert!(ep("mqtts://:8883", false).is_err());
    }

    #[test]
    fn toml_file_resolves_relative_paths_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("tokens"), "# ops\ntok-1\n\ntok-2\n").unwrap();
        let file = dir.path().join("cloud.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[broker]\nurl = \"mqtts://b:8883\"\nusername = \"cloud\"\npassword_file = \"pw\"\n[auth]\ntokens_file = \"tokens\"\n[blobs]\ndir = \"blobs\"\nmax_age = \"2d\"\n",
        )
        .unwrap();
        let cfg = ServeConfig::load(&file).unwrap();
        assert_eq!(cfg.broker.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(cfg.auth.tokens.len(), 2);
        assert_eq!(cfg.blobs.dir, dir.path().join("blobs"));
        assert_eq!(cfg.blobs.max_age, Duration::from_secs(2 * 24 * 3600));
        std::fs::write(
            &file,
            "[broker]\nurl = \"mqtts://b\"\n[blobs]\ndir = \"x\"\nbogus = 1\n",
        )
        .unwrap();
        assert!(ServeConfig::load(&file).is_err());
    }
}
