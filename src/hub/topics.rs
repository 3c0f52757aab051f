//! The topic scheme: Azure IoT Hub's `$iothub/...` topics, or the same shapes
//! scoped under `devices/{id}/...` on a plain broker so one broker serves many
//! devices and an ACL such as `pattern readwrite devices/%c/#` isolates them.

use super::properties;

/// Which topic family to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Azure IoT Hub: methods and twin under `$iothub/`.
    Azure,
    /// Plain broker: everything under `devices/{id}/`.
    Plain,
}

/// Topic names for one device (or module).
#[derive(Debug, Clone)]
pub struct Topics {
    scheme: Scheme,
    device_id: String,
    module_id: Option<String>,
    /// `$iothub` on Azure, `devices/{id}` on a plain broker.
    control_root: String,
    /// `devices/{id}` or `devices/{id}/modules/{mod}`.
    device_root: String,
}

/// A message the session received, classified by topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A direct method call to answer on [`Topics::method_response`].
    MethodCall {
        /// Method name.
        name: String,
        /// Request id to echo.
        rid: String,
    },
    /// A twin response (Azure).
    TwinResponse {
        /// Status code.
        status: u16,
        /// Request id.
        rid: String,
    },
    /// A desired-properties patch (Azure) with its version.
    DesiredPatch {
        /// `$version`, when given.
        version: Option<u64>,
    },
    /// The retained desired document (plain broker).
    DesiredDocument,
    /// A cloud-to-device message with its decoded property bag.
    CloudToDevice {
        /// Decoded properties.
        properties: Vec<(String, Option<String>)>,
    },
    /// Anything else: logged and ignored.
    Unknown,
}

impl Topics {
    /// Topic names for `device_id` (and `module_id`) under `scheme`.
    pub fn new(scheme: Scheme, device_id: &str, module_id: Option<&str>) -> Self {
        let device_root = match module_id {
            Some(m) => format!("devices/{device_id}/modules/{m}"),
            None => format!("devices/{device_id}"),
        };
        let control_root = match scheme {
            Scheme::Azure => "$iothub".to_string(),
            Scheme::Plain => device_root.clone(),
        };
        Self {
            scheme,
            device_id: device_id.to_string(),
            module_id: module_id.map(str::to_string),
            control_root,
            device_root,
        }
    }

    /// The scheme in use.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The module id, if any.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// Subscriptions to (re)establish on every connect. Azure allows at most
    /// five per device.
    pub fn subscriptions(&self) -> Vec<String> {
        let root = &self.control_root;
        let mut subs = vec![format!("{root}/methods/POST/#")];
        match self.scheme {
            Scheme::Azure => {
                subs.push("$iothub/twin/res/#".to_string());
                subs.push("$iothub/twin/PATCH/properties/desired/#".to_string());
            }
            Scheme::Plain => subs.push(format!("{root}/twin/desired")),
        }
        if self.module_id.is_none() {
            subs.push(format!("{}/messages/devicebound/#", self.device_root));
        }
        subs
    }

    /// Telemetry topic with an already-encoded property bag.
    pub fn telemetry(&self, encoded_bag: &str) -> String {
        format!("{}/messages/events/{encoded_bag}", self.device_root)
    }

    /// Where a method answer goes.
    pub fn method_response(&self, status: u16, rid: &str) -> String {
        format!("{}/methods/res/{status}/?$rid={rid}", self.control_root)
    }

    /// Azure twin GET request topic.
    pub fn twin_get(&self, rid: &str) -> String {
        format!("$iothub/twin/GET/?$rid={rid}")
    }

    /// Reported-properties topic: an Azure PATCH with a request id, or the
    /// retained reported document on a plain broker.
    pub fn twin_reported(&self, rid: &str) -> String {
        match self.scheme {
            Scheme::Azure => format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            Scheme::Plain => format!("{}/twin/reported", self.control_root),
        }
    }

    /// Presence topic (plain broker): retained `{"online":...}`.
    pub fn status(&self) -> String {
        format!("{}/status", self.device_root)
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> Inbound {
        if let Some(rest) = strip(topic, &self.control_root, "/methods/POST/") {
            let (name, query) = split_query(rest);
            let name = name.trim_end_matches('/');
            return match query_value(query, "$rid") {
                Some(rid) if !name.is_empty() => Inbound::MethodCall {
                    name: name.to_string(),
                    rid,
                },
                _ => Inbound::Unknown,
            };
        }
        if let Some(rest) = strip(topic, &self.device_root, "/messages/devicebound/") {
            return Inbound::CloudToDevice {
                properties: properties::decode(rest),
            };
        }
        match self.scheme {
            Scheme::Azure => classify_azure_twin(topic),
            Scheme::Plain if topic == format!("{}/twin/desired", self.control_root) => {
                Inbound::DesiredDocument
            }
            Scheme::Plain => Inbound::Unknown,
        }
    }
}

fn classify_azure_twin(topic: &str) -> Inbound {
    if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
        let (status, query) = split_query(rest);
        let status = status.trim_end_matches('/').parse().ok();
        return match (status, query_value(query, "$rid")) {
            (Some(status), Some(rid)) => Inbound::TwinResponse { status, rid },
            _ => Inbound::Unknown,
        };
    }
    if let Some(rest) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
        let (_, query) = split_query(rest);
        return Inbound::DesiredPatch {
            version: query_value(query, "$version").and_then(|v| v.parse().ok()),
        };
    }
    Inbound::Unknown
}

