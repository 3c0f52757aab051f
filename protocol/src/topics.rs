//! The topic scheme: Azure IoT Hub's `$iothub/...` topics, or the same shapes
//! scoped under `devices/{id}/...` on a plain broker so one broker serves many
//! devices and an ACL such as `pattern readwrite devices/%c/#` isolates them.
//!
//! Both ends of the plain-broker scheme are written here, once: [`Topics`]
//! is the device's side (what tether subscribes to, publishes and parses),
//! [`cloud`] the cloud side's (`tether-cloud`, the simulators' observer).
//! Pure string work, no IO: the tests check that each side parses what the
//! other builds.

use super::properties;

/// The first level of every device-scoped topic.
const DEVICES: &str = "devices";
/// After the control root: method calls, `.../{name}/?$rid={rid}`.
const METHOD_CALLS: &str = "/methods/POST/";
/// After the control root: method answers, `.../{status}/?$rid={rid}`.
const METHOD_ANSWERS: &str = "/methods/res/";
/// After the device root: telemetry, `.../{property bag}`.
const EVENTS: &str = "/messages/events/";
/// After the device root: cloud-to-device messages.
const DEVICEBOUND: &str = "/messages/devicebound/";
/// After the device root: the retained presence (plain broker).
const STATUS: &str = "/status";
/// After the plain control root: the retained desired document.
const DESIRED: &str = "/twin/desired";
/// After the plain control root: the retained reported document.
const REPORTED: &str = "/twin/reported";

