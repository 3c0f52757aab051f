//! `[hub]`: Azure IoT Hub from a connection string, or a plain broker URL.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{positive, split_url, Ctx};
use crate::config::connection_string::{ConnectionAuth, ConnectionString};
use crate::config::raw::RawHub;
use crate::config::{
    AzureAuth, AzureHub, BrokerHub, ClientCert, ConfigError, HubConfig, HubEndpoint, Transport,
};

const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(240);
const DEFAULT_SAS_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const AZURE_DEFAULT_RATE: u32 = 100;
/// The hub closes idle links after 1.5 × keep-alive, capped at 1767 s, so
/// this is the largest value that works (spec §3).
const AZURE_MAX_KEEP_ALIVE: Duration = Duration::from_secs(1177);
/// rumqttc refuses keep-alives under 5 s.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Default WebSocket path for `wss://host` without one (EMQX, HiveMQ,
/// Mosquitto setups commonly use it).
const DEFAULT_WS_PATH: &str = "/mqtt";

/// Resolves `[hub]`.
pub(super) fn hub(mut raw: RawHub, cx: &mut Ctx) -> Result<HubConfig, ConfigError> {
    let transport = match raw.transport.as_deref() {
        None | Some("mqtt") => Transport::Mqtt,
        Some("websocket") => Transport::WebSocket,
        Some(other) => {
            return Err(ConfigError::invalid(
                "hub.transport",
                format!("unknown transport {other:?} (use \"mqtt\" or \"websocket\")"),
            ))
        }
    };
    let ca_file = raw
        .ca_file
        .clone()
        .map(|p| cx.readable_file("hub.ca_file", p))
        .transpose()?;
    let proxy = raw.proxy.clone();
    if let Some(proxy) = &proxy {
        if !proxy.starts_with("http://") {
            return Err(ConfigError::invalid(
                "hub.proxy",
                "must be http://host:port",
            ));
        }
        split_url(proxy).map_err(|m| ConfigError::invalid("hub.proxy", m))?;
    }
    let keep_alive = raw.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
    if keep_alive < MIN_KEEP_ALIVE {
        return Err(ConfigError::invalid(
            "hub.keep_alive",
            "must be at least 5s",
        ));
    }
    let sas_ttl = raw.sas_ttl.unwrap_or(DEFAULT_SAS_TTL);
    if sas_ttl < Duration::from_secs(60) {
        return Err(ConfigError::invalid("hub.sas_ttl", "must be at least 60s"));
    }
    let connect_timeout = positive(
        "hub.connect_timeout",
        raw.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    )?;
    let rate = raw.max_messages_per_second;

    let has_cs = raw.connection_string.is_some() || raw.connection_string_file.is_some();
    let mut provisioning = None;
    let (endpoint, transport, max_messages_per_second) = match (has_cs, raw.url.is_some()) {
        _ if raw.provisioning.is_some() => {
            if has_cs || raw.url.is_some() {
                return Err(ConfigError::invalid(
                    "hub.provisioning",
                    "replaces connection_string and url: remove them, or remove \
                     [hub.provisioning]",
                ));
            }
            if keep_alive > AZURE_MAX_KEEP_ALIVE {
                return Err(ConfigError::invalid(
                    "hub.keep_alive",
                    "Azure IoT Hub allows at most 1177s (19m 37s)",
                ));
            }
            azure_only_keys(&raw, "with [hub.provisioning] DPS assigns the identity")?;
            let raw_provisioning = raw.provisioning.take().unwrap_or_default();
            let cert = client_cert(raw.client_cert_file, raw.client_key_file, cx)?;
            let (azure, p) =
                super::provisioning::provisioning(raw_provisioning, cert, raw.port, cx)?;
            provisioning = Some(p);
            (
                HubEndpoint::Azure(azure),
                transport,
                unlimited_if_zero(rate.unwrap_or(AZURE_DEFAULT_RATE)),
            )
        }
        (true, true) => {
            return Err(ConfigError::invalid(
                "hub",
                "set either connection_string or url, not both",
            ))
        }
        (false, false) => return Err(ConfigError::invalid(
            "hub",
            "set connection_string (Azure IoT Hub), [hub.provisioning] (Azure DPS) or url (MQTT \
                 broker)",
        )),
        (true, false) => {
            if keep_alive > AZURE_MAX_KEEP_ALIVE {
                return Err(ConfigError::invalid(
                    "hub.keep_alive",
                    "Azure IoT Hub allows at most 1177s (19m 37s)",
                ));
            }
            let azure = azure(raw, cx)?;
            (
                HubEndpoint::Azure(azure),
                transport,
                unlimited_if_zero(rate.unwrap_or(AZURE_DEFAULT_RATE)),
            )
        }
        (false, true) => {
            if raw.sas_ttl.is_some() {
                cx.warn(
                    "hub.sas_ttl",
                    "only used with an Azure connection string; ignored",
                );
            }
            let (broker, transport) = broker(raw, transport, cx)?;
            (
                HubEndpoint::Broker(broker),
                transport,
                rate.and_then(unlimited_if_zero),
            )
        }
    };
    if proxy.is_some() && transport != Transport::WebSocket {
        cx.warn(
            "hub.proxy",
            "only used with the websocket transport; ignored",
        );
    }
    Ok(HubConfig {
        endpoint,
        transport,
        ca_file,
        proxy,
        keep_alive,
        sas_ttl,
        connect_timeout,
        max_messages_per_second,
        provisioning,
    })
}

