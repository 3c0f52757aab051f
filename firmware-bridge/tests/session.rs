//! Behaviour of the session against a scripted MCU: handshake rules,
//! faults, timeouts, reboot, liveness probe and ownership.
#![cfg(feature = "std")] // the helpers load profiles

mod common;

use common::{drain_events, drain_tx, emulator_module, emulator_table, hex, replay, trace};
use firmware_bridge::frame::{encode_payload, SyncFrame};
use firmware_bridge::message::{reason, Message};
use firmware_bridge::{
    Config, Error, Event, LinkDownReason, Module, Outcome, ProtocolError, QUIET_AFTER_BROKEN_MS,
};

const BOOTED_AT: u64 = 1_678;

/// A session that went through the captured afBlink boot.
fn booted(config: Config) -> Module {
    let mut m = Module::new(config, emulator_table("afBlink_Plumo-2D_UART", &[]));
    replay(&mut m, &trace("trace-afblink.txt"), BOOTED_AT, vec![], &[]);
    assert!(m.is_up());
    drain_events(&mut m);
    m
}

fn quiet_booted() -> Module {
    booted(Config {
        probe_interval_ms: None,
        ..Config::default()
    })
}

fn sync(mcu: u16, asr: u16) -> Vec<u8> {
    SyncFrame::response(mcu, asr).to_bytes().to_vec()
}

fn ack(mcu: u16, asr: u16) -> Vec<u8> {
    let mut f = sync(mcu, asr);
    f[0] = 0x31;
    f[5] = f[5].wrapping_add(1);
    f
}

/// The MCU sends `message` through a full handshake, byte by byte.
fn mcu_sends(m: &mut Module, message: &[u8], t: u64) {
    let payload = encode_payload(message).unwrap();
    let n = payload.len() as u16;
    for b in sync(n, 0) {
        m.handle_rx(&[b], t);
    }
    assert_eq!(
        drain_tx(m),
        [sync(n, 0), vec![0x32]].concat(),
        "response echoes M, our count 0"
    );
    m.handle_rx(&ack(n, 0), t);
    assert_eq!(drain_tx(m), [0x32]);
    for b in &payload {
        m.handle_rx(&[*b], t);
    }
    assert_eq!(drain_tx(m), [0x32], "procedure complete");
}

/// The MCU answers our READY with a zero sync and takes our message.
fn mcu_receives(m: &mut Module, t: u64) -> Message {
    m.handle_rx(&sync(0, 0), t);
    let resp = drain_tx(m);
    let n = u16::from_le_bytes([resp[3], resp[4]]);
    assert_eq!(resp[6], 0x32);
    m.handle_rx(&ack(0, n), t);
    let out = drain_tx(m);
    assert_eq!((out[0], out[out.len() - 1]), (0x32, 0x32));
    Message::decode(&out[3..out.len() - 1]).unwrap()
}

#[test]
fn a_sync_request_with_mcu_data_gets_our_count_zero_even_when_we_have_data() {
    let mut m = quiet_booted();
    let t = BOOTED_AT + 100;
    m.update_module_attribute(65005, vec![2], reason::LOCAL_OR_MCU_UPDATE, t)
        .unwrap();
    assert_eq!(drain_tx(&mut m), [0x32], "our offer");
    mcu_sends(&mut m, &hex("0d 05 01 00 00 01 01 00 01"), t + 1);
    assert!(
        drain_tx(&mut m).is_empty(),
        "quiet gap before the next READY"
    );
    m.handle_timeout(t + 1 + firmware_bridge::GAP_MS);
    assert_eq!(drain_tx(&mut m), [0x32]);
    let msg = mcu_receives(&mut m, t + 40);
    assert_eq!(
        msg.encode(),
        hex("0d 00 ed fd 00 01 01 00 02"),
        "vector A35"
    );
}

