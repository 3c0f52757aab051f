//! The IoT Hub property bag: `k=v&k=v` with keys and values percent-encoded,
//! as telemetry topics and C2D topics carry it.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but `A-Z a-z 0-9 - _ . ~` is encoded: the hub SDKs do the same,
/// and `+` must never stand for a space in an MQTT topic.
const BAG: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one key or value of a property bag.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, BAG).to_string()
}

/// Encodes `(key, value)` pairs as a property bag, in the given order.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    // Every telemetry publish builds one: the encoder's pieces are pushed
    // straight into the bag, with no string per component.
    let mut out = String::with_capacity(128);
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, BAG));
        out.push('=');
        out.extend(utf8_percent_encode(v, BAG));
    }
    out
}

/// Decodes a property bag. A key without `=` has no value (`None`); `k=` is
/// an empty string. Invalid UTF-8 after decoding is replaced, never a panic.
pub fn decode(bag: &str) -> Vec<(String, Option<String>)> {
    bag.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.split_once('=') {
            Some((k, v)) => (unescape(k), Some(unescape(v))),
            None => (unescape(seg), None),
        })
        .collect()
}

fn unescape(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Looks up a decoded property by key.
pub fn get<'a>(bag: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    bag.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_properties_are_encoded_with_percent_24() {
        assert_eq!(
            encode([("$.mid", "1234"), ("$.ce", "utf-8")]),
            "%24.mid=1234&%24.ce=utf-8"
        );
    }

    #[test]
    fn content_type_slash_and_spaces_are_percent_encoded_never_plus() {
        assert_eq!(
            encode([("$.ct", "application/json"), ("note", "a b+c")]),
            "%24.ct=application%2Fjson&note=a%20b%2Bc"
        );
    }

    #[test]
    fn decode_handles_null_empty_and_encoded_values() {
        let bag = decode("%24.mid=7&%24.to=%2Fdevices%2Fd1&flag&empty=&type=setAttribute");
        assert_eq!(get(&bag, "$.mid"), Some("7"));
        assert_eq!(get(&bag, "$.to"), Some("/devices/d1"));
        assert_eq!(get(&bag, "flag"), None);
        assert_eq!(get(&bag, "empty"), Some(""));
        assert_eq!(get(&bag, "type"), Some("setAttribute"));
    }

    #[test]
    fn decode_survives_garbage() {
        let bag = decode("%ff%fe=%&&=&%zz");
        assert_eq!(bag.len(), 3);
    }
}
