//! What a device presents to the Azure Device Provisioning Service (DPS)
//! in CONNECT (the DPS device API over MQTT): client id = registration id,
//! a username naming the ID scope and API version, and a SAS token for
//! `{idScope}/registrations/{registrationId}` signed with the device key
//! under the policy name `registration`. The device presents it; tests and
//! brokers standing in for DPS configure the same strings.

use crate::{sas, Secret};

/// The DPS device API version named in the username.
pub const API_VERSION: &str = "2019-03-31";
/// The `skn` every device SAS token for DPS carries.
pub const KEY_NAME: &str = "registration";

/// `{idScope}/registrations/{registrationId}/api-version=2019-03-31`.
pub fn username(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}/api-version={API_VERSION}")
}

/// The SAS resource URI: `{idScope}/registrations/{registrationId}`.
pub fn resource_uri(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The password for DPS: a SAS token for the registration that expires at
/// `expiry_unix`, with `skn=registration`. Encoded like the hub's tokens
/// (uppercase hex); DPS, like the hub, verifies the HMAC over the `sr` it
/// receives.
pub fn sas_token(key: &[u8], id_scope: &str, registration_id: &str, expiry_unix: u64) -> Secret {
    let sr = sas::url_encode(&resource_uri(id_scope, registration_id));
    let sig = sas::signature(key, &sas::string_to_sign(&sr, expiry_unix));
    Secret::new(format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry_unix}&skn={KEY_NAME}",
        sas::url_encode(&sig)
    ))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::*;

    #[test]
    fn the_username_is_the_documented_form() {
        assert_eq!(
            username("0ne00ABC123", "dev-7"),
            "0ne00ABC123/registrations/dev-7/api-version=2019-03-31"
        );
    }

    /// Computed independently with python3: `quote(uri, safe="")`, then
    /// `b64encode(hmac.new(key, f"{sr}\n{se}", sha256))`, quoted again.
    #[test]
    fn the_sas_token_matches_one_computed_with_python_hmac() {
        let key = STANDARD
            .decode("ZGV2aWNlLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OSE=")
            .unwrap();
        assert_eq!(
            sas_token(&key, "0ne00ABC123", "dev-7", 1_900_003_600).expose(),
            "SharedAccessSignature sr=0ne00ABC123%2Fregistrations%2Fdev-7\
             &sig=gONCja%2ByPQO2XtUnFYBbVt7XOdKI0cBuXtz%2BnTzk5Pc%3D&se=1900003600\
             &skn=registration"
        );
    }
}
