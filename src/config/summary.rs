//! The human summary `tether check-config` prints for a valid config: what
//! tether will connect to and how, never a secret, then the warnings.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::{
    AdminListen, AzureAuth, Config, FullPolicy, HubEndpoint, LogFormat, StoreEngine, Transport,
};

/// Renders `cfg` as a short multi-line summary, ending with its warnings.
/// Credentials appear only as their kind ("SAS key", "password set").
pub fn summary(cfg: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let mut line = |label: &str, text: String| {
        let _ = writeln!(out, "{label:<11} {text}");
    };
    let hub = &cfg.hub;
    let wss = hub.transport == Transport::WebSocket;
    match &hub.endpoint {
        HubEndpoint::Azure(a) => {
            let mut text = match &hub.provisioning {
                Some(p) => format!(
                    "Azure IoT Hub assigned by DPS {} (ID scope {}, registration {})",
                    p.global_endpoint, p.id_scope, p.registration_id
                ),
                None => format!("Azure IoT Hub {}", a.host_name),
            };
            if let Some(gw) = &a.gateway_host_name {
                let _ = write!(text, " via gateway {gw}");
            }
            let _ = write!(text, ", device {}", a.device_id);
            if let Some(m) = &a.module_id {
                let _ = write!(text, ", module {m}");
            }
            line("hub:", text);
            line(
                "auth:",
                match &a.auth {
                    AzureAuth::SharedAccessKey(_) if hub.provisioning.is_some() => format!(
                        "{} (SAS tokens valid {}, renewed at 80%)",
                        match &hub.provisioning {
                            Some(super::ProvisioningConfig {
                                auth:
                                    super::ProvisioningAuth::Key {
                                        from_group: true, ..
                                    },
                                ..
                            }) => "device key derived from the DPS enrollment group key",
                            _ => "DPS individual enrollment key",
                        },
                        human(hub.sas_ttl)
                    ),
                    AzureAuth::SharedAccessKey(_) => format!(
                        "shared access key (SAS tokens valid {}, renewed at 80%)",
                        human(hub.sas_ttl)
                    ),
                    AzureAuth::SharedAccessSignature { expires_at, .. } => format!(
                        "pre-made SAS token, expires {} (cannot be renewed)",
                        humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_secs(*expires_at)
                        )
                    ),
                    AzureAuth::X509(c) => {
                        format!("x509 client certificate {}", c.cert_file.display())
                    }
                },
            );
            let port = a.port.unwrap_or(if wss { 443 } else { 8883 });
            line(
                "transport:",
                format!(
                    "{}, TLS, port {port}",
                    if wss { "websocket" } else { "mqtt" }
                ),
            );
        }
        HubEndpoint::Broker(b) => {
            line(
                "hub:",
                format!("MQTT broker {}:{}, device {}", b.host, b.port, b.device_id),
            );
            let mut auth = Vec::new();
            if let Some(u) = &b.username {
                auth.push(format!("username {u}"));
            }
            if b.password.is_some() {
                auth.push("password set".to_owned());
            }
            if let Some(c) = &b.client_cert {
                auth.push(format!("client certificate {}", c.cert_file.display()));
            }
            line(
                "auth:",
                if auth.is_empty() {
                    "none".to_owned()
                } else {
                    auth.join(", ")
                },
            );
            let kind = if wss {
                format!("websocket, path {}", b.path)
            } else {
                "mqtt".to_owned()
            };
            let tls = if b.tls { "TLS" } else { "PLAINTEXT" };
            line("transport:", format!("{kind}, {tls}"));
        }
    }
    if let Some(p) = &hub.proxy {
        // Only scheme and host: a proxy URL can carry credentials.
        let shown = p.split('@').next_back().unwrap_or_default();
        line("proxy:", shown.to_owned());
    }
    line(
        "pacing:",
        match hub.max_messages_per_second {
            Some(n) => format!("{n} messages/s, keep-alive {}", human(hub.keep_alive)),
            None => format!("unlimited, keep-alive {}", human(hub.keep_alive)),
        },
    );

    let c = &cfg.controller;
    let mut text = c.base_url.clone();
    if let Some(u) = &c.username {
        let _ = write!(text, " (basic auth as {u})");
    }
    if c.accept_invalid_certs {
        text.push_str(", accepting invalid certificates");
    }
    line("controller:", text);

    let r = &cfg.relay;
    let paths = if r.allowed_paths.is_empty() {
        "all paths".to_owned()
    } else {
        r.allowed_paths.join(" ")
    };
    line(
        "relay:",
        format!(
            "method {}, {paths}, {} concurrent, {} schedule(s)",
            r.method_name,
            r.max_concurrent,
            r.schedules.len()
        ),
    );

    let s = &cfg.store;
    let policy = match s.full_policy {
        FullPolicy::DropOldest => "drop-oldest",
        FullPolicy::RejectNew => "reject-new",
    };
    let engine = match s.engine {
        StoreEngine::Sled => "sled",
        StoreEngine::Redb => "redb",
    };
    line(
        "store:",
        format!(
            "{} ({engine}, ttl {}, max {} MiB, {policy})",
            s.path.display(),
            human(s.ttl),
            s.max_bytes / (1024 * 1024)
        ),
    );
    line(
        "bridge:",
        match &cfg.bridge {
            Some(b) => format!("{} at {} baud", b.device.display(), b.baud),
            None => "disabled".to_owned(),
        },
    );
    line(
        "admin:",
        match &cfg.admin.listen {
            Some(AdminListen::Tcp(addr)) => format!("http://{addr} (token required)"),
            Some(AdminListen::Unix(p)) => format!(
                "unix:{}{}",
                p.display(),
                if cfg.admin.token.is_some() {
                    " (token required)"
                } else {
                    ""
                }
            ),
            None => "disabled".to_owned(),
        },
    );
    let format = match cfg.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    line("log:", format!("{}, {format}", cfg.log.level));

    if cfg.warnings.is_empty() {
        out.push_str("no warnings");
    } else {
        let _ = writeln!(out, "{} warning(s):", cfg.warnings.len());
        for w in &cfg.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    // Callers print it with `println!`.
    out.truncate(out.trim_end().len());
    out
}

