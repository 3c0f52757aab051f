//! Azure IoT Hub Device Provisioning Service (DPS): a device with only
//! `[hub.provisioning]` in its config registers with DPS, learns its hub and
//! device id, caches them in the state directory and connects there; a
//! restart uses the cache without asking DPS again, and a hub that refuses
//! the cached identity (device disabled, deleted or moved) makes tether
//! register again, with backoff.
//!
//! - The CONNECT DPS expects (username, SAS token with `skn=registration`)
//!   is protocol knowledge: [`tether_protocol::dps`].
//! - `wire`: topics and documents of the DPS device API.
//! - `machine`: one registration, sans-IO (register, poll, retry-after).
//! - `driver`: one registration over rumqttc.
//! - [`cache`]: the assignment on disk, written atomically, checked on read.
//! - `supervisor`: the task tying DPS, the cache and the hub session
//!   together; `status`: what `/healthz` shows of it.

pub(crate) mod cache;
mod driver;
pub(crate) mod error;
pub(crate) mod machine;
pub(crate) mod status;
mod supervisor;
pub(crate) mod wire;

pub(crate) use status::ProvisioningHealth;
pub(crate) use supervisor::{prepare, spawn};

/// Where DPS placed the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// The IoT hub's host name (`assignedHub`).
    pub(crate) assigned_hub: String,
    /// The device id in that hub (`deviceId`).
    pub(crate) device_id: String,
}

/// The longest device id IoT Hub accepts.
const MAX_DEVICE_ID: usize = 128;

impl Assignment {
    /// An assignment from what DPS (or the cache) says, checked: both
    /// parts present and usable in a host name, a username and topics.
    ///
    /// # Errors
    /// A message naming what is missing or unusable.
    pub(crate) fn new(
        assigned_hub: Option<String>,
        device_id: Option<String>,
    ) -> Result<Self, String> {
        let hub = assigned_hub.ok_or("the assignment names no assignedHub")?;
        let device = device_id.ok_or("the assignment names no deviceId")?;
        if hub.is_empty()
            || !hub
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!("assignedHub {hub:?} is not a host name"));
        }
        if device.is_empty()
            || device.len() > MAX_DEVICE_ID
            || device.contains(|c: char| "/+#".contains(c) || c.is_whitespace() || c.is_control())
        {
            return Err(format!("deviceId {device:?} is not a usable device id"));
        }
        Ok(Self {
            assigned_hub: hub,
            device_id: device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_need_a_host_name_and_a_plain_device_id() {
        let ok = Assignment::new(Some("h.azure-devices.net".into()), Some("dev-7".into()));
        assert!(ok.is_ok());
        for (hub, dev) in [
            (None, Some("d")),
            (Some("h"), None),
            (Some("h/x"), Some("d")),
            (Some(""), Some("d")),
            (Some("h"), Some("a/b")),
            (Some("h"), Some("a#")),
            (Some("h"), Some("")),
        ] {
            let r = Assignment::new(hub.map(String::from), dev.map(String::from));
            assert!(r.is_err(), "{hub:?} {dev:?}");
        }
    }
}
