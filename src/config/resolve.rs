//! From [`raw`](super::raw) to [`Config`]: read secret files, resolve
//! relative paths against the config file's directory, apply defaults and
//! check every rule, naming the offending key.
//!
//! The `[hub]` section lives in `resolve/hub.rs`, the others in
//! `resolve/sections.rs`; this file holds the entry points and the helpers
//! they share (secrets, paths, URLs).

mod hub;
mod provisioning;
mod sections;
#[cfg(test)]
mod tests;
mod webhook;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::{Config, ConfigError, Secret};

/// Reads and validates the config file at `path`. Relative paths inside it
/// resolve against the file's directory.
///
/// # Errors
/// [`ConfigError::Io`] when the file cannot be read, [`ConfigError::Syntax`]
/// for TOML errors (with line and column), and the errors of [`parse`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let io_err = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let text = fs::read_to_string(path).map_err(io_err)?;
    // Absolute so that relative paths inside stay valid after a chdir.
    let absolute = std::path::absolute(path).map_err(io_err)?;
    let base_dir = absolute.parent().unwrap_or(Path::new("/"));
    let (mut config, inline_secrets) = parse_named(&text, base_dir, path)?;
    if inline_secrets {
        if let Some(mode) = loose_mode(path) {
            config.warnings.push(format!(
                "{} holds inline secrets and is readable by group or others (mode {mode:04o}); \
                 run `chmod 600 {}` or move the secrets to *_file keys",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(config)
}

/// Validates config `text`; relative paths resolve against `base_dir`.
///
/// # Errors
/// [`ConfigError::Syntax`] for TOML errors, [`ConfigError::Invalid`] naming
/// the key for rule violations, [`ConfigError::File`] for unreadable secret,
/// certificate or CA files.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    parse_named(text, base_dir, Path::new("<config>")).map(|(config, _)| config)
}

/// [`parse`], also telling whether any secret was written inline.
fn parse_named(text: &str, base_dir: &Path, name: &Path) -> Result<(Config, bool), ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: name.to_owned(),
        message: syntax_message(text, &e),
    })?;
    let mut cx = Ctx {
        base_dir: base_dir.to_owned(),
        warnings: Vec::new(),
        inline_secrets: false,
    };
    let hub = hub::hub(raw.hub, &mut cx)?;
    let controller = sections::controller(raw.controller, &mut cx)?;
    let relay = sections::relay(raw.relay)?;
    let store = sections::store(raw.store, &mut cx)?;
    let bridge = raw
        .bridge
        .map(|b| sections::bridge(b, &mut cx))
        .transpose()?
        .flatten();
    let admin = sections::admin(raw.admin, &mut cx)?;
    let log = sections::log(raw.log)?;
    let webhooks = webhook::webhooks(raw.webhook, &mut cx)?;
    let config = Config {
        hub,
        controller,
        relay,
        store,
        bridge,
        admin,
        log,
        webhooks,
        warnings: cx.warnings,
    };
    Ok((config, cx.inline_secrets))
}

/// `line L, column C: message`, without the source excerpt the `toml`
/// crate's `Display` adds: that line could hold a password.
fn syntax_message(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

/// State shared while resolving: where relative paths start, warnings so far.
pub(super) struct Ctx {
    base_dir: PathBuf,
    pub warnings: Vec<String>,
    inline_secrets: bool,
}

impl Ctx {
    /// `p` resolved against the config directory.
    pub(super) fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    /// Resolves a file the daemon will read later (certificate, CA, profile)
    /// and checks now that it can be read, so a typo fails at start-up.
    pub(super) fn readable_file(&self, key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
        let path = self.path(p);
        let file_err = |source| ConfigError::File {
            key: key.to_owned(),
            path: path.clone(),
            source,
        };
        let meta = fs::metadata(&path).map_err(file_err)?;
        if !meta.is_file() {
            return Err(ConfigError::invalid(
                key,
                format!("{} is not a file", path.display()),
            ));
        }
        fs::File::open(&path).map_err(file_err)?;
        Ok(path)
    }

    /// A secret given inline as `section.name` or in a file as
    /// `section.name_file`, never both.
    pub(super) fn secret(
        &mut self,
        section: &str,
        name: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        let key = format!("{section}.{name}");
        match (inline, file) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                key,
                format!("set either {name} or {name}_file, not both"),
            )),
            (Some(value), None) if value.is_empty() => Err(ConfigError::invalid(key, "is empty")),
            (Some(value), None) => {
                self.inline_secrets = true;
                Ok(Some(Secret::new(value)))
            }
            (None, Some(file)) => self.secret_file(&format!("{key}_file"), file).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Reads a secret file, dropping the trailing newline editors add, and
    /// warns when others can read it.
    fn secret_file(&mut self, key: &str, file: PathBuf) -> Result<Secret, ConfigError> {
        let path = self.path(file);
        let text = fs::read_to_string(&path).map_err(|source| ConfigError::File {
            key: key.to_owned(),
            path: path.clone(),
            source,
        })?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(ConfigError::invalid(
                key,
                format!("{} is empty", path.display()),
            ));
        }
        if let Some(mode) = loose_mode(&path) {
            self.warnings.push(format!(
                "{key}: {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
        Ok(Secret::new(value))
    }

    /// Records a warning about `key`.
    pub(super) fn warn(&mut self, key: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{key}: {message}"));
    }
}

/// The permission bits when group or others have any access.
#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

/// `d` if non-zero.
pub(super) fn positive(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than 0s"));
    }
    Ok(d)
}

/// A URL split into the parts the config needs. Not a general URL parser:
/// enough for `scheme://host[:port][/path]`, rejecting user info so that
/// credentials never sit in a URL (and never reach an error message).
pub(super) struct UrlParts<'a> {
    pub scheme: String,
    pub host: &'a str,
    pub port: Option<u16>,
    /// Everything from the first `/` after the authority, or "".
    pub path: &'a str,
}

/// Splits `url`; errors are messages for the caller's key and never quote
/// the URL, which may contain a password.
pub(super) fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "is not a URL (expected scheme://host[:port])".to_owned())?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err("must not contain credentials; use the username/password keys".to_owned());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "has an unclosed [ in the host".to_owned())?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| "has junk after ]".to_owned())?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("has an IPv6 host without [brackets]".to_owned())
            }
            Some((host, p)) => (host, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
        })
        .transpose()?;
    Ok(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host,
        port,
        path,
    })
}

/// Loopback or link-local: hosts where a self-signed certificate is the norm
/// and interception is implausible.
pub(super) fn is_local_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // Drop an IPv6 zone (`fe80::1%eth0`), which IpAddr does not parse.
    let host = host.split('%').next().unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}