/// `1h`, `24h`, `4m`: durations as the config file spells them (humantime
/// alone would print `24h` as `1day`).
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_nanos()) {
        (0, _) | (_, 1..) => humantime::format_duration(d).to_string(),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, _) => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    const KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";

    #[test]
    fn an_azure_summary_names_hub_device_and_auth_kind_but_no_key() {
        let text = format!(
            "[hub]\nconnection_string = \"HostName=h.azure-devices.net;DeviceId=dev-7;SharedAccessKey={KEY}\"\n\
             [controller]\nbase_url = \"https://127.0.0.1\"\nusername = \"admin\"\npassword = \"ctl-pass-123\"\n\
             [admin]\nlisten = \"127.0.0.1:8086\"\ntoken = \"admin-token-0123456789\"\n"
        );
        let cfg = parse(&text, Path::new("/etc/tether")).expect("valid");
        let out = summary(&cfg);
        assert!(out.contains("Azure IoT Hub h.azure-devices.net"), "{out}");
        assert!(
            out.contains("device dev-7") && out.contains("shared access key"),
            "{out}"
        );
        assert!(out.contains("http://127.0.0.1:8086"), "{out}");
        assert!(
            out.contains("SAS tokens valid 1h") && out.ends_with("no warnings"),
            "{out}"
        );
        for secret in [KEY, "O+H9", "ctl-pass-123", "admin-token-0123456789"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
    }

    #[test]
    fn a_broker_summary_shows_transport_and_warnings_but_no_password() {
        let text =
            "[hub]\nurl = \"mqtt://broker.lan\"\nallow_insecure = true\ndevice_id = \"gw\"\n\
                    username = \"u\"\npassword = \"broker-secret-pw\"\n\
                    [controller]\nbase_url = \"http://127.0.0.1:8080\"\n";
        let cfg = parse(text, Path::new("/etc/tether")).expect("valid");
        let out = summary(&cfg);
        assert!(
            out.contains("MQTT broker broker.lan:1883, device gw"),
            "{out}"
        );
        assert!(
            out.contains("PLAINTEXT") && out.contains("password set"),
            "{out}"
        );
        assert!(
            out.contains("warning(s):") && out.contains("plaintext"),
            "{out}"
        );
        assert!(
            out.contains("ttl 24h") && out.contains("keep-alive 4m"),
            "{out}"
        );
        assert!(!out.contains("broker-secret-pw"), "{out}");
    }
}
