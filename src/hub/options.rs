//! Builds rumqttc's connection options from the validated hub config.

use std::path::Path;

use rumqttc::{
    LastWill, MqttOptions, Proxy, ProxyAuth, ProxyType, QoS, TlsConfiguration, Transport,
};

use crate::config::{ClientCert, HubConfig, HubEndpoint, Transport as WireTransport};
use crate::tls::{self, TlsError};

use super::topics::Topics;

/// Largest packet either way: 256 KiB telemetry (the hub's limit) plus
/// room for the topic and property bag.
pub(crate) const MAX_PACKET_BYTES: usize = 256 * 1024 + 8 * 1024;
/// QoS 1 publishes awaiting PUBACK at once (also the packet-id range):
/// the outbox's window ([`crate::outbox::hub_sink::MAX_IN_FLIGHT`]) plus
/// room for the session's own publishes (reported properties).
pub(crate) const MAX_IN_FLIGHT: u16 = 160;
/// Requests queued towards the event loop.
pub(crate) const REQUEST_CAPACITY: usize = 256;

/// Where and how the session connects.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Host for TCP and TLS (SNI, certificate name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS on.
    pub tls: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Options could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OptionsError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The proxy setting is not `http://[user:pass@]host:port`.
    #[error("hub.proxy: {0:?} is not http://[user:password@]host:port")]
    Proxy(String),
}

/// The connection target for `cfg`.
pub(crate) fn target(cfg: &HubConfig) -> Target {
    let ws = cfg.transport == WireTransport::WebSocket;
    match &cfg.endpoint {
        HubEndpoint::Azure(a) => Target {
            host: a
                .gateway_host_name
                .clone()
                .unwrap_or_else(|| a.host_name.clone()),
            port: a.port.unwrap_or(if ws { 443 } else { 8883 }),
            tls: true,
        },
        HubEndpoint::Broker(b) => Target {
            host: b.host.clone(),
            port: b.port,
            tls: b.tls,
        },
    }
}

fn client_cert(cfg: &HubConfig) -> Option<&ClientCert> {
    match &cfg.endpoint {
        HubEndpoint::Azure(a) => match &a.auth {
            crate::config::AzureAuth::X509(cc) => Some(cc),
            _ => None,
        },
        HubEndpoint::Broker(b) => b.client_cert.as_ref(),
    }
}

/// rumqttc options for `cfg`, without credentials (set per attempt).
///
/// # Errors
/// When TLS files cannot be loaded or the proxy setting is malformed.
pub(crate) fn build(
    cfg: &HubConfig,
    client_id: &str,
    topics: &Topics,
) -> Result<MqttOptions, OptionsError> {
    let t = target(cfg);
    let ws = cfg.transport == WireTransport::WebSocket;
    let mut opts = if ws {
        let path = match &cfg.endpoint {
            HubEndpoint::Azure(_) => "/$iothub/websocket",
            HubEndpoint::Broker(b) => b.path.as_str(),
        };
        let scheme = if t.tls { "wss" } else { "ws" };
        MqttOptions::new(
            client_id,
            format!("{scheme}://{}:{}{path}", t.host, t.port),
            t.port,
        )
    } else {
        MqttOptions::new(client_id, t.host.clone(), t.port)
    };
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(MAX_IN_FLIGHT)
        .set_manual_acks(true);
    if t.tls {
        opts.set_transport(tls_transport(cfg.ca_file.as_deref(), client_cert(cfg), ws)?);
    } else if ws {
        opts.set_transport(Transport::Ws);
    }
    if let Some(p) = &cfg.proxy {
        opts.set_proxy(parse_proxy(p)?);
    }
    if let HubEndpoint::Broker(_) = cfg.endpoint {
        // The broker announces our death when we cannot (crash, power cut,
        // half-open link): the cloud side answers "not connected" at once.
        opts.set_last_will(LastWill::new(
            topics.status(),
            r#"{"online":false}"#,
            QoS::AtLeastOnce,
            true,
        ));
    }
    Ok(opts)
}

/// TLS with the trust roots (plus `ca_file`) and client certificate `cert`,
/// over TCP or, with `ws`, over a WebSocket: the hub's transport, and DPS's.
///
/// # Errors
/// When the TLS files cannot be loaded.
pub(crate) fn tls_transport(
    ca_file: Option<&Path>,
    cert: Option<&ClientCert>,
    ws: bool,
) -> Result<Transport, OptionsError> {
    let tls = TlsConfiguration::Rustls(tls::client_config(ca_file, cert)?);
    Ok(if ws {
        Transport::Wss(tls)
    } else {
        Transport::Tls(tls)
    })
}

/// `http://[user:password@]host:port` as rumqttc's proxy setting.
pub(crate) fn parse_proxy(s: &str) -> Result<Proxy, OptionsError> {
    let bad = || OptionsError::Proxy(redact_userinfo(s));
    let rest = s.strip_prefix("http://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                ProxyAuth::Basic {
                    username: u.to_string(),
                    password: p.to_string(),
                },
                hp,
            )
        }
        None => (ProxyAuth::None, rest),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Proxy {
        ty: ProxyType::Http,
        auth,
        addr: host.to_string(),
        port,
    })
}

/// Proxy URLs may carry a password: never echo it.
fn redact_userinfo(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((_, hp)) => format!("http://<redacted>@{hp}"),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_with_credentials_parses_and_errors_hide_them() {
        let p = parse_proxy("http://u:s3cret@proxy.local:3128").unwrap();
        assert_eq!((p.addr.as_str(), p.port), ("proxy.local", 3128));
        assert!(matches!(p.auth, ProxyAuth::Basic { .. }));
        let err = parse_proxy("socks5://u:s3cret@proxy.local").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn proxy_without_port_is_refused() {
        assert!(parse_proxy("http://proxy.local").is_err());
    }
}
