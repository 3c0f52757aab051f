//! What the session presents in CONNECT: client id, username and password,
//! and when those must be renewed. MQTT 3.1.1 cannot re-authenticate a live
//! connection, so renewing a SAS token means reconnecting with a fresh one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_protocol::time::unix_seconds;

use crate::config::{AzureAuth, AzureHub, BrokerHub, HubEndpoint, Secret, SecretBytes};

use super::sas;

// The relay's file-upload calls name the same API version.
pub(crate) use tether_protocol::iothub::API_VERSION;

/// What the IoT Hub username names as the device client: `tether/{version}`.
const DEVICE_CLIENT_TYPE: &str = concat!("tether/", env!("CARGO_PKG_VERSION"));

/// Credentials for one CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// MQTT username (may be empty for anonymous brokers).
    pub(crate) username: String,
    /// MQTT password; `None` for x509 and anonymous.
    pub(crate) password: Option<Secret>,
    /// When to reconnect with fresh credentials (80 % of a minted token's life).
    pub(crate) renew_at: Option<SystemTime>,
    /// When the password stops being valid.
    pub(crate) expires_at: Option<SystemTime>,
}

/// The credentials could not be made usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CredentialError {
    /// A pre-made SharedAccessSignature has expired and cannot be renewed.
    #[error(
        "the SharedAccessSignature in the connection string expired at {expired_at} (unix); \
         tether cannot renew a pre-made token: put a device key or a new token in hub.connection_string"
    )]
    SignatureExpired {
        /// Its `se`.
        expired_at: u64,
    },
}

/// Mints credentials for each connection attempt.
#[derive(Debug, Clone)]
pub(crate) struct CredentialSource {
    client_id: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    AzureKey {
        username: String,
        resource_uri: String,
        key: SecretBytes,
        ttl: Duration,
    },
    AzureSignature {
        username: String,
        token: Secret,
        expires_at: u64,
    },
    AzureX509 {
        username: String,
    },
    Broker {
        username: Option<String>,
        password: Option<Secret>,
    },
}

impl CredentialSource {
    /// Credentials for `endpoint`; `sas_ttl` is the life of minted tokens.
    pub(crate) fn new(endpoint: &HubEndpoint, sas_ttl: Duration) -> Self {
        match endpoint {
            HubEndpoint::Azure(a) => Self::azure(a, sas_ttl),
            HubEndpoint::Broker(b) => Self::broker(b),
        }
    }

    fn azure(a: &AzureHub, ttl: Duration) -> Self {
        let client_id = match &a.module_id {
            Some(m) => format!("{}/{m}", a.device_id),
            None => a.device_id.clone(),
        };
        let username = azure_username(&a.host_name, &client_id);
        let kind = match &a.auth {
            AzureAuth::SharedAccessKey(key) => Kind::AzureKey {
                username,
                resource_uri: sas::resource_uri(&a.host_name, &a.device_id, a.module_id.as_deref()),
                key: key.clone(),
                ttl,
            },
            AzureAuth::SharedAccessSignature { token, expires_at } => Kind::AzureSignature {
                username,
                token: token.clone(),
                expires_at: *expires_at,
            },
            AzureAuth::X509(_) => Kind::AzureX509 { username },
        };
        Self { client_id, kind }
    }

    fn broker(b: &BrokerHub) -> Self {
        Self {
            client_id: b.device_id.clone(),
            kind: Kind::Broker {
                username: b.username.clone(),
                password: b.password.clone(),
            },
        }
    }

    /// The MQTT client id.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Credentials valid at `now`.
    ///
    /// # Errors
    /// [`CredentialError::SignatureExpired`] when a pre-made token is past its
    /// expiry; the caller still retries (the clock may be wrong) but says why.
    pub(crate) fn current(&self, now: SystemTime) -> Result<Credentials, CredentialError> {
        match &self.kind {
            Kind::AzureKey {
                username,
                resource_uri,
                key,
                ttl,
            } => {
                let se = unix_seconds(now) + ttl.as_secs().max(1);
                let renew = unix_seconds(now) + (ttl.as_secs_f64() * 0.8) as u64;
                Ok(Credentials {
                    username: username.clone(),
                    password: Some(sas::sign(&key.0, resource_uri, se)),
                    renew_at: Some(UNIX_EPOCH + Duration::from_secs(renew)),
                    expires_at: Some(UNIX_EPOCH + Duration::from_secs(se)),
                })
            }
            Kind::AzureSignature {
                username,
                token,
                expires_at,
            } => {
                if unix_seconds(now) >= *expires_at {
                    return Err(CredentialError::SignatureExpired {
                        expired_at: *expires_at,
                    });
                }
                Ok(Credentials {
                    username: username.clone(),
                    password: Some(token.clone()),
                    renew_at: None,
                    expires_at: Some(UNIX_EPOCH + Duration::from_secs(*expires_at)),
                })
            }
            Kind::AzureX509 { username } => Ok(Credentials {
                username: username.clone(),
                password: None,
                renew_at: None,
                expires_at: None,
            }),
            Kind::Broker { username, password } => Ok(Credentials {
                username: username.clone().unwrap_or_default(),
                password: password.clone(),
                renew_at: None,
                expires_at: None,
            }),
        }
    }

