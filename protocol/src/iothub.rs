//! What Azure IoT Hub expects in MQTT CONNECT besides the password (a SAS
//! token, [`crate::sas`]): the username naming the hub, the client and the
//! API version. The device presents it; tests and brokers standing in for
//! the hub configure the same string.

use crate::sas::url_encode;

/// The IoT Hub API version named in the username (and in the hub's HTTPS
/// file-upload API).
pub const API_VERSION: &str = "2021-04-12";

/// `{HostName}/{clientId}/?api-version={API_VERSION}&DeviceClientType={agent}`,
/// with `device_client_type` (e.g. `tether/0.1.0`) percent-encoded.
///
/// `client_id` is `{deviceId}` or `{deviceId}/{moduleId}`; `host_name` is
/// the connection string's `HostName`.
pub fn username(host_name: &str, client_id: &str, device_client_type: &str) -> String {
    format!(
        "{host_name}/{client_id}/?api-version={API_VERSION}&DeviceClientType={}",
        url_encode(device_client_type)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_username_names_host_client_api_version_and_agent() {
        assert_eq!(
            username("h.net", "d/m", "tether/1.2.3"),
            "h.net/d/m/?api-version=2021-04-12&DeviceClientType=tether%2F1.2.3"
        );
    }
}
