//! Every distinct frame of vectors.json: sync frames parse, checksum and
//! re-serialise; payloads decode and re-encode to the same bytes.
#![cfg(feature = "std")] // the helpers load profiles

mod common;

use common::{hex, read};
use firmware_bridge::frame::{checksum, encode_payload, SyncFrame, SyncKind};
use firmware_bridge::message::Message;
use firmware_bridge::{DecodeError, FrameError};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    serde_json::from_str(&read("vectors.json")).expect("vectors.json parses")
}

#[test]
fn every_sync_frame_in_the_vectors_parses_and_reserialises_identically() {
    let mut seen = 0;
    for v in vectors()
        .iter()
        .filter(|v| v["kind"].as_str().is_some_and(|k| k.starts_with("SYNC")))
    {
        let bytes: [u8; 6] = hex(v["hex"].as_str().unwrap()).try_into().unwrap();
        let f = &v["fields"];
        assert_eq!(
            u64::from(checksum(&bytes[..5])) == f["checksum"].as_u64().unwrap(),
            f["checksum_ok"].as_bool().unwrap()
        );
        match SyncFrame::parse(&bytes) {
            Ok(frame) => {
                assert!(f["checksum_ok"].as_bool().unwrap(), "{v}");
                assert_eq!(u64::from(frame.mcu_count), f["mcu_tx"].as_u64().unwrap());
                assert_eq!(u64::from(frame.asr_count), f["asr_tx"].as_u64().unwrap());
                let kind = if v["kind"] == "SYNC_ACK" {
                    SyncKind::Ack
                } else {
                    SyncKind::Sync
                };
                assert_eq!(frame.kind, kind);
                assert_eq!(frame.to_bytes(), bytes);
            }
            Err(FrameError::BadChecksum { expected, .. }) => {
                assert!(!f["checksum_ok"].as_bool().unwrap());
                assert_eq!(expected, 0x3a, "S38's correct checksum");
            }
            Err(e) => panic!("{e} for {v}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 40);
}

#[test]
fn sync_responses_are_typed_0x30_and_summed_with_0x30() {
    assert_eq!(
        SyncFrame::response(0, 12).to_bytes(),
        [0x30, 0, 0, 0x0c, 0, 0x3c]
    );
    assert_eq!(
        SyncFrame::response(11, 0).to_bytes(),
        [0x30, 0x0b, 0, 0, 0, 0x3b]
    );
}

#[test]
fn the_computed_checksum_cases_hold_including_a_frame_containing_0x32() {
    for case in [
        "30 ff ff ff ff 2c",
        "31 34 12 00 00 77",
        "30 00 01 00 01 32",
    ] {
        let bytes: [u8; 6] = hex(case).try_into().unwrap();
        assert_eq!(SyncFrame::parse(&bytes).unwrap().to_bytes(), bytes);
    }
}

#[test]
fn every_message_in_the_vectors_decodes_and_reencodes_identically() {
    let mut seen = 0;
    for v in vectors().iter().filter(|v| v["kind"] == "MESSAGE") {
        let bytes = hex(v["hex"].as_str().unwrap());
        let f = &v["fields"];
        let msg = Message::decode(&bytes[2..]).unwrap_or_else(|e| panic!("{e} for {v}"));
        assert_eq!(u64::from(msg.command()), f["cmd"].as_u64().unwrap());
        assert_eq!(u64::from(msg.attr_id()), f["attr_id"].as_u64().unwrap());
        if let Message::Update {
            state,
            reason,
            value,
            ..
        } = &msg
        {
            assert_eq!(u64::from(*state), f["state"].as_u64().unwrap());
            assert_eq!(u64::from(*reason), f["reason"].as_u64().unwrap());
            assert_eq!(
                firmware_bridge::value::hex(value),
                f["value_hex"].as_str().unwrap()
            );
        }
        assert_eq!(encode_payload(&msg.encode()).unwrap(), bytes, "{v}");
        seen += 1;
    }
    assert_eq!(seen, 70);
}

#[test]
fn truncated_and_unknown_messages_are_errors_not_panics() {
    assert_eq!(
        Message::decode(&[0x0d, 0]),
        Err(DecodeError::Truncated { needed: 4, got: 2 })
    );
    assert!(matches!(
        Message::decode(&hex("0d 00 01 00 00 01 05 00 01")),
        Err(DecodeError::Truncated { .. })
    ));
    assert_eq!(
        Message::decode(&hex("01 00 01 00")),
        Err(DecodeError::UnknownCommand(1))
    );
    assert_eq!(
        Message::decode(&hex("0b 00 01 00 ff ff")),
        Err(DecodeError::ValueTooLong(0xffff))
    );
    for len in 0..12 {
        for seed in 0u8..=255 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
                .collect();
            let _ = Message::decode(&bytes);
        }
    }
}