fn strip<'a>(topic: &'a str, root: &str, middle: &str) -> Option<&'a str> {
    topic.strip_prefix(root)?.strip_prefix(middle)
}

fn split_query(s: &str) -> (&str, &str) {
    s.split_once('?').unwrap_or((s, ""))
}

/// Reads `key` from a `?$rid=1&$version=2` style query; accepts `%24` for `$`.
fn query_value(query: &str, key: &str) -> Option<String> {
    properties::decode(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure() -> Topics {
        Topics::new(Scheme::Azure, "dev1", None)
    }

    fn plain() -> Topics {
        Topics::new(Scheme::Plain, "dev1", None)
    }

    #[test]
    fn azure_subscriptions_are_the_hub_topics() {
        assert_eq!(
            azure().subscriptions(),
            [
                "$iothub/methods/POST/#",
                "$iothub/twin/res/#",
                "$iothub/twin/PATCH/properties/desired/#",
                "devices/dev1/messages/devicebound/#"
            ]
        );
    }

    #[test]
    fn plain_subscriptions_are_scoped_under_the_device() {
        assert_eq!(
            plain().subscriptions(),
            [
                "devices/dev1/methods/POST/#",
                "devices/dev1/twin/desired",
                "devices/dev1/messages/devicebound/#"
            ]
        );
    }

    #[test]
    fn method_calls_parse_in_both_schemes() {
        let call = Inbound::MethodCall {
            name: "RestApi".into(),
            rid: "1f".into(),
        };
        assert_eq!(
            azure().classify("$iothub/methods/POST/RestApi/?$rid=1f"),
            call
        );
        assert_eq!(
            plain().classify("devices/dev1/methods/POST/RestApi/?$rid=1f"),
            call
        );
        assert_eq!(
            plain().classify("devices/dev2/methods/POST/RestApi/?$rid=1f"),
            Inbound::Unknown
        );
    }

    #[test]
    fn method_call_without_rid_is_unknown() {
        assert_eq!(
            azure().classify("$iothub/methods/POST/RestApi/"),
            Inbound::Unknown
        );
    }

    #[test]
    fn method_responses_echo_status_and_rid() {
        assert_eq!(
            azure().method_response(404, "7"),
            "$iothub/methods/res/404/?$rid=7"
        );
        assert_eq!(
            plain().method_response(200, "7"),
            "devices/dev1/methods/res/200/?$rid=7"
        );
    }

    #[test]
    fn twin_topics_parse() {
        assert_eq!(
            azure().classify("$iothub/twin/res/200/?$rid=3"),
            Inbound::TwinResponse {
                status: 200,
                rid: "3".into()
            }
        );
        assert_eq!(
            azure().classify("$iothub/twin/res/204/?$rid=4&$version=9"),
            Inbound::TwinResponse {
                status: 204,
                rid: "4".into()
            }
        );
        assert_eq!(
            azure().classify("$iothub/twin/PATCH/properties/desired/?$version=12"),
            Inbound::DesiredPatch { version: Some(12) }
        );
        assert_eq!(
            plain().classify("devices/dev1/twin/desired"),
            Inbound::DesiredDocument
        );
        assert_eq!(azure().twin_get("5"), "$iothub/twin/GET/?$rid=5");
        assert_eq!(plain().twin_reported("5"), "devices/dev1/twin/reported");
    }

    #[test]
    fn c2d_properties_are_decoded() {
        let got = azure().classify("devices/dev1/messages/devicebound/%24.mid=9&type=setAttribute");
        let Inbound::CloudToDevice { properties: p } = got else {
            panic!("not c2d: {got:?}")
        };
        assert_eq!(properties::get(&p, "type"), Some("setAttribute"));
    }

    #[test]
    fn module_topics_use_the_module_path() {
        let t = Topics::new(Scheme::Azure, "dev1", Some("m1"));
        assert_eq!(
            t.telemetry("a=b"),
            "devices/dev1/modules/m1/messages/events/a=b"
        );
        assert_eq!(t.subscriptions().len(), 3);
    }
}
