//! Replays of the live traces: with the MCU's real bytes fed in, our
//! session must send exactly what the reference emulator sent (which the
//! real afLib4 accepted).
#![cfg(feature = "std")] // the helpers load profiles

mod common;

use common::{emulator_module, replay, trace, Action};
use firmware_bridge::message::reason;
use firmware_bridge::{Event, LinkDownReason, Outcome};

fn at(ms: u64, f: impl Fn(&mut firmware_bridge::Module, u64) + 'static) -> Action {
    (ms, Box::new(f))
}

/// The first boot of trace-afblink (0.30–1.68 s) byte for byte: zero sync,
/// 1208, the MCU's SET 1209 answered, the announcements, SET_DEFAULT/GET of
/// attribute 1, LINKED, INITIALIZED, then SET 1207 and GET 1206 answered.
#[test]
fn the_boot_sequence_matches_the_afblink_capture_byte_for_byte() {
    let mut m = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let events = replay(&mut m, &trace("trace-afblink.txt"), 1_678, vec![], &[]);
    assert!(events.contains(&Event::LinkUp));
    assert!(events.contains(&Event::McuUpdate {
        attr_id: 1,
        value: vec![0],
        state: 0,
        reason: reason::GET_RESPONSE
    }));
    assert!(m.is_up());
}

/// The whole afBlink run: button UPDATE, LED SETs answered, our SETs echoed
/// by id, our GET matched by attribute, the reboot command 65012 and the
/// complete second boot. The emulator's unprompted UPDATE_REJECTED test
/// (13.22 s) is left out because a session only rejects an actual UPDATE.
#[test]
fn the_whole_afblink_trace_replays_including_the_reboot_command() {
    let mut m = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let actions = vec![
        at(1_678, |m, t| {
            m.update_module_attribute(1030, vec![1, 0], reason::LOCAL_OR_MCU_UPDATE, t)
                .unwrap()
        }),
        at(7_189, |m, t| {
            m.set_attribute(1, vec![0], t).unwrap();
        }),
        at(9_703, |m, t| {
            m.set_attribute(1, vec![1], t).unwrap();
        }),
        at(12_211, |m, t| {
            m.get_attribute(1, t).unwrap();
        }),
        at(13_771, |m, t| {
            m.set_attribute(1, vec![0], t).unwrap();
        }),
        at(14_809, |m, t| {
            m.update_module_attribute(65013, vec![3], reason::LOCAL_OR_MCU_UPDATE, t)
                .unwrap()
        }),
    ];
    let events = replay(
        &mut m,
        &trace("trace-afblink.txt"),
        20_000,
        actions,
        &[(13_218, 13_225)],
    );
    let sets: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::SetResult { .. }))
        .collect();
    assert_eq!(sets.len(), 3);
    assert!(events.iter().any(|e| matches!(e, Event::GetResult { attr_id: 1, outcome: Outcome::Updated(v), .. } if v == &[1])));
    assert!(events.contains(&Event::ModuleAttributeSet {
        attr_id: 1024,
        value: vec![1, 0]
    }));
    assert!(events.contains(&Event::LinkDown(LinkDownReason::RebootRequested)));
    assert_eq!(events.iter().filter(|e| **e == Event::LinkUp).count(), 2);
}

/// trace-fullapi: the MCU's SET of a read-only attribute gets FORBIDDEN, a
/// GET of an unknown attribute gets UNKNOWN_UUID with an empty value, and
/// our SETs come back accepted (reason 2) and refused (state 5, 0xFD).
/// 65021 is dropped from the table because the emulator treated it as unknown.
#[test]
fn the_full_api_trace_replays_with_forbidden_unknown_and_refused_answers() {
    let mut m = emulator_module("full_api_example_Plumo-2D_UART", &[65021]);
    let actions = vec![
        at(27_762, |m, t| {
            m.set_attribute(1, vec![7], t).unwrap();
        }),
        at(34_265, |m, t| {
            m.set_attribute(1, vec![9], t).unwrap();
        }),
    ];
    let events = replay(&mut m, &trace("trace-fullapi.txt"), 40_000, actions, &[]);
    let outcomes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SetResult { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Updated(vec![7]),
            Outcome::Refused {
                state: 5,
                reason: reason::INTERNAL_SET_REJECTED,
                value: vec![7]
            }
        ]
    );
}
