//! Serial-line chaos for the bridge over a real pty: noise bytes between
//! and inside frames, dropped bytes that truncate frames, and the device
//! node vanishing and returning. The simulated MCU's application sets
//! module attribute 1024 to distinct values (accepted once afLib queued
//! them; afLib resends a message whose transaction broke), so every value
//! must reach upstream at least once; duplicates are counted. Afterwards
//! an MCU UPDATE still goes upstream and a cloud set still reaches the
//! MCU, and the fault shows in health and metrics.
//! The simulated MCU is the demo's (`tether_demo::mcu`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tether_testkit::mcu::{LineFault, McuEvent, Target};
use tokio::time::Instant;

use super::rig::{Rig, WAIT};
use crate::admin::{HealthCheck, RenderMetrics};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Values each run's MCU application sets.
const VALUES: i16 = 20;
/// Bytes that are none of the protocol's READY or sync types.
const NOISE: [u8; 4] = [0x00, 0xA5, 0xFF, 0x5A];
/// Longest silence while values are still due: a broken handshake keeps
/// the module quiet for 11 s (`QUIET_AFTER_BROKEN_MS`, spec §4.6), and a
/// corrupt SYNC REQUEST blocks the MCU for about 6 s (it skips the
/// module's READY offers while it waits for an answer, spec §4.6).
const QUIET: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
}

/// Values 1024 takes upstream, counted, until `want` distinct values came
/// and the MCU holds nothing more, or nothing moved for [`QUIET`].
async fn collect(rig: &mut Rig, want: &[i16]) -> HashMap<i16, usize> {
    let mut seen: HashMap<i16, usize> = HashMap::new();
    let mut quiet = Instant::now() + QUIET;
    let mut grace: Option<Instant> = None;
    loop {
        let all = want.iter().all(|v| seen.contains_key(v));
        if all && rig.mcu.pending() == 0 && grace.is_none() {
            // A short grace catches late duplicates.
            grace = Some(Instant::now() + Duration::from_millis(300));
        }
        let now = Instant::now();
        if grace.is_some_and(|g| now >= g) || now >= quiet {
            return seen;
        }
        let poll = now + Duration::from_millis(50);
        match tokio::time::timeout_at(poll, rig.upstream.recv()).await {
            Ok(Some(c)) if c.attribute_id == 1024 && c.data.len() == 2 => {
                *seen
                    .entry(i16::from_le_bytes([c.data[0], c.data[1]]))
                    .or_default() += 1;
                quiet = Instant::now() + QUIET;
            }
            Ok(None) => return seen,
            _ => {}
        }
    }
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "accepted {} delivered {} lost {} duplicates {}",
            self.accepted, self.delivered, self.lost, self.duplicates
        )
    }
}

fn tally(want: &[i16], seen: &HashMap<i16, usize>) -> Tally {
    let delivered = want.iter().filter(|v| seen.contains_key(v)).count();
    Tally {
        accepted: want.len(),
        delivered,
        lost: want.len() - delivered,
        duplicates: seen.values().map(|n| n.saturating_sub(1)).sum(),
    }
}

fn set_values(rig: &Rig, values: &[i16]) {
    for v in values {
        rig.mcu.set_module(1024, &v.to_le_bytes());
    }
}

