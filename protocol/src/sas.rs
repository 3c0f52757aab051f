//! Azure IoT Hub SAS tokens (spec §2), minted from a device key.
//!
//! `SharedAccessSignature sr={enc(uri)}&sig={enc(b64(HMAC_SHA256(key, enc(uri) "\n" se)))}&se={se}`
//!
//! Encoding follows azure-sdk-for-c: everything but `A-Z a-z 0-9 - _ . ~` is
//! percent-encoded with uppercase hex. The hub verifies the HMAC over the
//! literal `sr` it receives, so the invariant is: sign exactly the bytes put
//! after `sr=`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use crate::Secret;

/// Characters left as-is: the RFC 3986 unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `s` the azure-sdk-for-c way (uppercase hex, `/` encoded).
pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The SAS resource URI: `{host}/devices/{dev}[/modules/{mod}]`.
///
/// `host` is the connection string's `HostName`, never `GatewayHostName`.
pub fn resource_uri(host: &str, device_id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(module) => format!("{host}/devices/{device_id}/modules/{module}"),
        None => format!("{host}/devices/{device_id}"),
    }
}

/// Mints a token for `resource_uri` (un-encoded) that expires at
/// `expiry_unix` (Unix seconds). The result is the MQTT password.
pub fn sign(key: &[u8], resource_uri: &str, expiry_unix: u64) -> Secret {
    let sr = url_encode(resource_uri);
    let sig = signature(key, &string_to_sign(&sr, expiry_unix));
    Secret::new(format_token(&sr, &sig, expiry_unix))
}

/// The `se` (expiry, Unix seconds) of a token, or `None` when it has no
/// parseable `se` field. Field order is not significant.
pub fn expiry_of(token: &str) -> Option<u64> {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .unwrap_or(token);
    fields
        .split('&')
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| k.trim() == "se")
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// `{encoded sr}\n{se}`: exactly what gets signed.
pub fn string_to_sign(encoded_resource_uri: &str, expiry_unix: u64) -> String {
    format!("{encoded_resource_uri}\n{expiry_unix}")
}

/// Standard (padded) base64 of HMAC-SHA256(`key`, `message`), not yet
/// URL-encoded.
pub fn signature(key: &[u8], message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Assembles the token in the Python / azure-sdk-for-c field order. Device
/// keys never carry `skn` (that is only for hub policy keys).
fn format_token(encoded_resource_uri: &str, raw_signature: &str, expiry_unix: u64) -> String {
    format!(
        "SharedAccessSignature sr={encoded_resource_uri}&sig={}&se={expiry_unix}",
        url_encode(raw_signature)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).expect("test key is valid base64")
    }

    /// V1: `damienpontifex/azure-iot-sdk-rs`, also checked with openssl.
    #[test]
    fn v1_full_token_matches() {
        let key = b64("O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=");
        let uri = resource_uri("pontifex.azure-devices.net", "FirstDevice", None);
        assert_eq!(
            sign(&key, &uri, 1_593_353_305).expose(),
            "SharedAccessSignature sr=pontifex.azure-devices.net%2Fdevices%2FFirstDevice\
             &sig=CKYVArtLm72J2UNWLb4V3XqPc679Ig3LX83G3nPExUc%3D&se=1593353305"
        );
    }

    /// V2: Node `_shared_access_signature_test.js`, resource `uri`.
    #[test]
    fn v2_signature_field_matches() {
        let token = sign(b"password", "uri", 12345);
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"
        );
    }

    /// V3: Node `_authorization_test.js`, raw signature of an arbitrary string.
    #[test]
    fn v3_raw_signature_matches() {
        assert_eq!(
            signature(&b64("cGFzc3dvcmQ="), "string-to-sign"),
            "o1n1hiIVgzVA2+krq9ty1Z4xsIJKJZP3dYT8MOi65Y4="
        );
    }

    /// V4: Python `test_signing_mechanism.py`.
    #[test]
    fn v4_raw_signature_matches() {
        assert_eq!(
            signature(
                &b64("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="),
                "sign this message"
            ),
            "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="
        );
    }

    /// V4b: Node device test with the unpadded key `key` (decoded leniently to
    /// 0x91 0xEC); also exercises `+` -> `%2B` in the signature.
    #[test]
    fn v4b_unpadded_key_token_matches() {
        let token = sign(&[0x91, 0xEC], &resource_uri("host", "device", None), 12345);
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=host%2Fdevices%2Fdevice\
             &sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345"
        );
    }

    /// azure-sdk-for-c `test_az_iot_hub_client_sas.c`: device string to sign.
    #[test]
    fn sdk_for_c_device_string_to_sign_matches() {
        let uri = resource_uri("myiothub.azure-devices.net", "my_device", None);
        assert_eq!(
            string_to_sign(&url_encode(&uri), 1_578_941_692),
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"
        );
    }

    /// azure-sdk-for-c: module string to sign.
    #[test]
    fn sdk_for_c_module_string_to_sign_matches() {
        let uri = resource_uri("myiothub.azure-devices.net", "my_device", Some("my_module"));
        assert_eq!(
            string_to_sign(&url_encode(&uri), 1_578_941_692),
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module\n1578941692"
        );
    }

    /// azure-sdk-for-c: password assembled from a placeholder signature (its
    /// `skn` variant is for policy keys, which tether never uses).
    #[test]
    fn sdk_for_c_password_layout_matches() {
        let sr = url_encode(&resource_uri(
            "myiothub.azure-devices.net",
            "my_device",
            None,
        ));
        assert_eq!(
            format_token(
                &sr,
                "cS1eHM/lDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ",
                1_578_941_692
            ),
            "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device\
             &sig=cS1eHM%2FlDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ&se=1578941692"
        );
    }

    #[test]
    fn url_encoding_keeps_only_unreserved_and_uses_uppercase_hex() {
        assert_eq!(url_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(url_encode("a/b+c=d e:ä"), "a%2Fb%2Bc%3Dd%20e%3A%C3%A4");
    }

    #[test]
    fn expiry_is_read_from_a_token_in_any_field_order() {
        let token = sign(b"k", "h/devices/d", 1_700_000_000);
        assert_eq!(expiry_of(token.expose()), Some(1_700_000_000));
        assert_eq!(
            expiry_of("SharedAccessSignature se=42&sr=x&sig=y"),
            Some(42)
        );
        assert_eq!(expiry_of("SharedAccessSignature sr=x&sig=y"), None);
        assert_eq!(expiry_of("SharedAccessSignature sr=x&se=later"), None);
    }
}
