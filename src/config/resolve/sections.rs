//! `[controller]`, `[relay]`, `[store]`, `[bridge]`, `[admin]` and `[log]`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{is_local_host, positive, split_url, Ctx};
use crate::config::raw::{RawAdmin, RawBridge, RawController, RawLog, RawRelay, RawStore};
use crate::config::{
    AdminConfig, AdminListen, BridgeConfig, ConfigError, ControllerConfig, FullPolicy, LogConfig,
    LogFormat, RelayConfig, ScheduleConfig, StoreConfig, StoreEngine,
};

const BAUD_RATES: [u32; 5] = [9600, 19200, 38400, 57600, 115200];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const MIB: u64 = 1024 * 1024;
const DEFAULT_CONTROLLER: &str = "https://127.0.0.1";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Resolves `[controller]`.
pub(super) fn controller(
    raw: RawController,
    cx: &mut Ctx,
) -> Result<ControllerConfig, ConfigError> {
    // Default loopback: the controller normally runs on the gateway itself.
    let base_url = raw
        .base_url
        .unwrap_or_else(|| DEFAULT_CONTROLLER.to_owned());
    let parts = split_url(&base_url).map_err(|m| ConfigError::invalid("controller.base_url", m))?;
    if !matches!(parts.scheme.as_str(), "http" | "https") {
        return Err(ConfigError::invalid(
            "controller.base_url",
            "must start with https:// or http://",
        ));
    }
    let local = is_local_host(parts.host);
    let plain_http = parts.scheme == "http";
    let accept_invalid_certs = raw.accept_invalid_certs.unwrap_or(false);
    if accept_invalid_certs && !local {
        return Err(ConfigError::invalid(
            "controller.accept_invalid_certs",
            "only allowed for loopback or link-local controller hosts; use ca_file for others",
        ));
    }
    let password = cx.secret("controller", "password", raw.password, raw.password_file)?;
    if password.is_some() && raw.username.is_none() {
        return Err(ConfigError::invalid(
            "controller.password",
            "needs controller.username",
        ));
    }
    if password.is_some() && plain_http && !local {
        cx.warn(
            "controller.password",
            "is sent in plaintext over http:// to a non-local host",
        );
    }
    let ca_file = raw
        .ca_file
        .map(|p| cx.readable_file("controller.ca_file", p))
        .transpose()?;
    Ok(ControllerConfig {
        // Paths are appended to it, so a trailing slash would double up.
        base_url: base_url.trim_end_matches('/').to_owned(),
        username: raw.username,
        password,
        ca_file,
        accept_invalid_certs,
    })
}

/// Resolves `[relay]` and its `[[relay.schedule]]` entries.
pub(super) fn relay(raw: RawRelay) -> Result<RelayConfig, ConfigError> {
    let method_name = raw.method_name.unwrap_or_else(|| "RestApi".to_owned());
    if method_name.trim().is_empty() {
        return Err(ConfigError::invalid(
            "relay.method_name",
            "must not be empty",
        ));
    }
    let allowed_paths = raw.allowed_paths.unwrap_or_default();
    if let Some(bad) = allowed_paths.iter().find(|p| !p.starts_with('/')) {
        return Err(ConfigError::invalid(
            "relay.allowed_paths",
            format!("{bad:?} must start with /"),
        ));
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(4);
    if max_concurrent == 0 {
        return Err(ConfigError::invalid(
            "relay.max_concurrent",
            "must be at least 1",
        ));
    }
    if let Some(url) = &raw.upload_url {
        let parts = split_url(url).map_err(|m| ConfigError::invalid("relay.upload_url", m))?;
        if !matches!(parts.scheme.as_str(), "http" | "https") {
            return Err(ConfigError::invalid(
                "relay.upload_url",
                "must start with https:// or http://",
            ));
        }
    }
    let mut names = HashSet::new();
    let mut schedules = Vec::with_capacity(raw.schedule.len());
    for (i, s) in raw.schedule.into_iter().enumerate() {
        let key = |field: &str| format!("relay.schedule[{i}].{field}");
        if s.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !names.insert(s.name.clone()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{:?} is used twice", s.name),
            ));
        }
        if s.every < Duration::from_secs(1) {
            return Err(ConfigError::invalid(key("every"), "must be at least 1s"));
        }
        let method = s
            .method
            .unwrap_or_else(|| "GET".to_owned())
            .to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(ConfigError::invalid(
                key("method"),
                format!("{method:?} is not one of {}", METHODS.join(", ")),
            ));
        }
        if !s.path.starts_with('/') {
            return Err(ConfigError::invalid(
                key("path"),
                format!("{:?} must start with /", s.path),
            ));
        }
        if !allowed_paths.is_empty()
            && !allowed_paths.iter().any(|p| s.path.starts_with(p.as_str()))
        {
            return Err(ConfigError::invalid(
                key("path"),
                format!("{:?} is outside relay.allowed_paths", s.path),
            ));
        }
        schedules.push(ScheduleConfig {
            name: s.name,
            every: s.every,
            method,
            path: s.path,
            body: s.body,
        });
    }
    Ok(RelayConfig {
        method_name,
        allowed_paths,
        max_concurrent,
        max_queued: raw.max_queued.unwrap_or(16),
        request_timeout: positive(
            "relay.request_timeout",
            raw.request_timeout.unwrap_or(Duration::from_secs(25)),
        )?,
        inline_limit: raw.inline_limit.unwrap_or(16_384),
        upload_url: raw.upload_url,
        schedules,
    })
}