/// After the faults: an MCU UPDATE goes upstream and a cloud set of an
/// MCU attribute is answered 200 and reaches the MCU.
async fn still_works(rig: &mut Rig) {
    rig.link_up(true).await;
    rig.mcu.update(1, &[1]);
    let change = loop {
        let c = rig.upstream_of(1).await;
        if c.data == [1] {
            break c;
        }
    };
    assert_eq!(change.data, [1]);
    let body = json!({"attributeId": 1, "value": "false"}).to_string();
    let r = rig.bridge.set_attribute(body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    rig.mcu
        .wait("the cloud's SET", WAIT, |e| {
            *e == McuEvent::Set {
                attr_id: 1,
                value: vec![0],
                refused: false,
            }
        })
        .await;
    assert_eq!(rig.mcu.value(1), Some(vec![0]));
}

/// Runs one line fault on up to `times` of the MCU's writes to `target`
/// (every `every`th) while the MCU sends [`VALUES`] values; checks the
/// link works afterwards.
async fn line_fault(fault: LineFault, target: Target, every: u32, times: u32) -> (Tally, Rig) {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    rig.mcu.inject(fault.clone(), target, every, times);
    let want: Vec<i16> = (1..=VALUES).collect();
    set_values(&rig, &want);
    let seen = collect(&mut rig, &want).await;
    let t = tally(&want, &seen);
    let (done, _) = rig.mcu.faults_done();
    eprintln!("serial {fault:?} x{done} on {target:?}: {}", t.line());
    // The values may all be through before every planned fault was made.
    assert!(done > 0, "no fault was made: {}", t.line());
    still_works(&mut rig).await;
    (t, rig)
}

/// Health details and `/metrics` name the counter `name` as non-zero.
fn reported(rig: &Rig, detail: &str, metric: &str) {
    let stats = rig.bridge.stats();
    let (_, _, details) = stats.check();
    assert!(details[detail].as_u64() > Some(0), "{details}");
    let mut text = String::new();
    stats.render(&mut text);
    assert!(text.contains(&format!("{metric} ")), "{text}");
    assert!(!text.contains(&format!("{metric} 0\n")), "{text}");
}

/// Noise bytes before the MCU's sync frames are thrown away, as afLib
/// does, and counted as stray bytes.
#[tokio::test]
async fn noise_between_frames_loses_nothing() {
    let noise = LineFault::NoiseBefore(NOISE.to_vec());
    let (t, rig) = line_fault(noise, Target::SyncFrames, 2, 6).await;
    assert_eq!(t.lost, 0, "{t:?}");
    assert!(rig.bridge.stats().stray_bytes() >= 24);
    reported(&rig, "strayBytes", "tether_bridge_stray_bytes_total");
    rig.stop().await;
}

/// Noise inside the MCU's sync frames breaks their checksum: refused,
/// counted, and the MCU's retries get through.
#[tokio::test]
async fn noise_inside_frames_loses_nothing() {
    let noise = LineFault::NoiseInside(NOISE.to_vec());
    let (t, rig) = line_fault(noise, Target::SyncFrames, 3, 2).await;
    assert_eq!(t.lost, 0, "{t:?}");
    assert!(rig.bridge.stats().checksum_errors() > 0);
    reported(
        &rig,
        "protocolErrors",
        "tether_bridge_checksum_errors_total",
    );
    rig.stop().await;
}

/// A byte lost from a sync frame: the frame times out (reported as
/// truncated), the handshake breaks on both sides and the MCU sends again.
#[tokio::test]
async fn dropped_bytes_lose_nothing() {
    let (t, rig) = line_fault(LineFault::DropLast, Target::SyncFrames, 4, 2).await;
    assert_eq!(t.lost, 0, "{t:?}");
    reported(
        &rig,
        "protocolErrors",
        "tether_bridge_protocol_errors_total",
    );
    rig.stop().await;
}

/// afLib4 payloads carry no checksum and afLib frees a message once the
/// module said "procedure complete", so a payload damaged on the line can
/// be lost (spec §4.3). The bridge cannot prevent that; it must not hide
/// it: every lost value is matched by a reported protocol error, and the
/// link carries on.
#[tokio::test]
async fn damaged_payloads_are_reported_never_silently_lost() {
    for fault in [LineFault::NoiseInside(NOISE.to_vec()), LineFault::DropLast] {
        let (t, rig) = line_fault(fault.clone(), Target::Payloads, 3, 3).await;
        let errors = rig.bridge.stats().protocol_errors();
        assert!(errors > 0, "{fault:?} left no trace");
        assert!(
            t.lost as u64 <= errors,
            "{fault:?}: {t:?} but only {errors} protocol errors"
        );
        rig.stop().await;
    }
}

/// Sets attribute 1 from the cloud, alternating values, while the bytes
/// the MCU reads are damaged once by `fault`, until the damage was done
/// and a set went through again. Every set answered 200 has reached the
/// MCU's application (the answer is its UPDATE); the others are answered
/// with an error, never left hanging. A broken handshake silences the
/// module for 11 s (spec §4.6), so a set caught in it times out (504; it
/// is still applied later) and the next ones find it in flight (409).
async fn cloud_sets_through(fault: LineFault) {
    let mut rig = Rig::start(Duration::from_secs(2)).await;
    rig.booted().await;
    rig.mcu.inject(fault.clone(), Target::Received, 3, 1);
    let (mut before, mut after, mut refused) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0u32.. {
        assert!(
            Instant::now() < deadline,
            "no set went through after {fault:?}"
        );
        let value = if i % 2 == 0 { "true" } else { "false" };
        let body = json!({"attributeId": 1, "value": value}).to_string();
        let r = rig.bridge.set_attribute(body.as_bytes()).await;
        let damaged = !rig.mcu.faults_done().1;
        if r.status == 200 {
            let want = vec![u8::from(i % 2 == 0)];
            assert_eq!(rig.mcu.value(1), Some(want), "set #{i} answered 200");
            if damaged {
                after += 1;
                break;
            }
            before += 1;
        } else {
            assert!([409, 503, 504].contains(&r.status), "{}", r.body);
            refused += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "serial {fault:?} on the way to the MCU: cloud sets 200 before {before} after {after}, \
         refused {refused}, 200 but not applied 0"
    );
    assert_eq!(rig.mcu.faults_done(), (1, false), "the fault was made");
    still_works(&mut rig).await;
    rig.stop().await;
}

/// Noise inside what the module sends the MCU.
#[tokio::test]
async fn cloud_sets_through_noise_are_applied_when_answered_200() {
    cloud_sets_through(LineFault::NoiseInside(NOISE.to_vec())).await;
}

/// A byte the module sent lost on the way to the MCU.
#[tokio::test]
async fn cloud_sets_through_lost_bytes_are_applied_when_answered_200() {
    cloud_sets_through(LineFault::DropLast).await;
}

/// A burst of corrupt sync frames counts as a checksum storm: the device
/// is reopened and the MCU boots again; the values it queued meanwhile
/// still arrive.
#[tokio::test]
async fn a_noise_storm_reopens_the_link_and_loses_nothing() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    // A SYNC REQUEST whose checksum byte is wrong, 25 times.
    rig.mcu
        .send_raw(&[0x30, 0x0b, 0x00, 0x00, 0x00, 0x00].repeat(25));
    let want: Vec<i16> = (1..=VALUES).collect();
    set_values(&rig, &want);
    rig.mcu.booted(2, WAIT).await;
    let seen = collect(&mut rig, &want).await;
    let t = tally(&want, &seen);
    eprintln!("serial checksum storm: {}", t.line());
    assert_eq!(t.lost, 0, "{t:?}");
    still_works(&mut rig).await;
    let stats = rig.bridge.stats();
    assert!(stats.link_losses() >= 1, "the storm broke the link");
    assert!(stats.checksum_errors() >= 20, "{}", stats.checksum_errors());
    rig.stop().await;
}

/// The serial adapter unplugged (pty closed, device path removed) and
/// plugged back in, three times, while the MCU application keeps setting
/// values: each loss is seen and reported, cloud sets meanwhile get 503,
/// the device is reopened under the same path and everything the MCU
/// queued arrives.
#[tokio::test]
async fn the_device_vanishing_and_returning_loses_nothing() {
    let mut rig = Rig::start(TIMEOUT).await;
    rig.booted().await;
    let stats = rig.bridge.stats();
    let rounds: i16 = 3;
    let mut want = Vec::new();
    for round in 0..rounds {
        let base = round * 100;
        let before: Vec<i16> = (base + 1..=base + 10).collect();
        set_values(&rig, &before);
        rig.mcu.unplug(&rig.link);
        rig.link_up(false).await;
        let during: Vec<i16> = (base + 11..=base + 20).collect();
        set_values(&rig, &during);
        let body = json!({"attributeId": 1, "value": "true"}).to_string();
        let r = rig.bridge.set_attribute(body.as_bytes()).await;
        assert_eq!(r.status, 503, "a set while the device is gone: {}", r.body);
        let (_, up, details) = stats.check();
        assert!(!up, "health reports the lost link: {details}");
        assert!(!rig.link.exists(), "the device path is gone");
        // A few reopen attempts fail before the device returns.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.mcu.plug(&rig.link);
        rig.mcu.booted(round as u32 + 2, WAIT).await;
        want.extend(before);
        want.extend(during);
    }
    let seen = collect(&mut rig, &want).await;
    let t = tally(&want, &seen);
    eprintln!("serial device vanishing x{rounds}: {}", t.line());
    assert_eq!(t.lost, 0, "{t:?}, seen {seen:?}");
    still_works(&mut rig).await;
    assert_eq!(stats.link_losses(), rounds as u64);
    let mut text = String::new();
    stats.render(&mut text);
    assert!(
        text.contains(&format!("tether_bridge_link_losses_total {rounds}\n")),
        "{text}"
    );
    rig.stop().await;
}