/// `devices/{id}`: a device's root, and on a plain broker its control root.
fn device_root(device_id: &str) -> String {
    format!("{DEVICES}/{device_id}")
}

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
            Some(m) => format!("{}/modules/{m}", self::device_root(device_id)),
            None => self::device_root(device_id),
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
        let mut subs = vec![format!("{root}{METHOD_CALLS}#")];
        match self.scheme {
            Scheme::Azure => {
                subs.push("$iothub/twin/res/#".to_string());
                subs.push("$iothub/twin/PATCH/properties/desired/#".to_string());
            }
            Scheme::Plain => subs.push(format!("{root}{DESIRED}")),
        }
        if self.module_id.is_none() {
            subs.push(format!("{}{DEVICEBOUND}#", self.device_root));
        }
        subs
    }

    /// Telemetry topic with an already-encoded property bag.
    pub fn telemetry(&self, encoded_bag: &str) -> String {
        format!("{}{EVENTS}{encoded_bag}", self.device_root)
    }

    /// Where a method answer goes.
    pub fn method_response(&self, status: u16, rid: &str) -> String {
        format!("{}{METHOD_ANSWERS}{status}/?$rid={rid}", self.control_root)
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
            Scheme::Plain => format!("{}{REPORTED}", self.control_root),
        }
    }

    /// Presence topic (plain broker): retained `{"online":...}`.
    pub fn status(&self) -> String {
        format!("{}{STATUS}", self.device_root)
    }

    /// Classifies an incoming topic.
    pub fn classify(&self, topic: &str) -> Inbound {
        if let Some(rest) = strip(topic, &self.control_root, METHOD_CALLS) {
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
        if let Some(rest) = strip(topic, &self.device_root, DEVICEBOUND) {
            return Inbound::CloudToDevice {
                properties: properties::decode(rest),
            };
        }
        match self.scheme {
            Scheme::Azure => classify_azure_twin(topic),
            Scheme::Plain if strip(topic, &self.control_root, DESIRED) == Some("") => {
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

/// The cloud side of the plain-broker scheme: calling methods on devices,
/// reading their answers, presence and telemetry.
pub mod cloud {
    use super::{
        device_root, query_value, split_query, DEVICES, EVENTS, METHOD_ANSWERS, METHOD_CALLS,
        STATUS,
    };

    /// Every device's method answers, subscribed once by the caller.
    pub const ANSWERS_FILTER: &str = "devices/+/methods/res/#";
    /// Every device's retained presence.
    pub const PRESENCE_FILTER: &str = "devices/+/status";

    /// A device's answer to a method call, from its topic.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MethodAnswer<'a> {
        /// The device that answered.
        pub device: &'a str,
        /// The call's `$rid`, decoded.
        pub rid: String,
        /// The status the device gave.
        pub status: u16,
    }

    /// Whether `id` can be one topic level (a device id, a method name):
    /// not empty, at most 128 bytes, no `/`, `+`, `#` or NUL.
    pub fn is_topic_level(id: &str) -> bool {
        !id.is_empty() && id.len() <= 128 && !id.contains(['/', '+', '#', '\0'])
    }

    /// Where a call of `method` on `device` goes, answered under `rid`.
    pub fn method_call(device: &str, method: &str, rid: &str) -> String {
        format!("{}{METHOD_CALLS}{method}/?$rid={rid}", device_root(device))
    }

    /// `devices/{id}/methods/res/{status}/?$rid={rid}` → the answer;
    /// `None` for any other topic.
    pub fn parse_method_answer(topic: &str) -> Option<MethodAnswer<'_>> {
        let (device, rest) = split_device(topic)?;
        let rest = rest.strip_prefix(METHOD_ANSWERS)?;
        let (status, query) = split_query(rest);
        let status = status.strip_suffix('/')?.parse().ok()?;
        let rid = query_value(query, "$rid")?;
        Some(MethodAnswer {
            device,
            rid,
            status,
        })
    }

    /// `devices/{id}/status` → the device id (modules have no presence).
    pub fn parse_presence(topic: &str) -> Option<&str> {
        let (device, rest) = split_device(topic)?;
        (rest == STATUS).then_some(device)
    }

    /// The filter for everything `device` sends as telemetry.
    pub fn telemetry_filter(device: &str) -> String {
        format!("{}{EVENTS}#", device_root(device))
    }

    /// `devices/{id}{rest}` → (`id`, `rest`), `id` one non-empty level.
    fn split_device(topic: &str) -> Option<(&str, &str)> {
        let rest = topic.strip_prefix(DEVICES)?.strip_prefix('/')?;
        let at = rest.find('/')?;
        let (device, rest) = rest.split_at(at);
        (!device.is_empty()).then_some((device, rest))
    }
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

    /// MQTT filter matching (`+` one level, `#` the rest), to check that
    /// a subscription catches what the other side publishes.
    fn matches(filter: &str, topic: &str) -> bool {
        let mut levels = topic.split('/');
        for f in filter.split('/') {
            match (f, levels.next()) {
                ("#", _) => return true,
                ("+", Some(_)) => {}
                (f, Some(l)) if f == l => {}
                _ => return false,
            }
        }
        levels.next().is_none()
    }

    #[test]
    fn the_device_parses_the_calls_the_cloud_makes() {
        let call = cloud::method_call("dev1", "RestApi", "r-1");
        assert_eq!(call, "devices/dev1/methods/POST/RestApi/?$rid=r-1");
        assert!(plain().subscriptions().iter().any(|f| matches(f, &call)));
        assert_eq!(
            plain().classify(&call),
            Inbound::MethodCall {
                name: "RestApi".into(),
                rid: "r-1".into()
            }
        );
    }

    #[test]
    fn the_cloud_parses_the_answers_and_presence_the_device_sends() {
        let answer = plain().method_response(404, "r-2");
        assert!(matches(cloud::ANSWERS_FILTER, &answer));
        assert_eq!(
            cloud::parse_method_answer(&answer),
            Some(cloud::MethodAnswer {
                device: "dev1",
                rid: "r-2".into(),
                status: 404
            })
        );
        let status = plain().status();
        assert!(matches(cloud::PRESENCE_FILTER, &status));
        assert_eq!(cloud::parse_presence(&status), Some("dev1"));
        let events = plain().telemetry("%24.ct=application%2Fjson");
        assert!(matches(&cloud::telemetry_filter("dev1"), &events));
        assert!(!matches(&cloud::telemetry_filter("dev2"), &events));
    }

    #[test]
    fn the_cloud_refuses_topics_that_are_not_answers_or_presence() {
        let answer = |t| cloud::parse_method_answer(t).map(|a| (a.device, a.rid, a.status));
        assert_eq!(
            answer("devices/dev1/methods/res/200/?x=1&$rid=r2"),
            Some(("dev1", "r2".to_string(), 200))
        );
        assert_eq!(
            answer("devices/dev1/methods/res/200/?%24rid=r3"),
            Some(("dev1", "r3".to_string(), 200))
        );
        for bad in [
            "devices/dev1/methods/res/abc/?$rid=1",
            "devices/dev1/methods/res/200?$rid=1",
            "devices/dev1/methods/res/200/",
            "devices/dev1/methods/POST/x/?$rid=1",
            "devices//methods/res/200/?$rid=1",
            "$iothub/methods/res/200/?$rid=1",
        ] {
            assert_eq!(answer(bad), None, "{bad}");
        }
        assert_eq!(cloud::parse_presence("devices/dev1/modules/m/status"), None);
        assert_eq!(cloud::parse_presence("devices//status"), None);
        assert_eq!(cloud::parse_presence("devices/dev1/statusx"), None);
    }

    #[test]
    fn ids_that_would_change_the_topic_are_not_topic_levels() {
        assert!(cloud::is_topic_level("ECY-1.a_b:c@d"));
        assert!(!cloud::is_topic_level(&"x".repeat(129)));
        for bad in ["", "a/b", "+", "a#", "x\0"] {
            assert!(!cloud::is_topic_level(bad), "{bad:?}");
        }
    }
}
