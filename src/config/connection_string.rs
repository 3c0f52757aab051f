//! Azure IoT Hub *device* connection strings
//! (`HostName=...;DeviceId=...;SharedAccessKey=...`).
//!
//! Parsing follows the recommendation in the hub spec (§1): split on `;`
//! ignoring empty segments, split each segment at its first `=` (base64 keys
//! end in `=`), reject duplicates, ignore unknown keys but report them, and
//! require exactly one way to authenticate. No error or `Debug` output ever
//! contains the key or the signature.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::{Secret, SecretBytes};

/// Base64 as the SDKs accept it: padding optional (`key` == `key=`), and
/// non-zero trailing bits tolerated, like Node's lenient decoder (spec V4b).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A parsed device connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: the hub's FQDN, used in the username and SAS resource URI.
    pub host_name: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `ModuleId`, for module identities.
    pub module_id: Option<String>,
    /// `GatewayHostName`: where the TCP/TLS connection goes, when set.
    pub gateway_host_name: Option<String>,
    /// How the device authenticates.
    pub auth: ConnectionAuth,
    /// Keys this parser does not know; ignored, reported so the loader can
    /// warn about typos (the C SDK does the same).
    pub unknown_keys: Vec<String>,
}

/// The one authentication method a connection string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAuth {
    /// `SharedAccessKey`, already base64-decoded.
    SharedAccessKey(SecretBytes),
    /// `SharedAccessSignature`: a pre-made token that cannot be renewed.
    SharedAccessSignature {
        /// The whole `SharedAccessSignature sr=...&sig=...&se=...` token.
        token: Secret,
        /// Its `se` field: expiry in Unix seconds.
        expires_at: u64,
    },
    /// `x509=true`: TLS client certificate, no password.
    X509,
}

/// Why a connection string was rejected. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// Nothing but separators.
    #[error("is empty; paste the device connection string (HostName=...;DeviceId=...;SharedAccessKey=...)")]
    Empty,
    /// A segment without `=` or with an empty key. Only its position is
    /// shown, because the segment could be a fragment of a key.
    #[error("segment {index} is not Key=Value; check the string was copied whole")]
    MalformedSegment {
        /// 1-based position among the `;`-separated segments.
        index: usize,
    },
    /// The same key twice.
    #[error("duplicate key {key}; each key may appear only once")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A key with an empty value.
    #[error("{key} is empty")]
    EmptyValue {
        /// The key whose value is empty.
        key: String,
    },
    /// `SharedAccessKeyName` present: a hub policy string.
    #[error(
        "this is a service (shared access policy) connection string: it has SharedAccessKeyName; \
         tether needs a device connection string (HostName=...;DeviceId=...;SharedAccessKey=...), \
         e.g. from `az iot hub device-identity connection-string show`"
    )]
    ServiceString,
    /// No `HostName`.
    #[error("missing HostName")]
    MissingHostName,
    /// No `DeviceId`.
    #[error("missing DeviceId")]
    MissingDeviceId,
    /// None of the authentication keys.
    #[error(
        "no credentials: add one of SharedAccessKey=..., SharedAccessSignature=... or x509=true"
    )]
    NoAuth,
    /// More than one authentication key.
    #[error("mixed authentication: {} are all set; keep exactly one", .keys.join(", "))]
    MixedAuth {
        /// The authentication keys found.
        keys: Vec<&'static str>,
    },
    /// `x509` with a value other than `true`.
    #[error("x509 must be `true` (got {value:?}); remove it to authenticate with a key")]
    InvalidX509 {
        /// The value given (not a secret).
        value: String,
    },
    /// The key does not decode.
    #[error(
        "SharedAccessKey is not valid base64; copy the device's primary or secondary key again"
    )]
    InvalidKey,
    /// The pre-made token lacks a usable field.
    #[error("SharedAccessSignature {problem}; generate a new token, e.g. `az iot hub generate-sas-token`")]
    InvalidSignature {
        /// What is wrong, e.g. "has no se= (expiry)".
        problem: &'static str,
    },
}

const AUTH_KEYS: [&str; 3] = ["SharedAccessKey", "SharedAccessSignature", "x509"];
const KNOWN_KEYS: [&str; 7] = [
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessSignature",
    "x509",
    "GatewayHostName",
];

