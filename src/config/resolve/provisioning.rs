//! `[hub.provisioning]`: DPS registration instead of a connection string.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::Ctx;
use crate::config::provisioning::{
    derive_device_key, ProvisioningAuth, ProvisioningConfig, GLOBAL_ENDPOINT,
};
use crate::config::raw::RawProvisioning;
use crate::config::{AzureAuth, AzureHub, ClientCert, ConfigError, SecretBytes};

const SECTION: &str = "hub.provisioning";
const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);
const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(300);
/// What azure-sdk-for-c's samples wait when DPS sends no `retry-after`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(3);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// DPS's limit on registration ids.
const MAX_REGISTRATION_ID: usize = 128;

/// Resolves `[hub.provisioning]` with the `[hub]` client certificate
/// `cert` and port override `port`. The returned hub is not assigned yet:
/// its host name is empty and its device id is the registration id until
/// DPS (or the cached assignment) says otherwise.
pub(super) fn provisioning(
    raw: RawProvisioning,
    cert: Option<ClientCert>,
    port: Option<u16>,
    cx: &mut Ctx,
) -> Result<(AzureHub, ProvisioningConfig), ConfigError> {
    let id_scope = required(raw.id_scope, "id_scope", "the ID scope of the DPS instance (Azure portal: DPS > Overview > ID Scope, e.g. 0ne00012345)")?;
    if id_scope.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::invalid(
            format!("{SECTION}.id_scope"),
            format!("{id_scope:?} must not contain /, spaces or control characters; copy the ID scope from the DPS overview"),
        ));
    }
    let registration_id = required(
        raw.registration_id,
        "registration_id",
        "the device's registration id in its DPS enrollment (with x509, the certificate's CN)",
    )?;
    if registration_id.len() > MAX_REGISTRATION_ID
        || !registration_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(ConfigError::invalid(
            format!("{SECTION}.registration_id"),
            format!(
                "{registration_id:?} must be at most {MAX_REGISTRATION_ID} characters of a-z, \
                 0-9, -, ., _ and : (DPS's rule)"
            ),
        ));
    }
    let global_endpoint = raw
        .global_endpoint
        .unwrap_or_else(|| GLOBAL_ENDPOINT.to_owned());
    if global_endpoint.is_empty()
        || global_endpoint.contains(|c: char| "/:@".contains(c) || c.is_whitespace())
    {
        return Err(ConfigError::invalid(
            format!("{SECTION}.global_endpoint"),
            "must be a host name without scheme, port or path (e.g. \
             global.azure-devices-provisioning.net); set the port with hub.provisioning.port",
        ));
    }
    let individual = cx.secret(
        SECTION,
        "symmetric_key",
        raw.symmetric_key,
        raw.symmetric_key_file,
    )?;
    let group = cx.secret(SECTION, "group_key", raw.group_key, raw.group_key_file)?;
    let auth =
        match (individual, group, cert) {
            (Some(key), None, None) => ProvisioningAuth::Key {
                key: decode_key("symmetric_key", key.expose())?,
                from_group: false,
            },
            (None, Some(key), None) => {
                let group_key = decode_key("group_key", key.expose())?;
                ProvisioningAuth::Key {
                    key: derive_device_key(&group_key.0, &registration_id),
                    from_group: true,
                }
            }
            (None, None, Some(cert)) => ProvisioningAuth::X509(cert),
            (None, None, None) => {
                return Err(ConfigError::invalid(
                    format!("{SECTION}.symmetric_key"),
                    "required: set symmetric_key or symmetric_key_file (individual enrollment), \
                 group_key or group_key_file (enrollment group), or hub.client_cert_file and \
                 hub.client_key_file (x509 enrollment)",
                ))
            }
            _ => return Err(ConfigError::invalid(
                SECTION,
                "set exactly one of symmetric_key(_file), group_key(_file) or the [hub] client \
                 certificate",
            )),
        };
    let payload = raw
        .payload
        .map(|t| {
            serde_json::to_value(t).map_err(|e| {
                ConfigError::invalid(
                    format!("{SECTION}.payload"),
                    format!("cannot be sent as JSON: {e}"),
                )
            })
        })
        .transpose()?;
    let hub_auth = match &auth {
        ProvisioningAuth::Key { key, .. } => AzureAuth::SharedAccessKey(key.clone()),
        ProvisioningAuth::X509(cert) => AzureAuth::X509(cert.clone()),
    };
    let hub = AzureHub {
        host_name: String::new(),
        gateway_host_name: None,
        device_id: registration_id.clone(),
        module_id: None,
        auth: hub_auth,
        port,
    };
    let config = ProvisioningConfig {
        id_scope,
        registration_id,
        global_endpoint,
        port: raw.port,
        auth,
        payload,
        retry_base: DEFAULT_RETRY_BASE,
        retry_cap: DEFAULT_RETRY_CAP,
        poll_interval: DEFAULT_POLL_INTERVAL,
        response_timeout: DEFAULT_RESPONSE_TIMEOUT,
    };
    Ok((hub, config))
}

