//! The TOML file as written: every key optional, unknown keys rejected (a
//! typo must not silently fall back to a default). Defaults and rules live in
//! [`super::resolve`], so a missing key and a wrong one are told apart there.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole file. Every section may be omitted.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub hub: RawHub,
    pub controller: RawController,
    pub relay: RawRelay,
    pub store: RawStore,
    /// `None` when the file has no `[bridge]` table at all.
    pub bridge: Option<RawBridge>,
    pub admin: RawAdmin,
    pub log: RawLog,
    /// `[[webhook]]` outbox sinks.
    pub webhook: Vec<RawWebhook>,
}

/// `[hub]`: either `connection_string` (Azure) or `url` (plain broker).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawHub {
    pub connection_string: Option<String>,
    pub connection_string_file: Option<PathBuf>,
    pub url: Option<String>,
    pub device_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Broker client certificate, or the device certificate for Azure x509.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub allow_insecure: Option<bool>,
    pub transport: Option<String>,
    pub proxy: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub port: Option<u16>,
    #[serde(with = "humantime_opt")]
    pub keep_alive: Option<Duration>,
    #[serde(with = "humantime_opt")]
    pub sas_ttl: Option<Duration>,
    #[serde(with = "humantime_opt")]
    pub connect_timeout: Option<Duration>,
    pub max_messages_per_second: Option<u32>,
    /// `[hub.provisioning]`: Azure DPS instead of a connection string.
    pub provisioning: Option<RawProvisioning>,
}

/// `[hub.provisioning]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawProvisioning {
    pub id_scope: Option<String>,
    pub registration_id: Option<String>,
    pub symmetric_key: Option<String>,
    pub symmetric_key_file: Option<PathBuf>,
    pub group_key: Option<String>,
    pub group_key_file: Option<PathBuf>,
    pub global_endpoint: Option<String>,
    pub port: Option<u16>,
    /// Free-form; sent as JSON.
    pub payload: Option<toml::Table>,
}

/// `[controller]`: the local REST API.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawController {
    pub base_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub accept_invalid_certs: Option<bool>,
}

/// `[relay]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawRelay {
    pub method_name: Option<String>,
    pub allowed_paths: Option<Vec<String>>,
    pub max_concurrent: Option<usize>,
    pub max_queued: Option<usize>,
    #[serde(with = "humantime_opt")]
    pub request_timeout: Option<Duration>,
    pub inline_limit: Option<usize>,
    pub upload_url: Option<String>,
    /// `[[relay.schedule]]` entries.
    pub schedule: Vec<RawSchedule>,
}

/// One `[[relay.schedule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub name: String,
    #[serde(with = "humantime_req")]
    pub every: Duration,
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    #[serde(default)]
    pub body: Option<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawStore {
    pub path: Option<PathBuf>,
    #[serde(with = "humantime_opt")]
    pub ttl: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub full_policy: Option<String>,
    pub engine: Option<String>,
    pub cache_bytes: Option<u64>,
    pub batch_max_bytes: Option<usize>,
    #[serde(with = "humantime_opt")]
    pub failure_ttl: Option<Duration>,
    /// Free-form; converted to JSON by the resolver.
    pub extended_data: Option<toml::Table>,
}

/// `[bridge]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawBridge {
    pub device: Option<PathBuf>,
    pub baud: Option<u32>,
    pub profile: Option<PathBuf>,
    pub mcu_reset_chip: Option<PathBuf>,
    pub mcu_reset_line: Option<u32>,
    pub module_reset_chip: Option<PathBuf>,
    pub module_reset_line: Option<u32>,
    pub forward: Option<Vec<u16>>,
    #[serde(with = "humantime_opt")]
    pub timeout: Option<Duration>,
}

/// One `[[webhook]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub query: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default, with = "humantime_opt")]
    pub timeout: Option<Duration>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// Parses a humantime string (`"30s"`, `"5m"`, `"1h 30m"`), with a hint.
fn parse_duration<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
    humantime::parse_duration(text).map_err(|e| {
        E::custom(format!(
            "invalid duration {text:?}: {e} (write e.g. \"30s\", \"5m\" or \"24h\")"
        ))
    })
}

/// `Option<Duration>` from a humantime string.
mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s))
            .transpose()
    }
}

/// A required `Duration` from a humantime string.
mod humantime_req {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::parse_duration(&String::deserialize(d)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_humantime_strings() {
        let raw: RawConfig = toml::from_str(
            "[hub]\nkeep_alive = \"4m\"\nsas_ttl = \"1h 30m\"\n[store]\nttl = \"24h\"\n\
             [[relay.schedule]]\nname = \"n\"\nevery = \"500ms\"\npath = \"/x\"\n",
        )
        .expect("valid");
        assert_eq!(raw.hub.keep_alive, Some(Duration::from_secs(240)));
        assert_eq!(raw.hub.sas_ttl, Some(Duration::from_secs(5400)));
        assert_eq!(raw.store.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(raw.relay.schedule[0].every, Duration::from_millis(500));
    }

    #[test]
    fn a_bad_duration_is_rejected_with_a_hint() {
        let err = toml::from_str::<RawConfig>("[hub]\nkeep_alive = \"soon\"\n").unwrap_err();
        assert!(err.message().contains("\"30s\""), "{err}");
        let err = toml::from_str::<RawConfig>("[hub]\nkeep_alive = 30\n").unwrap_err();
        assert!(err.message().contains("string"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RawConfig>("[hub]\nconection_string = \"x\"\n").unwrap_err();
        assert!(
            err.message().contains("unknown field `conection_string`"),
            "{err}"
        );
        assert!(toml::from_str::<RawConfig>("[hubb]\n").is_err());
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let raw: RawConfig = toml::from_str("").expect("valid");
        assert!(raw.hub.url.is_none() && raw.bridge.is_none() && raw.relay.schedule.is_empty());
    }

    #[test]
    fn extended_data_is_free_form() {
        let raw: RawConfig = toml::from_str(
            "[store.extended_data]\nsite = \"A\"\nfloor = 3\n[store.extended_data.x]\ny = true\n",
        )
        .expect("valid");
        let ext = raw.store.extended_data.expect("present");
        assert_eq!(ext.len(), 3);
    }
}