/// `0` spells "unlimited" in the file.
fn unlimited_if_zero(rate: u32) -> Option<u32> {
    (rate > 0).then_some(rate)
}

fn azure(raw: RawHub, cx: &mut Ctx) -> Result<AzureHub, ConfigError> {
    azure_only_keys(
        &raw,
        "with Azure the connection string carries the identity",
    )?;
    let key = if raw.connection_string.is_some() {
        "hub.connection_string"
    } else {
        "hub.connection_string_file"
    };
    let text = cx
        .secret(
            "hub",
            "connection_string",
            raw.connection_string,
            raw.connection_string_file,
        )?
        .unwrap_or_else(|| crate::config::Secret::new(""));
    let cs = ConnectionString::parse(text.expose())
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
    for unknown in &cs.unknown_keys {
        cx.warn(
            key,
            format_args!("unknown key {unknown} ignored (keys are case-sensitive)"),
        );
    }
    let cert = client_cert(raw.client_cert_file, raw.client_key_file, cx)?;
    let auth = match cs.auth {
        ConnectionAuth::X509 => AzureAuth::X509(cert.ok_or_else(|| {
            ConfigError::invalid(
                "hub.client_cert_file",
                "required with x509=true: set client_cert_file and client_key_file (PEM)",
            )
        })?),
        _ if cert.is_some() => {
            return Err(ConfigError::invalid(
                "hub.client_cert_file",
                "only used with x509=true in the connection string",
            ))
        }
        ConnectionAuth::SharedAccessKey(k) => AzureAuth::SharedAccessKey(k),
        ConnectionAuth::SharedAccessSignature { token, expires_at } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if expires_at <= now {
                cx.warn(
                    key,
                    format_args!(
                        "the SharedAccessSignature expired at {}; tether cannot renew it, \
                         use a SharedAccessKey or a fresh token",
                        humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_secs(expires_at)
                        )
                    ),
                );
            }
            AzureAuth::SharedAccessSignature { token, expires_at }
        }
    };
    Ok(AzureHub {
        host_name: cs.host_name,
        gateway_host_name: cs.gateway_host_name,
        device_id: cs.device_id,
        module_id: cs.module_id,
        auth,
        port: raw.port,
    })
}

/// Refuses the plain-broker keys in Azure mode, saying `why` they are
/// not needed.
fn azure_only_keys(raw: &RawHub, why: &str) -> Result<(), ConfigError> {
    for (key, set) in [
        ("device_id", raw.device_id.is_some()),
        ("username", raw.username.is_some()),
        (
            "password",
            raw.password.is_some() || raw.password_file.is_some(),
        ),
        ("allow_insecure", raw.allow_insecure.is_some()),
    ] {
        if set {
            return Err(ConfigError::invalid(
                format!("hub.{key}"),
                format!("only used with hub.url (a plain broker); {why}"),
            ));
        }
    }
    Ok(())
}

