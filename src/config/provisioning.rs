//! `[hub.provisioning]`, validated: the device learns its hub and device id
//! from the Azure IoT Hub Device Provisioning Service (DPS) instead of a
//! connection string.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ClientCert, SecretBytes};

/// The DPS endpoint every ID scope can use.
pub(crate) const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

/// How tether registers with DPS.
#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    /// The DPS instance's ID scope (`0ne...`).
    pub id_scope: String,
    /// The registration id: MQTT client id at DPS, and the device id tether
    /// uses until DPS assigns one.
    pub registration_id: String,
    /// The DPS host; default `GLOBAL_ENDPOINT`.
    pub global_endpoint: String,
    /// Overrides 8883 (443 with the websocket transport); for tests and
    /// private endpoints.
    pub port: Option<u16>,
    /// How the device proves its identity to DPS (and later to the hub).
    pub auth: ProvisioningAuth,
    /// Custom data sent as `payload` with the registration request.
    pub payload: Option<serde_json::Value>,
    /// Retry delays between registration attempts start at this ceiling.
    pub retry_base: Duration,
    /// The longest delay between registration attempts.
    pub retry_cap: Duration,
    /// Wait before polling when DPS gives no `retry-after`.
    pub poll_interval: Duration,
    /// How long DPS may take to answer a request before the attempt counts
    /// as failed.
    pub response_timeout: Duration,
}

/// Proof of identity for DPS; the same proof then opens the assigned hub.
#[derive(Debug, Clone)]
pub enum ProvisioningAuth {
    /// A symmetric device key: the individual enrollment's key, or the one
    /// derived from an enrollment group's key (`derive_device_key`).
    Key {
        /// The device key bytes.
        key: SecretBytes,
        /// Whether it was derived from a group key (for the summary).
        from_group: bool,
    },
    /// The `[hub]` client certificate; its CN is the registration id.
    X509(ClientCert),
}

/// The device key of `registration_id` in an enrollment group with
/// `group_key`: HMAC-SHA256(group key, registration id), as the Azure SDKs
/// derive it (their `ComputeDerivedSymmetricKey`).
pub(crate) fn derive_device_key(group_key: &[u8], registration_id: &str) -> SecretBytes {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(group_key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(registration_id.as_bytes());
    SecretBytes(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::*;

    /// Computed independently with python3:
    /// `base64.b64encode(hmac.new(b64decode(group), b"dev-7", sha256).digest())`.
    #[test]
    fn a_group_key_derives_the_device_key_the_sdks_derive() {
        let group = STANDARD
            .decode("Z3JvdXAta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5IQ==")
            .unwrap();
        let derived = derive_device_key(&group, "dev-7");
        assert_eq!(
            STANDARD.encode(derived.0),
            "cFwvOCqrMhKJIt36EUU9V7IlCFDxvZT4ycldIeZmqf4="
        );
    }
}