#[test]
fn a_sync_request_with_a_bad_checksum_is_reported_and_the_next_one_answered() {
    let mut m = quiet_booted();
    m.handle_rx(&hex("30 0a 00 00 00 c5"), 2_000);
    assert!(drain_tx(&mut m).is_empty());
    assert!(matches!(
        drain_events(&mut m)[..],
        [Event::ProtocolError(ProtocolError::BadSyncFrame(_))]
    ));
    mcu_sends(&mut m, &hex("0b 07 00 04 02 00 00 00"), 2_001);
    assert!(drain_events(&mut m).contains(&Event::ModuleAttributeSet {
        attr_id: 1024,
        value: vec![0, 0]
    }));
}

/// Vector T5: the MCU restarts with a SYNC REQUEST where we expected its ACK.
#[test]
fn a_new_sync_request_while_waiting_for_the_ack_restarts_the_transaction() {
    let mut m = quiet_booted();
    let handle = m.set_attribute(1, vec![0], 2_000).unwrap();
    assert_eq!(drain_tx(&mut m), [0x32], "exactly one READY");
    m.handle_rx(&sync(0, 0), 2_001);
    assert_eq!(drain_tx(&mut m), hex("30 00 00 09 00 39 32"));
    m.handle_rx(&sync(0, 0), 2_002);
    assert_eq!(
        drain_tx(&mut m),
        hex("30 00 00 09 00 39 32"),
        "same offer again"
    );
    m.handle_rx(&ack(0, 9), 2_003);
    assert_eq!(drain_tx(&mut m), hex("32 07 00 0b 40 01 00 01 00 00 32"));
    mcu_sends(&mut m, &hex("0d 40 01 00 00 02 01 00 00"), 2_004);
    let events = drain_events(&mut m);
    assert_eq!(
        events,
        [Event::SetResult {
            handle,
            attr_id: 1,
            outcome: Outcome::Updated(vec![0])
        }]
    );
}

#[test]
fn ready_is_repeated_each_second_a_few_times_then_the_link_goes_quiet() {
    let mut m = quiet_booted();
    m.get_attribute(1, 2_000).unwrap();
    assert_eq!(drain_tx(&mut m), [0x32]);
    let mut readies = 0;
    let mut t = 2_000;
    while t < 2_000 + QUIET_AFTER_BROKEN_MS {
        t += 100;
        m.handle_timeout(t);
        readies += drain_tx(&mut m).len();
    }
    assert_eq!(readies, usize::from(firmware_bridge::READY_RETRIES));
    assert!(drain_events(&mut m).contains(&Event::ProtocolError(ProtocolError::NoSyncRequest)));
    m.handle_timeout(2_000 + 4_000 + QUIET_AFTER_BROKEN_MS);
    assert_eq!(
        drain_tx(&mut m),
        [0x32],
        "offered again after the quiet period"
    );
}

/// Line noise outside frames is thrown away, as afLib does, but counted;
/// a sync frame cut short by a lost byte is reported when it times out.
#[test]
fn stray_bytes_are_counted_and_a_truncated_sync_frame_is_reported() {
    let mut m = quiet_booted();
    let before = m.stray_bytes();
    m.handle_rx(&hex("00 a5 ff 5a"), 2_000);
    assert_eq!(m.stray_bytes(), before + 4);
    assert!(drain_events(&mut m).is_empty());
    m.handle_rx(&hex("30 0a 00 00 00"), 2_001);
    m.handle_timeout(2_001 + 2_000);
    assert_eq!(
        drain_events(&mut m),
        [Event::ProtocolError(ProtocolError::TruncatedSyncFrame(5))]
    );
    // The MCU's retry is served as usual.
    mcu_sends(&mut m, &hex("0b 07 00 04 02 00 00 00"), 4_100);
    assert!(drain_events(&mut m).contains(&Event::ModuleAttributeSet {
        attr_id: 1024,
        value: vec![0, 0]
    }));
    m.restart(5_000);
    assert_eq!(m.stray_bytes(), before + 4, "a restart keeps the count");
}

