//! The bridge against a simulated afLib4 MCU over a real pty: boot, MCU
//! values upstream, cloud requests through the bridge handle, reboot
//! requests, a silent MCU and a serial device that vanishes and returns.
//! The simulated MCU is the demo's (`tether_demo::mcu`).

use std::time::Duration;

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
use firmware_bridge::DataType;
use serde_json::json;
use tether_testkit::mcu::{Mcu, McuEvent};

use super::rig::{Rig, WAIT};
use crate::admin::{HealthCheck, RenderMetrics};

const TIMEOUT: Duration = Duration::from_secs(5);

fn body(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// The bridge opens the pty by path, runs the boot sequence the MCU
/// accepts, reports the link up, and sends the MCU's values upstream with
/// the profile's data types: the boot GET answer, a local change and a
/// module attribute the MCU sets.
#[tokio::test]
async fn boot_over_a_pty_brings_the_link_up_and_mcu_updates_go_upstream() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    let boot_value = rig.upstream_of(1).await;
    assert_eq!(
        (boot_value.data, boot_value.data_type),
        (vec![0], DataType::Boolean)
    );

    rig.mcu.update(1, &[1]);
    let change = rig.upstream_of(1).await;
    assert_eq!(
        (change.data, change.data_type),
        (vec![1], DataType::Boolean)
    );

    rig.mcu.set_module(1024, &[1, 0]);
    let led = rig.upstream_of(1024).await;
    assert_eq!((led.data, led.data_type), (vec![1, 0], DataType::Sint16));

    let stats = rig.bridge.stats();
    let (name, ok, details) = stats.check();
    assert_eq!((name, ok), ("bridge", true));
    assert_eq!(details["linkUp"], true);
    let mut text = String::new();
    stats.render(&mut text);
    assert!(text.contains("tether_bridge_link_up 1\n"), "{text}");
    assert!(stats.updates() >= 3);
    rig.stop().await;
}

/// A cloud SET of an MCU attribute reaches the MCU and is answered with
/// its UPDATE (200); the new value also goes upstream.
#[tokio::test]
async fn a_cloud_set_is_answered_with_the_mcus_update() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    let r = rig
        .bridge
        .set_attribute(&body(json!({"attributeId": 1, "value": "true"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"], "true");
    assert_eq!(r.body["reason"], 2);
    assert_eq!(rig.mcu.value(1), Some(vec![1]));
    let set = rig.upstream_of(1).await;
    // The boot GET answer comes first; the SET result follows.
    let set = if set.data == [0] {
        rig.upstream_of(1).await
    } else {
        set
    };
    assert_eq!(set.data, [1]);
    let r = rig
        .bridge
        .set_attribute(&body(json!({"attributeId": 1, "attributeData": "00"})))
        .await;
    assert_eq!(
        (r.status, r.body["attributeData"].clone()),
        (200, json!("00"))
    );
    rig.stop().await;
}

/// The MCU application refusing a SET (state 5, reason 0xFD) is a 409
/// carrying the value it kept.
#[tokio::test]
async fn a_set_the_mcu_refuses_is_a_409_with_the_current_value() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    rig.mcu.refuse(1);
    let r = rig
        .bridge
        .set_attribute(&body(json!({"attributeId": 1, "value": "true"})))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        (r.body["state"].clone(), r.body["value"].clone()),
        (json!(5), json!("false"))
    );
    rig.mcu
        .wait("refused SET", WAIT, |e| {
            matches!(e, McuEvent::Set { refused: true, .. })
        })
        .await;
    rig.stop().await;
}

/// A GET of an MCU attribute asks the MCU and answers 200 with its value.
#[tokio::test]
async fn a_get_answers_200_with_the_mcus_value() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    rig.mcu.update(1, &[1]);
    rig.upstream_of(1).await;
    let r = rig
        .bridge
        .get_attribute(&body(json!({"attributeId": 1})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["value"].clone(), r.body["reason"].clone()),
        (json!("true"), json!(11))
    );
    rig.mcu
        .wait("GET", WAIT, |e| *e == McuEvent::Get { attr_id: 1 })
        .await;
    rig.stop().await;
}

/// Attributes outside the profile are 404; attributes the profile does not
/// mark WRITE are 403 and never reach the MCU; bad values are 400.
#[tokio::test]
async fn unknown_attributes_are_404_read_only_ones_403_bad_values_400() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    let set = |id: u16, v: &str| body(json!({"attributeId": id, "value": v}));
    assert_eq!(rig.bridge.set_attribute(&set(999, "1")).await.status, 404);
    assert_eq!(
        rig.bridge
            .get_attribute(&body(json!({"attributeId": 999})))
            .await
            .status,
        404
    );
    assert_eq!(rig.bridge.set_attribute(&set(1030, "1")).await.status, 403);
    assert_eq!(rig.bridge.set_attribute(&set(1, "maybe")).await.status, 400);
    assert_eq!(
        rig.bridge.set_attribute(&set(1024, "70000")).await.status,
        400
    );
    rig.stop().await;
}