    /// The token to present even though it expired (the clock may be wrong).
    pub(crate) fn expired_fallback(&self) -> Option<Credentials> {
        match &self.kind {
            Kind::AzureSignature {
                username,
                token,
                expires_at,
            } => Some(Credentials {
                username: username.clone(),
                password: Some(token.clone()),
                renew_at: None,
                expires_at: Some(UNIX_EPOCH + Duration::from_secs(*expires_at)),
            }),
            _ => None,
        }
    }
}

/// The IoT Hub username ([`tether_protocol::iothub::username`]) naming
/// this tether as the device client.
pub(crate) fn azure_username(host_name: &str, client_id: &str) -> String {
    tether_protocol::iothub::username(host_name, client_id, DEVICE_CLIENT_TYPE)
}

/// A source minting SAS tokens of `ttl` for device `dev1` from a fixed key.
#[cfg(test)]
pub(crate) fn key_source(ttl: Duration) -> CredentialSource {
    let ep = HubEndpoint::Azure(AzureHub {
        host_name: "hub.example.net".into(),
        gateway_host_name: None,
        device_id: "dev1".into(),
        module_id: None,
        auth: AzureAuth::SharedAccessKey(SecretBytes(b"key".to_vec())),
        port: None,
    });
    CredentialSource::new(&ep, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure_key() -> HubEndpoint {
        HubEndpoint::Azure(AzureHub {
            host_name: "hub.example.net".into(),
            gateway_host_name: None,
            device_id: "dev1".into(),
            module_id: None,
            auth: AzureAuth::SharedAccessKey(SecretBytes(b"password".to_vec())),
            port: None,
        })
    }

    #[test]
    fn azure_username_names_host_client_api_version_and_agent() {
        assert_eq!(
            azure_username("h.net", "d/m"),
            format!(
                "h.net/d/m/?api-version=2021-04-12&DeviceClientType=tether%2F{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn minted_tokens_expire_after_the_ttl_and_renew_at_eighty_percent() {
        let src = CredentialSource::new(&azure_key(), Duration::from_secs(3600));
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = src.current(now).unwrap();
        assert_eq!(unix_seconds(c.expires_at.unwrap()), 1_003_600);
        assert_eq!(unix_seconds(c.renew_at.unwrap()), 1_002_880);
        let pw = c.password.unwrap();
        assert!(pw
            .expose()
            .starts_with("SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1&sig="));
        assert!(pw.expose().ends_with("&se=1003600"));
        assert_eq!(src.client_id(), "dev1");
    }

    #[test]
    fn the_same_clock_gives_the_same_token() {
        let src = CredentialSource::new(&azure_key(), Duration::from_secs(60));
        let now = UNIX_EPOCH + Duration::from_secs(42);
        assert_eq!(
            src.current(now).unwrap().password,
            src.current(now).unwrap().password
        );
    }

    #[test]
    fn an_expired_premade_signature_is_reported_with_its_expiry() {
        let ep = HubEndpoint::Azure(AzureHub {
            host_name: "h".into(),
            gateway_host_name: None,
            device_id: "d".into(),
            module_id: Some("m".into()),
            auth: AzureAuth::SharedAccessSignature {
                token: Secret::new("SharedAccessSignature sr=x&sig=y&se=100"),
                expires_at: 100,
            },
            port: None,
        });
        let src = CredentialSource::new(&ep, Duration::from_secs(60));
        assert_eq!(src.client_id(), "d/m");
        let err = src
            .current(UNIX_EPOCH + Duration::from_secs(100))
            .unwrap_err();
        assert_eq!(err, CredentialError::SignatureExpired { expired_at: 100 });
        assert!(src.current(UNIX_EPOCH + Duration::from_secs(99)).is_ok());
        assert!(src.expired_fallback().is_some());
    }
}