#[test]
fn no_ready_is_sent_while_the_mcu_holds_our_sync_response_and_a_broken_transaction_means_silence() {
    let mut m = quiet_booted();
    m.get_attribute(1, 2_000).unwrap();
    drain_tx(&mut m);
    m.handle_rx(&sync(0, 0), 2_001);
    assert_eq!(drain_tx(&mut m), hex("30 00 00 06 00 36 32"));
    for t in (2_001..2_001 + QUIET_AFTER_BROKEN_MS + 1_000).step_by(50) {
        m.handle_timeout(t);
        let out = drain_tx(&mut m);
        assert!(
            out.is_empty() || t > 2_001 + 2_000 + QUIET_AFTER_BROKEN_MS,
            "spoke at {t}: {out:?}"
        );
    }
    assert!(drain_events(&mut m).contains(&Event::ProtocolError(ProtocolError::TransactionTimeout)));
    m.handle_timeout(2_001 + 2_000 + QUIET_AFTER_BROKEN_MS + 1);
    assert_eq!(drain_tx(&mut m), [0x32]);
}

#[test]
fn a_sync_request_during_the_quiet_period_is_still_answered() {
    let mut m = quiet_booted();
    m.get_attribute(1, 2_000).unwrap();
    drain_tx(&mut m);
    m.handle_timeout(2_000 + 5_000);
    drain_tx(&mut m);
    mcu_sends(&mut m, &hex("0d 05 01 00 00 01 01 00 01"), 7_000);
}

#[test]
fn the_reboot_command_gets_no_answer_and_the_boot_runs_again_after_a_second() {
    let mut m = quiet_booted();
    mcu_sends(&mut m, &hex("0b 0d f4 fd 04 00 01 00 00 00"), 2_000);
    assert_eq!(
        drain_events(&mut m),
        [Event::LinkDown(LinkDownReason::RebootRequested)]
    );
    m.handle_timeout(2_999);
    assert!(
        drain_tx(&mut m).is_empty(),
        "no UPDATE for 65012, silent while rebooting"
    );
    m.handle_timeout(3_000);
    assert_eq!(drain_tx(&mut m), [0x32]);
    m.handle_rx(&sync(0, 0), 3_001);
    assert_eq!(
        drain_tx(&mut m),
        hex("30 00 00 00 00 30 32"),
        "zero sync first"
    );
}

#[test]
fn an_unanswered_liveness_probe_restarts_the_boot_sequence() {
    let mut m = booted(Config {
        probe_interval_ms: Some(30_000),
        ..Config::default()
    });
    // 30 s after the MCU's last message (its GET 1206 at 1.127 s).
    let t = m.poll_timeout().unwrap();
    assert_eq!(t, 1_127 + 30_000);
    m.handle_timeout(t);
    assert_eq!(drain_tx(&mut m), [0x32]);
    assert_eq!(
        mcu_receives(&mut m, t + 1),
        Message::Get {
            request_id: 0x40,
            attr_id: 1
        }
    );
    m.handle_timeout(t + 1 + 9_999);
    assert!(drain_events(&mut m).is_empty());
    m.handle_timeout(t + 1 + 10_000);
    assert_eq!(
        drain_events(&mut m),
        [Event::LinkDown(LinkDownReason::McuUnresponsive)]
    );
    assert!(!m.is_up());
    m.handle_rx(&sync(0, 0), t + 10_100);
    assert_eq!(
        drain_tx(&mut m),
        hex("32 30 00 00 00 00 30 32"),
        "READY, then the zero sync"
    );
}

#[test]
fn an_answered_liveness_probe_keeps_the_link_up_without_an_event() {
    let mut m = booted(Config::default());
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    drain_tx(&mut m);
    mcu_receives(&mut m, t + 1);
    mcu_sends(&mut m, &hex("0d 0b 01 00 00 0b 01 00 01"), t + 50);
    m.handle_timeout(t + 20_000);
    assert!(drain_events(&mut m).is_empty());
    assert!(m.is_up());
}