/// A module-owned attribute (the LED 1024) lives in tether's table: a cloud
/// set updates it, tells the MCU with an UPDATE of reason 2 and goes
/// upstream; a get answers from the table without asking the MCU.
#[tokio::test]
async fn module_attributes_are_set_and_read_from_the_table() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    let r = rig
        .bridge
        .set_attribute(&body(json!({"attributeId": 1024, "value": "1"})))
        .await;
    assert_eq!(
        (r.status, r.body["attributeData"].clone()),
        (200, json!("0100"))
    );
    let seen = rig
        .mcu
        .wait("UPDATE 1024", WAIT, |e| {
            matches!(e, McuEvent::ModuleUpdate { attr_id: 1024, .. })
        })
        .await;
    assert_eq!(
        seen,
        McuEvent::ModuleUpdate {
            attr_id: 1024,
            value: vec![1, 0],
            reason: 2
        }
    );
    assert_eq!(rig.upstream_of(1024).await.data, [1, 0]);
    let r = rig
        .bridge
        .get_attribute(&body(json!({"attributeId": 1024})))
        .await;
    assert_eq!((r.status, r.body["value"].clone()), (200, json!("1")));
    rig.stop().await;
}

/// An MCU that stops answering leaves the cloud with a 504 at
/// `bridge.timeout`, not a hung method call.
#[tokio::test]
async fn a_silent_mcu_gets_the_cloud_a_504_at_the_bridge_timeout() {
    let mut rig = Rig::start(Duration::from_millis(800)).await;
    rig.booted().await;
    rig.mcu.set_silent(true);
    let started = tokio::time::Instant::now();
    let r = rig
        .bridge
        .set_attribute(&body(json!({"attributeId": 1, "value": "true"})))
        .await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(3));
    rig.stop().await;
}

/// The MCU's reboot command (SET 65012 = 1) makes the bridge run the boot
/// sequence again; the link comes back up by itself.
#[tokio::test]
async fn a_reboot_request_from_the_mcu_boots_the_link_again() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    rig.mcu.request_reboot();
    rig.mcu.booted(2, WAIT).await;
    rig.link_up(true).await;
    let stats = rig.bridge.stats();
    assert_eq!((stats.link_ups(), stats.link_losses()), (2, 1));
    assert_eq!(stats.reset_pulses(), 0, "a requested reboot needs no reset");
    rig.stop().await;
}

/// The serial device vanishing (the MCU end of the pty closed, its path
/// gone) is seen as a lost link, counted once, and recovered without
/// restarting anything: the MCU reset line is pulsed once, the device is
/// reopened when it comes back and the MCU boots again.
#[tokio::test]
async fn a_cut_link_is_recovered_with_one_reset_pulse_when_the_device_returns() {
    let pin = Mock::new(&[Transaction::set(State::Low), Transaction::set(State::High)]);
    let mut rig = Rig::start_with(TIMEOUT, Some(pin.clone()), None).await;
    rig.booted().await;
    assert_eq!(rig.upstream_of(1).await.data, [0]);

    let old = std::mem::replace(&mut rig.mcu, Mcu::at(&rig.dir.path().join("spare"), &[]));
    drop(old);
    std::fs::remove_file(&rig.link).expect("remove the device path");
    rig.link_up(false).await;
    let stats = rig.bridge.stats();
    assert!(!stats.check().1, "health reports the lost link");
    // Stay away for a few reopen attempts: still one loss, one pulse.
    tokio::time::sleep(Duration::from_millis(700)).await;

    rig.mcu = Mcu::at(&rig.link, &[(1, vec![1])]);
    rig.mcu.booted(1, WAIT).await;
    rig.link_up(true).await;
    assert_eq!((stats.link_losses(), stats.reset_pulses()), (1, 1));
    assert_eq!(rig.upstream_of(1).await.data, [1], "values flow again");
    let mut text = String::new();
    stats.render(&mut text);
    assert!(
        text.contains("tether_bridge_link_losses_total 1\n"),
        "{text}"
    );
    rig.stop().await;
    let mut pin = pin;
    pin.done();
}

/// A storm of corrupt sync frames (noise, a wrong baud rate) counts as a
/// broken link: the checksum errors show in the metrics, the MCU is reset,
/// the device reopened and the MCU boots again.
#[tokio::test]
async fn a_checksum_storm_reopens_the_device_and_boots_again() {
    let pin = Mock::new(&[Transaction::set(State::Low), Transaction::set(State::High)]);
    let mut rig = Rig::start_with(TIMEOUT, Some(pin.clone()), None).await;
    rig.booted().await;
    // A SYNC REQUEST whose checksum byte is wrong, 25 times.
    rig.mcu
        .send_raw(&[0x30, 0x0b, 0x00, 0x00, 0x00, 0x00].repeat(25));
    rig.mcu.booted(2, WAIT).await;
    rig.link_up(true).await;
    let stats = rig.bridge.stats();
    assert!(stats.checksum_errors() >= 20, "{}", stats.checksum_errors());
    assert_eq!((stats.link_losses(), stats.reset_pulses()), (1, 1));
    let mut text = String::new();
    stats.render(&mut text);
    assert!(
        text.contains("tether_bridge_checksum_errors_total"),
        "{text}"
    );
    rig.stop().await;
    let mut pin = pin;
    pin.done();
}
