//! Shared test helpers: test data, a trace parser and session builders.
#![allow(dead_code)] // each test binary uses a different part

use firmware_bridge::{AttributeTable, Config, Event, Module, Profile};

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{rel}")).expect("test data file is present")
}

/// Parses "30 00 0a" into bytes.
pub fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex in test data"))
        .collect()
}

pub fn profile(name: &str) -> Profile {
    Profile::from_json(&read(&format!("profiles/{name}.json"))).expect("profile loads")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    ToMcu,
    FromMcu,
}

/// One annotated frame line of a trace: time in ms, direction, bytes.
#[derive(Debug, Clone)]
pub struct Line {
    pub ms: u64,
    pub dir: Dir,
    pub bytes: Vec<u8>,
}

/// Frame lines of a trace (the annotated part, not the raw chunk log).
pub fn trace(name: &str) -> Vec<Line> {
    let text = read(&format!("traces/{name}"));
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# ----") {
            break;
        }
        let fields: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let dir = match fields.get(1) {
            Some(&"ASR->MCU") => Dir::ToMcu,
            Some(&"MCU->ASR") => Dir::FromMcu,
            _ => continue,
        };
        let secs: f64 = fields[0].parse().expect("time stamp");
        out.push(Line {
            ms: (secs * 1000.0).round() as u64,
            dir,
            bytes: hex(fields[2]),
        });
    }
    out
}

/// Values the reference emulator announced at boot (vectors A4–A12).
pub fn emulator_table(profile_name: &str, drop: &[u16]) -> AttributeTable {
    let mut p = profile(profile_name);
    p.attributes.retain(|a| !drop.contains(&a.id));
    let mut t = p.to_table();
    t.set_value(2001, 1234u64.to_le_bytes().to_vec());
    t.set_value(2003, 30000u64.to_le_bytes().to_vec());
    t.set_value(2004, 7u64.to_le_bytes().to_vec());
    t.set_value(65019, b"0,3,test-reboot-reason".to_vec());
    t.set_value(1202, hex("01 23 45 67 89 ab cd ef"));
    t.set_value(65004, b"MyWiFi".to_vec());
    t.set_value(65005, vec![3]);
    t.set_value(65015, 1_700_000_000u32.to_le_bytes().to_vec());
    t
}

/// A session configured like the emulator, without the liveness probe so
/// replays see only the traffic in the trace.
pub fn emulator_module(profile_name: &str, drop: &[u16]) -> Module {
    let config = Config {
        probe_interval_ms: None,
        ..Config::default()
    };
    Module::new(config, emulator_table(profile_name, drop))
}

pub fn drain_tx(m: &mut Module) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = m.poll_transmit() {
        out.extend(chunk);
    }
    out
}

pub fn drain_events(m: &mut Module) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// Host action taken at a trace time (before the line at or after it).
pub type Action = (u64, Box<dyn Fn(&mut Module, u64)>);

/// Replays a trace: MCU bytes go in at their times, host actions run at
/// theirs, and everything we send is compared with the emulator's bytes.
/// Lines inside `skip` ranges (ms) are left out on both sides.
pub fn replay(
    m: &mut Module,
    lines: &[Line],
    until_ms: u64,
    actions: Vec<Action>,
    skip: &[(u64, u64)],
) -> Vec<Event> {
    let mut expected = Vec::new();
    let mut actual = Vec::new();
    let mut events = Vec::new();
    let mut actions = actions.into_iter().peekable();
    for line in lines
        .iter()
        .filter(|l| l.ms <= until_ms && !skip.iter().any(|(a, b)| l.ms >= *a && l.ms < *b))
    {
        while let Some((at, _)) = actions.peek() {
            if *at > line.ms {
                break;
            }
            let (at, act) = actions.next().expect("peeked");
            m.handle_timeout(at);
            act(m, at);
        }
        m.handle_timeout(line.ms);
        match line.dir {
            Dir::FromMcu => m.handle_rx(&line.bytes, line.ms),
            Dir::ToMcu => expected.extend_from_slice(&line.bytes),
        }
        actual.extend(drain_tx(m));
        events.extend(drain_events(m));
    }
    let as_hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first_diff = actual
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let from = first_diff.saturating_sub(40);
    assert_eq!(
        as_hex(&actual[from..]),
        as_hex(&expected[from..]),
        "our bytes differ from the emulator's at byte {first_diff}"
    );
    events
}