fn broker(
    raw: RawHub,
    transport: Transport,
    cx: &mut Ctx,
) -> Result<(BrokerHub, Transport), ConfigError> {
    let url = raw.url.as_deref().unwrap_or_default();
    let bad_url = |m: String| ConfigError::invalid("hub.url", m);
    let parts = split_url(url).map_err(bad_url)?;
    let (tls, ws, default_port) = match parts.scheme.as_str() {
        "mqtts" => (true, false, 8883),
        "mqtt" => (false, false, 1883),
        "wss" => (true, true, 443),
        "ws" => (false, true, 80),
        other => {
            return Err(bad_url(format!(
                "unsupported scheme {other:?} (use mqtts://, mqtt://, wss:// or ws://)"
            )))
        }
    };
    if url.contains(['?', '#']) {
        return Err(bad_url(
            "query strings and fragments are not supported".to_owned(),
        ));
    }
    let path = match (ws, parts.path) {
        (true, "") => DEFAULT_WS_PATH.to_owned(),
        (true, p) => p.to_owned(),
        (false, "" | "/") => String::new(),
        (false, _) => {
            return Err(bad_url(
                "a path is only used with wss:// or ws://".to_owned(),
            ))
        }
    };
    let transport = match (ws, transport) {
        (true, _) => Transport::WebSocket,
        (false, Transport::Mqtt) => Transport::Mqtt,
        (false, Transport::WebSocket) => {
            return Err(ConfigError::invalid(
                "hub.transport",
                "\"websocket\" with a broker needs a wss:// (or ws://) url",
            ))
        }
    };
    if !tls && raw.allow_insecure != Some(true) {
        return Err(bad_url(format!(
            "{}:// (plaintext) needs allow_insecure = true",
            parts.scheme
        )));
    }
    if tls && raw.allow_insecure == Some(true) {
        cx.warn("hub.allow_insecure", "has no effect with a TLS url");
    }
    let port = match (parts.port, raw.port) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::invalid(
                "hub.port",
                "conflicts with the port in hub.url; set it in one place",
            ))
        }
        (a, b) => b.or(a).unwrap_or(default_port),
    };
    let host = parts.host.to_owned();
    let device_id = raw.device_id.ok_or_else(|| {
        ConfigError::invalid(
            "hub.device_id",
            "required with hub.url (the MQTT client id and topic scope)",
        )
    })?;
    if device_id.is_empty()
        || device_id.contains(|c: char| "/+#".contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::invalid(
            "hub.device_id",
            format!(
                "{device_id:?} must be non-empty without /, +, # or spaces (it scopes the topics)"
            ),
        ));
    }
    let password = cx.secret("hub", "password", raw.password, raw.password_file)?;
    if password.is_some() && raw.username.is_none() {
        return Err(ConfigError::invalid(
            "hub.password",
            "needs hub.username (MQTT 3.1.1 sends a password only with a username)",
        ));
    }
    if password.is_some() && !tls {
        cx.warn("hub.password", "is sent in plaintext over mqtt://");
    }
    let client_cert = client_cert(raw.client_cert_file, raw.client_key_file, cx)?;
    if client_cert.is_some() && !tls {
        return Err(ConfigError::invalid(
            "hub.client_cert_file",
            "needs a TLS url (mqtts:// or wss://)",
        ));
    }
    let broker = BrokerHub {
        host,
        port,
        tls,
        path,
        device_id,
        username: raw.username,
        password,
        client_cert,
    };
    Ok((broker, transport))
}

/// Both files or neither; each must be readable now.
fn client_cert(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cx: &mut Ctx,
) -> Result<Option<ClientCert>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            "hub.client_key_file",
            "required when client_cert_file is set",
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            "hub.client_cert_file",
            "required when client_key_file is set",
        )),
        (Some(cert), Some(key)) => {
            let cert_file = cx.readable_file("hub.client_cert_file", cert)?;
            let key_file = cx.readable_file("hub.client_key_file", key)?;
            if let Some(mode) = super::loose_mode(&key_file) {
                cx.warn(
                    "hub.client_key_file",
                    format_args!(
                        "{} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
                        key_file.display(),
                        key_file.display()
                    ),
                );
            }
            Ok(Some(ClientCert {
                cert_file,
                key_file,
            }))
        }
    }
}
