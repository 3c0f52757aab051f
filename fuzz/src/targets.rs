//! Fuzz targets: each takes arbitrary bytes, must not panic, and returns a
//! short signature of the outcome. The driver (`main.rs`) keeps inputs that
//! produce a signature it has not seen (coverage-free feedback); the test
//! `tests/it/fuzz_corpus.rs` includes this file to replay the corpus.

use std::path::Path;

/// A fuzz target.
pub(super) type Target = fn(&[u8]) -> String;

/// Every target by name (also the corpus folder name).
pub(super) const TARGETS: &[(&str, Target)] = &[
    ("connection_string", connection_string),
    ("config", config),
    ("relay_request", relay_request),
    ("relay_path", relay_path),
    ("property_bag", property_bag),
    ("admin_attributes", admin_attributes),
    ("aflib_message", aflib_message),
    ("aflib_module", aflib_module),
];

/// A signature of an outcome: `ok`, or the error text without digits
/// (so a length or offset does not make every input "new").
fn sig<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .to_string()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(60)
            .collect(),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn connection_string(data: &[u8]) -> String {
    sig(&tether::config::connection_string::ConnectionString::parse(
        &text(data),
    ))
}

fn config(data: &[u8]) -> String {
    // A base directory that does not exist: relative files never resolve.
    sig(&tether::config::parse(
        &text(data),
        Path::new("/nonexistent/tether-fuzz"),
    ))
}

fn relay_request(data: &[u8]) -> String {
    let r = tether_protocol::relay::RestRequest::parse(data);
    match &r {
        Ok(req) => format!("ok {:?}", req.method),
        Err(e) => format!("err {}", sig::<(), _>(&Err(format!("{e:?}")))),
    }
}

fn relay_path(data: &[u8]) -> String {
    let raw = text(data);
    let r = tether_protocol::relay::path::check(&raw);
    if r.is_ok() {
        let _ = tether_protocol::relay::path::allowed(&raw, &["/api/".into(), "/".into()]);
    }
    sig(&r.map_err(|e| format!("{e:?}")))
}

/// Lines are alternating keys and values; encoding then decoding must give
/// them back exactly.
fn property_bag(data: &[u8]) -> String {
    use tether_protocol::properties::{decode, encode};
    let raw = text(data);
    let _ = decode(&raw);
    let lines: Vec<&str> = raw.split('\n').collect();
    let pairs: Vec<(&str, &str)> = lines
        .chunks(2)
        .map(|c| (c[0], *c.get(1).unwrap_or(&"")))
        .collect();
    let bag = encode(pairs.iter().copied());
    let back = decode(&bag);
    let want: Vec<(String, Option<String>)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    assert_eq!(back, want, "property bag round trip of {bag:?}");
    format!("pairs {}", pairs.len().min(4))
}

fn admin_attributes(data: &[u8]) -> String {
    sig(&tether_protocol::afero::parse_changes(data).map_err(|e| format!("{e:?}")))
}

fn aflib_message(data: &[u8]) -> String {
    sig(&firmware_bridge::message::Message::decode(data))
}

/// The afLib4 protocol core (sync frames, payloads, timeouts) fed arbitrary
/// bytes in chunks, with time passing between them.
fn aflib_module(data: &[u8]) -> String {
    use firmware_bridge::{AttributeTable, Config, Module};
    let mut m = Module::new(Config::default(), AttributeTable::new());
    let mut now = 0u64;
    let mut events = 0usize;
    for chunk in data.chunks(7) {
        now += u64::from(chunk[0] % 64) * 10;
        m.handle_rx(chunk, now);
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {
            events += 1;
        }
    }
    format!("up {} events {}", m.is_up(), events.min(8))
}