/// Resolves `[store]`.
pub(super) fn store(raw: RawStore, cx: &mut Ctx) -> Result<StoreConfig, ConfigError> {
    let full_policy = match raw.full_policy.as_deref() {
        None | Some("drop-oldest") => FullPolicy::DropOldest,
        Some("reject-new") => FullPolicy::RejectNew,
        Some(other) => {
            return Err(ConfigError::invalid(
                "store.full_policy",
                format!("unknown policy {other:?} (use \"drop-oldest\" or \"reject-new\")"),
            ))
        }
    };
    let engine = match raw.engine.as_deref() {
        None | Some("sled") => StoreEngine::Sled,
        Some("redb") => StoreEngine::Redb,
        Some(other) => {
            return Err(ConfigError::invalid(
                "store.engine",
                format!("unknown engine {other:?} (use \"sled\" or \"redb\")"),
            ))
        }
    };
    let max_bytes = raw.max_bytes.unwrap_or(256 * MIB);
    if max_bytes < MIB {
        return Err(ConfigError::invalid(
            "store.max_bytes",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    let extended_data = match raw.extended_data {
        Some(table) => match toml_to_json(toml::Value::Table(table), "store.extended_data")? {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        None => serde_json::Map::new(),
    };
    Ok(StoreConfig {
        path: cx.path(raw.path.unwrap_or_else(|| PathBuf::from("/var/lib/tether"))),
        ttl: positive("store.ttl", raw.ttl.unwrap_or(DAY))?,
        max_bytes,
        full_policy,
        engine,
        // 2 MiB: under sustained load sled's heap follows its cache, and 4 MiB
        // put the peak over the 24 MiB budget with no gain in throughput
        // (BENCHMARKS.md, issue 12).
        cache_bytes: raw.cache_bytes.unwrap_or(2 * MIB),
        batch_max_bytes: raw.batch_max_bytes.unwrap_or(0),
        failure_ttl: positive("store.failure_ttl", raw.failure_ttl.unwrap_or(DAY))?,
        extended_data,
    })
}

/// TOML to JSON; datetimes become their RFC 3339 text.
fn toml_to_json(value: toml::Value, key: &str) -> Result<serde_json::Value, ConfigError> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .ok_or_else(|| ConfigError::invalid(key, "NaN and infinity have no JSON form"))?,
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{key}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| {
                    let sub = format!("{key}.{k}");
                    toml_to_json(v, &sub).map(|v| (k, v))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Resolves `[bridge]`; `None` when no device is set and nothing else is.
pub(super) fn bridge(raw: RawBridge, cx: &mut Ctx) -> Result<Option<BridgeConfig>, ConfigError> {
    let Some(device) = raw.device else {
        let anything_set = raw.baud.is_some()
            || raw.profile.is_some()
            || raw.mcu_reset_chip.is_some()
            || raw.mcu_reset_line.is_some()
            || raw.module_reset_chip.is_some()
            || raw.module_reset_line.is_some()
            || raw.forward.is_some()
            || raw.timeout.is_some();
        if anything_set {
            return Err(ConfigError::invalid(
                "bridge.device",
                "required when other [bridge] keys are set",
            ));
        }
        return Ok(None);
    };
    let baud = raw.baud.unwrap_or(9600);
    if !BAUD_RATES.contains(&baud) {
        return Err(ConfigError::invalid(
            "bridge.baud",
            format!("{baud} is not one of 9600, 19200, 38400, 57600, 115200"),
        ));
    }
    let forward = raw.forward.unwrap_or_default();
    let mut seen = HashSet::new();
    if let Some(dup) = forward.iter().find(|id| !seen.insert(**id)) {
        return Err(ConfigError::invalid(
            "bridge.forward",
            format!("attribute {dup} is listed twice"),
        ));
    }
    Ok(Some(BridgeConfig {
        device: cx.path(device),
        baud,
        profile: raw
            .profile
            .map(|p| cx.readable_file("bridge.profile", p))
            .transpose()?,
        mcu_reset_line: gpio_line(cx, "mcu_reset", raw.mcu_reset_chip, raw.mcu_reset_line)?,
        module_reset_line: gpio_line(
            cx,
            "module_reset",
            raw.module_reset_chip,
            raw.module_reset_line,
        )?,
        forward,
        timeout: positive(
            "bridge.timeout",
            raw.timeout.unwrap_or(Duration::from_secs(25)),
        )?,
    }))
}

/// `{name}_chip` and `{name}_line`: both or neither.
fn gpio_line(
    cx: &Ctx,
    name: &str,
    chip: Option<PathBuf>,
    line: Option<u32>,
) -> Result<Option<(PathBuf, u32)>, ConfigError> {
    match (chip, line) {
        (Some(chip), Some(line)) => Ok(Some((cx.path(chip), line))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            format!("bridge.{name}_line"),
            format!("required when {name}_chip is set"),
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            format!("bridge.{name}_chip"),
            format!("required when {name}_line is set"),
        )),
    }
}

/// Resolves `[admin]`.
pub(super) fn admin(raw: RawAdmin, cx: &mut Ctx) -> Result<AdminConfig, ConfigError> {
    let token = cx.secret("admin", "token", raw.token, raw.token_file)?;
    let listen = match raw.listen.as_deref() {
        None => None,
        Some(text) => Some(match text.strip_prefix("unix:") {
            Some("") => {
                return Err(ConfigError::invalid(
                    "admin.listen",
                    "unix: needs a socket path",
                ))
            }
            Some(path) => AdminListen::Unix(cx.path(PathBuf::from(path))),
            None => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    ConfigError::invalid(
                        "admin.listen",
                        format!("{text:?} is not IP:PORT or unix:PATH (e.g. \"127.0.0.1:8086\")"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::invalid(
                        "admin.listen",
                        "must be a loopback address or unix:PATH (e.g. \"127.0.0.1:8086\" or \"unix:/run/tether/admin.sock\")",
                    ));
                }
                AdminListen::Tcp(addr)
            }
        }),
    };
    match (&listen, &token) {
        (Some(AdminListen::Tcp(_)), None) => {
            return Err(ConfigError::invalid(
                "admin.token",
                "required when admin listens on TCP (set token or token_file)",
            ))
        }
        (None, Some(_)) => cx.warn("admin.token", "ignored: admin.listen is not set"),
        (_, Some(t)) if t.expose().len() < 16 => cx.warn(
            "admin.token",
            "is shorter than 16 characters; use a long random token",
        ),
        _ => {}
    }
    Ok(AdminConfig { listen, token })
}

/// Resolves `[log]`.
pub(super) fn log(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if let Err(e) = crate::logging::parse_filter(&level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!("{e} (e.g. \"info\" or \"tether=debug,info\")"),
        ));
    }
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::invalid(
                "log.format",
                format!("unknown format {other:?} (use \"text\" or \"json\")"),
            ))
        }
    };
    Ok(LogConfig { level, format })
}