impl ConnectionString {
    /// Parses a device connection string.
    ///
    /// # Errors
    /// [`ConnectionStringError`] for malformed segments, duplicate keys, a
    /// service (policy) string, missing `HostName`/`DeviceId`, no or mixed
    /// authentication, an undecodable key or an unusable signature.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (i, segment) in text.trim().split(';').enumerate() {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            let Some((key, value)) = segment.split_once('=') else {
                return Err(ConnectionStringError::MalformedSegment { index: i + 1 });
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(ConnectionStringError::MalformedSegment { index: i + 1 });
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(ConnectionStringError::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            pairs.push((key, value.trim()));
        }
        if pairs.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        // Checked before the required keys: a policy string has no DeviceId,
        // and "missing DeviceId" would send the user in the wrong direction.
        if get("SharedAccessKeyName").is_some() {
            return Err(ConnectionStringError::ServiceString);
        }
        for (key, value) in &pairs {
            if value.is_empty() && KNOWN_KEYS.contains(key) {
                return Err(ConnectionStringError::EmptyValue {
                    key: (*key).to_owned(),
                });
            }
        }
        let host_name = get("HostName").ok_or(ConnectionStringError::MissingHostName)?;
        let device_id = get("DeviceId").ok_or(ConnectionStringError::MissingDeviceId)?;

        let present: Vec<&'static str> =
            AUTH_KEYS.into_iter().filter(|k| get(k).is_some()).collect();
        let auth = match present.as_slice() {
            [] => return Err(ConnectionStringError::NoAuth),
            ["SharedAccessKey"] => ConnectionAuth::SharedAccessKey(decode_key(
                get("SharedAccessKey").unwrap_or_default(),
            )?),
            ["SharedAccessSignature"] => {
                parse_signature(get("SharedAccessSignature").unwrap_or_default())?
            }
            ["x509"] => match get("x509").unwrap_or_default() {
                "true" => ConnectionAuth::X509,
                other => {
                    return Err(ConnectionStringError::InvalidX509 {
                        value: other.to_owned(),
                    })
                }
            },
            _ => return Err(ConnectionStringError::MixedAuth { keys: present }),
        };

        Ok(Self {
            host_name: host_name.to_owned(),
            device_id: device_id.to_owned(),
            module_id: get("ModuleId").map(str::to_owned),
            gateway_host_name: get("GatewayHostName").map(str::to_owned),
            auth,
            unknown_keys: pairs
                .iter()
                .filter(|(k, _)| !KNOWN_KEYS.contains(k))
                .map(|(k, _)| (*k).to_owned())
                .collect(),
        })
    }
}

/// Decodes `SharedAccessKey`, accepting missing padding.
fn decode_key(value: &str) -> Result<SecretBytes, ConnectionStringError> {
    match LENIENT_BASE64.decode(value) {
        Ok(bytes) if !bytes.is_empty() => Ok(SecretBytes(bytes)),
        // The decoder's own message quotes the offending symbol, which is a
        // piece of the key, so it is deliberately dropped.
        _ => Err(ConnectionStringError::InvalidKey),
    }
}

/// Checks a pre-made token and extracts its expiry.
fn parse_signature(value: &str) -> Result<ConnectionAuth, ConnectionStringError> {
    let invalid = |problem| ConnectionStringError::InvalidSignature { problem };
    let fields = value
        .strip_prefix("SharedAccessSignature ")
        .ok_or(invalid("does not start with \"SharedAccessSignature \""))?;
    let field = |name: &str| {
        fields
            .split('&')
            .filter_map(|f| f.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim())
    };
    match field("sr") {
        Some(sr) if !sr.is_empty() => {}
        _ => return Err(invalid("has no sr= (resource URI)")),
    }
    match field("sig") {
        Some(sig) if !sig.is_empty() => {}
        _ => return Err(invalid("has no sig= (signature)")),
    }
    let expires_at = field("se")
        .ok_or(invalid("has no se= (expiry)"))?
        .parse::<u64>()
        .map_err(|_| invalid("has an se= that is not a Unix time in seconds"))?;
    Ok(ConnectionAuth::SharedAccessSignature {
        token: Secret::new(value),
        expires_at,
    })
}

#[cfg(test)]
mod tests;