fn required(value: Option<String>, name: &str, what: &str) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Some(_) => Err(ConfigError::invalid(
            format!("{SECTION}.{name}"),
            format!("is empty; set it to {what}"),
        )),
        None => Err(ConfigError::invalid(
            format!("{SECTION}.{name}"),
            format!("required with [hub.provisioning]: {what}"),
        )),
    }
}

fn decode_key(name: &str, text: &str) -> Result<SecretBytes, ConfigError> {
    match STANDARD.decode(text.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(SecretBytes(bytes)),
        _ => Err(ConfigError::invalid(
            format!("{SECTION}.{name}"),
            "is not a base64 key; copy the primary key from the DPS enrollment",
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, AzureAuth, ConfigError, HubEndpoint, ProvisioningAuth};

    const KEY: &str = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=";

    fn parse_hub(body: &str) -> Result<crate::config::Config, ConfigError> {
        parse(
            &format!("[hub.provisioning]\n{body}"),
            std::path::Path::new("/"),
        )
    }

    fn invalid_key(body: &str) -> String {
        match parse_hub(body) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn an_individual_key_gives_an_unassigned_azure_hub_named_by_the_registration() {
        let cfg = parse_hub(&format!(
            "id_scope = \"0ne00ABC123\"\nregistration_id = \"dev-7\"\nsymmetric_key = \"{KEY}\"\n"
        ))
        .unwrap();
        let p = cfg.hub.provisioning.expect("provisioning");
        assert_eq!(p.global_endpoint, "global.azure-devices-provisioning.net");
        assert!(matches!(
            p.auth,
            ProvisioningAuth::Key {
                from_group: false,
                ..
            }
        ));
        let HubEndpoint::Azure(a) = cfg.hub.endpoint else {
            panic!("Azure")
        };
        assert!(!a.is_assigned());
        assert_eq!(a.device_id, "dev-7");
        assert!(
            matches!(a.auth, AzureAuth::SharedAccessKey(k) if k.0 == b"device-key-for-tests-0123456789!")
        );
    }

    #[test]
    fn a_group_key_is_turned_into_the_device_key() {
        let cfg = parse_hub(
            "id_scope = \"s\"\nregistration_id = \"dev-7\"\n\
             group_key = \"Z3JvdXAta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5IQ==\"\n",
        )
        .unwrap();
        let Some(ProvisioningAuth::Key { key, from_group }) = cfg.hub.provisioning.map(|p| p.auth)
        else {
            panic!("a key")
        };
        assert!(from_group);
        let group = b"group-key-for-tests-0123456789!";
        assert_eq!(
            key,
            crate::config::provisioning::derive_device_key(group, "dev-7")
        );
    }

    #[test]
    fn check_config_names_the_missing_key() {
        let key = format!("symmetric_key = \"{KEY}\"\n");
        assert_eq!(
            invalid_key(&format!("registration_id = \"d\"\n{key}")),
            "hub.provisioning.id_scope"
        );
        assert_eq!(
            invalid_key(&format!("id_scope = \"s\"\n{key}")),
            "hub.provisioning.registration_id"
        );
        assert_eq!(
            invalid_key("id_scope = \"s\"\nregistration_id = \"d\"\n"),
            "hub.provisioning.symmetric_key"
        );
        assert_eq!(
            invalid_key(&format!(
                "id_scope = \"s\"\nregistration_id = \"d\"\n{key}group_key = \"{KEY}\"\n"
            )),
            "hub.provisioning"
        );
        assert_eq!(
            invalid_key("id_scope = \"s\"\nregistration_id = \"d\"\nsymmetric_key = \"%%\"\n"),
            "hub.provisioning.symmetric_key"
        );
        assert_eq!(
            invalid_key(&format!(
                "id_scope = \"s\"\nregistration_id = \"a/b\"\n{key}"
            )),
            "hub.provisioning.registration_id"
        );
    }

    #[test]
    fn provisioning_replaces_a_connection_string_and_a_url() {
        let text = format!(
            "[hub]\nurl = \"mqtts://h\"\ndevice_id = \"d\"\n[hub.provisioning]\nid_scope = \"s\"\n\
             registration_id = \"d\"\nsymmetric_key = \"{KEY}\"\n"
        );
        match parse(&text, std::path::Path::new("/")) {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "hub.provisioning");
                assert!(message.contains("replaces"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