#[test]
fn mcu_updates_it_may_not_send_get_update_rejected() {
    let mut m = quiet_booted();
    let cases = [
        ("0d 09 00 04 00 01 02 00 01 00", "29 09 00 04 06 01"), // module-owned LED: FORBIDDEN
        ("0d 0a 05 00 00 01 01 00 01", "29 0a 05 00 02 01"),    // not in the profile: UNKNOWN
        ("0d 0b 01 00 00 01 02 00 01 01", "29 0b 01 00 03 01"), // longer than declared
    ];
    let mut t = 2_000;
    for (update, rejection) in cases {
        mcu_sends(&mut m, &hex(update), t);
        m.handle_timeout(t + 30);
        assert_eq!(drain_tx(&mut m), [0x32]);
        assert_eq!(mcu_receives(&mut m, t + 31).encode(), hex(rejection));
        t += 100;
    }
    assert!(drain_events(&mut m).is_empty());
}

#[test]
fn an_unsolicited_mcu_update_is_reported_and_cached_for_the_mcus_own_get() {
    let mut m = quiet_booted();
    mcu_sends(&mut m, &hex("0d 05 01 00 00 01 01 00 01"), 2_000);
    assert_eq!(
        drain_events(&mut m),
        [Event::McuUpdate {
            attr_id: 1,
            value: vec![1],
            state: 0,
            reason: 1
        }]
    );
    mcu_sends(&mut m, &hex("0c 06 01 00"), 2_100);
    m.handle_timeout(2_200);
    drain_tx(&mut m);
    assert_eq!(
        mcu_receives(&mut m, 2_201).encode(),
        hex("0d 06 01 00 00 0b 01 00 01")
    );
}

#[test]
fn a_set_times_out_and_only_one_set_per_attribute_may_be_open() {
    let mut m = quiet_booted();
    let handle = m.set_attribute(1, vec![1], 2_000).unwrap();
    assert_eq!(m.set_attribute(1, vec![0], 2_000), Err(Error::Busy(1)));
    assert_eq!(
        m.set_attribute(1024, vec![0], 2_000),
        Err(Error::NotMcuAttribute(1024))
    );
    assert!(matches!(
        m.set_attribute(1, vec![0, 0], 2_000),
        Err(Error::ValueTooLong { .. })
    ));
    drain_tx(&mut m);
    mcu_receives(&mut m, 2_001);
    m.handle_timeout(2_001 + 65_000);
    assert_eq!(
        drain_events(&mut m),
        [Event::SetResult {
            handle,
            attr_id: 1,
            outcome: Outcome::TimedOut
        }]
    );
}

#[test]
fn an_oversized_mcu_payload_is_counted_and_dropped_without_buffering() {
    let mut m = quiet_booted();
    m.handle_rx(&sync(5_000, 0), 2_000);
    m.handle_rx(&ack(5_000, 0), 2_000);
    drain_tx(&mut m);
    let mut junk = vec![0x88, 0x13];
    junk.resize(5_000, 0xAB);
    m.handle_rx(&junk, 2_001);
    assert_eq!(drain_tx(&mut m), [0x32]);
    assert_eq!(
        drain_events(&mut m),
        [Event::ProtocolError(ProtocolError::PayloadTooLarge(5_000))]
    );
}

#[test]
fn arbitrary_input_never_panics() {
    let mut m = emulator_module("afBlink_Plumo-2D_UART", &[]);
    let mut x: u32 = 0x1234_5678;
    for t in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let byte = if x % 3 == 0 {
            0x30 + (x >> 8) as u8 % 3
        } else {
            (x >> 16) as u8
        };
        m.handle_rx(&[byte], t * 7);
        drain_tx(&mut m);
        drain_events(&mut m);
    }
}
