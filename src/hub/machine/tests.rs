//! The machine alone: made-up times in, actions out; no socket, no sleep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::hub::credentials::{key_source, CredentialSource};

const T0: u64 = 1_900_000_000;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

fn settings() -> Settings {
    Settings {
        target: "hub.example.net:8883".into(),
        device_id: "ctrl-1".into(),
        keep_alive: KEEP_ALIVE,
    }
}

/// `secs` after the start, on both clocks.
fn at(secs: f64) -> Now {
    let d = Duration::from_secs_f64(secs);
    Now {
        mono: d,
        wall: UNIX_EPOCH + Duration::from_secs(T0) + d,
    }
}

fn machine(seed: u64) -> Machine {
    Machine::new(settings(), StdRng::seed_from_u64(seed), at(0.0))
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn network(message: &str) -> Lost {
    Lost {
        failure: Failure::Network,
        message: message.into(),
        unreadable: false,
        requested: false,
    }
}

/// Reports `lost` and returns the delay decided and the lines logged.
fn lose(m: &mut Machine, now: Now, lost: Lost) -> (Duration, Vec<(Level, String)>) {
    m.lost(now, lost);
    let mut delay = None;
    let mut logs = Vec::new();
    for a in drain(m) {
        match a {
            Action::RetryAfter(d) => delay = Some(d),
            Action::Log(level, line) => logs.push((level, line)),
            other => panic!("unexpected {other:?}"),
        }
    }
    (delay.expect("a lost connection gets a retry delay"), logs)
}

fn warnings(logs: &[(Level, String)]) -> Vec<&str> {
    logs.iter()
        .filter(|(l, _)| *l == Level::Warn)
        .map(|(_, s)| s.as_str())
        .collect()
}

#[test]
fn refused_connects_back_off_between_the_network_floor_and_a_doubling_ceiling() {
    let mut m = machine(7);
    for n in 0..30 {
        let (d, _) = lose(&mut m, at(f64::from(n)), network("cannot reach"));
        let ceiling = (BACKOFF_BASE * (1 << n.min(6))).min(BACKOFF_CAP);
        assert!(d >= NETWORK_FLOOR && d <= ceiling, "attempt {n}: {d:?}");
    }
    assert_eq!(m.status().state, ConnState::Disconnected);
    assert_eq!(m.status().disconnects, 30);
}

#[test]
fn auth_tls_and_throttling_wait_at_least_the_slow_floor() {
    for failure in [Failure::Auth, Failure::Tls, Failure::Throttled] {
        let mut m = machine(1);
        for n in 0..8 {
            let lost = Lost {
                failure,
                ..network("refused")
            };
            let (d, _) = lose(&mut m, at(f64::from(n)), lost);
            assert!(d >= SLOW_FLOOR && d <= BACKOFF_CAP, "{failure:?}: {d:?}");
        }
        assert_eq!(m.status().last_failure, Some(failure));
    }
}

#[test]
fn jitter_spreads_devices_that_failed_together() {
    let delays: std::collections::BTreeSet<_> = (0..20)
        .map(|seed| {
            let mut m = machine(seed);
            (0..6)
                .map(|n| lose(&mut m, at(f64::from(n)), network("down")).0)
                .last()
        })
        .collect();
    assert!(delays.len() > 15, "{delays:?}");
}

#[test]
fn a_connection_that_stayed_up_starts_the_backoff_over() {
    let mut m = machine(5);
    for n in 0..10 {
        lose(&mut m, at(f64::from(n)), network("down"));
    }
    m.connack(at(100.0));
    drain(&mut m);
    let (d, _) = lose(&mut m, at(100.0 + 60.0), network("reset by peer"));
    assert!(d <= BACKOFF_BASE, "{d:?}");
}

#[test]
fn the_same_failure_is_logged_as_a_warning_once() {
    let mut m = machine(2);
    let (_, first) = lose(&mut m, at(0.0), network("cannot reach hub"));
    let (_, second) = lose(&mut m, at(1.0), network("cannot reach hub"));
    assert_eq!(warnings(&first), ["cannot reach hub"]);
    assert!(warnings(&second).is_empty(), "{second:?}");
    let (_, other) = lose(&mut m, at(2.0), network("no answer"));
    assert_eq!(warnings(&other), ["no answer"]);
}

/// Connects at `t` and loses the connection `after` seconds later.
fn quick_drop(m: &mut Machine, t: f64, after: f64, unreadable: bool) -> Vec<(Level, String)> {
    m.connack(at(t));
    drain(m);
    let lost = Lost {
        unreadable,
        ..network("connection closed by peer")
    };
    lose(m, at(t + after), lost).1
}

#[test]
fn repeated_quick_drops_point_at_a_duplicate_device_id() {
    let mut m = machine(3);
    assert!(warnings(&quick_drop(&mut m, 0.0, 1.0, false))[0].ends_with("by peer"));
    quick_drop(&mut m, 10.0, 1.0, false);
    let third = quick_drop(&mut m, 20.0, 1.0, false);
    let line = warnings(&third)[0];
    assert!(
        line.contains("another client") && line.contains("\"ctrl-1\""),
        "{line}"
    );
    let error = m.status().last_error.clone().unwrap_or_default();
    assert!(error.contains("another client"), "{error}");
}

#[test]
fn quick_drops_over_an_unreadable_packet_blame_the_packet_not_another_client() {
    let mut m = machine(3);
    for n in 0..3 {
        quick_drop(&mut m, f64::from(n) * 10.0, 0.5, true);
    }
    let error = m.status().last_error.clone().unwrap_or_default();
    assert!(
        error.contains("same packet again") && !error.contains("another client"),
        "{error}"
    );
}

#[test]
fn drops_after_a_long_connection_are_not_quick() {
    let mut m = machine(4);
    for n in 0..5 {
        let logs = quick_drop(&mut m, f64::from(n) * 100.0, 11.0, false);
        assert!(
            !warnings(&logs).iter().any(|l| l.contains("another client")),
            "{logs:?}"
        );
    }
}

#[test]
fn a_silent_link_is_declared_dead_after_one_and_a_half_keep_alives() {
    let mut m = machine(6);
    assert_eq!(m.poll_timeout(), None, "no watchdog before CONNACK");
    m.connack(at(0.0));
    drain(&mut m);
    m.packet_seen(at(20.0));
    let deadline = Duration::from_secs(20) + KEEP_ALIVE * 3 / 2;
    assert_eq!(m.poll_timeout(), Some(deadline));
    assert_eq!(m.handle_timeout(at(64.9)), None);
    let Some(Timer::LinkDead(why)) = m.handle_timeout(at(65.0)) else {
        panic!("the link is dead at the deadline");
    };
    assert!(
        why.contains("half-open") && why.contains("for 45.0 s"),
        "{why}"
    );
    let (d, _) = lose(&mut m, at(65.0), network(&why));
    assert!(d <= BACKOFF_BASE);
    assert_eq!(m.poll_timeout(), None, "no watchdog once lost");
}

#[test]
fn packets_keep_the_link_alive_and_a_zero_keep_alive_turns_the_watchdog_off() {
    let mut m = machine(6);
    m.connack(at(0.0));
    for t in 1..100 {
        m.packet_seen(at(f64::from(t) * 30.0));
        assert_eq!(m.handle_timeout(at(f64::from(t) * 30.0 + 44.0)), None);
    }
    let mut off = Machine::new(
        Settings {
            keep_alive: Duration::ZERO,
            ..settings()
        },
        StdRng::seed_from_u64(1),
        at(0.0),
    );
    off.connack(at(0.0));
    assert_eq!(off.poll_timeout(), None);
    assert_eq!(off.handle_timeout(at(1e7)), None);
}

/// Mints a token the way the driver does and hands it to the machine.
fn issue(m: &mut Machine, src: &CredentialSource, now: Now) -> SystemTime {
    let c = src.current(now.wall).expect("a key mints tokens");
    m.token_issued(
        now,
        TokenLife {
            expires_at: c.expires_at,
            renew_at: c.renew_at,
        },
    );
    c.expires_at.expect("a minted token expires")
}

/// Calls `handle_timeout` whenever the machine asks, until `end`.
fn run_timers(m: &mut Machine, end: f64) -> Option<(f64, Timer)> {
    while let Some(t) = m.poll_timeout() {
        let secs = t.as_secs_f64();
        if secs > end {
            return None;
        }
        if let Some(timer) = m.handle_timeout(at(secs)) {
            return Some((secs, timer));
        }
    }
    None
}

#[test]
fn a_token_is_renewed_at_80_percent_of_its_life_by_reconnecting_at_once() {
    let mut m = machine(8);
    let src = key_source(Duration::from_secs(3600));
    let expires = issue(&mut m, &src, at(0.0));
    assert_eq!(m.status().credential_expires_at, Some(T0 + 3600));
    assert_eq!(expires, UNIX_EPOCH + Duration::from_secs(T0 + 3600));
    m.connecting(at(0.0));
    m.connack(at(1.0));
    drain(&mut m);
    // Keep the link alive so only the renewal can fire.
    let mut t = 1.0;
    let fired = loop {
        m.packet_seen(at(t));
        if let Some(hit) = run_timers(&mut m, t + 20.0) {
            break hit;
        }
        t += 20.0;
        assert!(t < 3600.0, "renewal never came");
    };
    assert_eq!(fired, (2880.0, Timer::RenewToken), "80 % of 3600 s");
    let (d, logs) = lose(&mut m, at(2880.1), network("connection closed"));
    assert_eq!(d, Duration::ZERO, "the renewal reconnect is immediate");
    assert!(warnings(&logs).is_empty(), "not a failure: {logs:?}");
    assert_eq!(m.status().state, ConnState::Connecting);
    issue(&mut m, &src, at(2880.2));
    assert_eq!(m.status().credential_expires_at, Some(T0 + 2880 + 3600));
}

#[test]
fn a_requested_disconnect_reconnects_at_once_and_keeps_the_backoff() {
    let mut m = machine(9);
    m.connack(at(0.0));
    drain(&mut m);
    let lost = Lost {
        requested: true,
        ..network("closed")
    };
    let (d, logs) = lose(&mut m, at(5.0), lost);
    assert_eq!(d, Duration::ZERO);
    assert_eq!(
        logs[0],
        (Level::Info, "reconnecting with fresh credentials".into())
    );
}

#[test]
fn a_lost_connection_cancels_the_renewal_of_its_token() {
    let mut m = machine(10);
    issue(&mut m, &key_source(Duration::from_secs(3600)), at(0.0));
    assert!(m.poll_timeout().is_some());
    lose(&mut m, at(1.0), network("down"));
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn status_says_subscribed_once_every_suback_is_in() {
    let mut m = machine(11);
    m.connecting(at(0.0));
    drain(&mut m);
    m.connack(at(0.5));
    assert_eq!(
        drain(&mut m),
        [Action::Subscribe, Action::Announce(1)],
        "subscriptions first"
    );
    assert!(m.status().is_connected() && !m.status().is_subscribed());
    m.suback(7, 4, 0);
    assert!(
        !m.status().subscribed,
        "a SUBACK for a SUBSCRIBE never sent"
    );
    m.subscribe_sent(3);
    assert!(!m.status().subscribed);
    m.suback(3, 4, 0);
    assert!(m.status().is_subscribed());
    lose(&mut m, at(60.0), network("down"));
    assert!(!m.status().subscribed, "a new connection subscribes again");
    m.connack(at(61.0));
    assert!(!m.status().subscribed);
}

#[test]
fn refused_subscriptions_are_said_and_leave_the_status_unsubscribed() {
    let mut m = machine(12);
    m.connack(at(0.0));
    drain(&mut m);
    m.subscribe_sent(1);
    m.suback(1, 4, 2);
    assert!(!m.status().subscribed);
    let logs = drain(&mut m);
    let Some(Action::Log(Level::Warn, line)) = logs.first() else {
        panic!("a warning: {logs:?}");
    };
    assert!(
        line.contains("refused 2 of 4") && line.contains("ACL"),
        "{line}"
    );

    let mut q = machine(13);
    q.connack(at(0.0));
    drain(&mut q);
    q.subscribe_failed("request channel full");
    q.subscribe_sent(1);
    q.suback(1, 4, 0);
    assert!(!q.status().subscribed, "the SUBSCRIBE was never queued");
}

#[test]
fn waiting_for_the_clock_is_said_once() {
    let mut m = machine(14);
    let early = Now {
        mono: Duration::ZERO,
        wall: UNIX_EPOCH + Duration::from_secs(86_400),
    };
    m.clock_not_set(early);
    m.clock_not_set(early);
    let logs = drain(&mut m);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(matches!(&logs[0], Action::Log(Level::Warn, l) if l.contains("NTP")));
    assert_eq!(m.status().state, ConnState::WaitingForClock);
    m.connecting(at(1.0));
    assert_eq!(m.status().state, ConnState::Connecting);
}

#[test]
fn an_expired_credential_is_said_once_and_shown_in_the_status() {
    let mut m = machine(15);
    m.token_refused(at(0.0), "the SAS token expired".into(), None);
    m.token_refused(at(1.0), "the SAS token expired".into(), None);
    let errors = drain(&mut m)
        .into_iter()
        .filter(|a| matches!(a, Action::Log(Level::Error, _)))
        .count();
    assert_eq!(errors, 1);
    assert!(m.status().credential_expired);
    assert_eq!(
        m.status().last_error.as_deref(),
        Some("the SAS token expired")
    );
    issue(&mut m, &key_source(Duration::from_secs(60)), at(2.0));
    assert!(!m.status().credential_expired);
}

#[test]
fn connecting_after_a_failure_keeps_showing_the_failure() {
    let mut m = machine(16);
    lose(&mut m, at(0.0), network("cannot reach"));
    m.connecting(at(1.0));
    assert_eq!(m.status().state, ConnState::Disconnected);
    assert_eq!(m.status().last_error.as_deref(), Some("cannot reach"));
    m.connack(at(2.0));
    assert_eq!(m.status().state, ConnState::Connected);
    assert_eq!(m.status().last_error, None);
    assert_eq!(m.status().connects, 1);
    assert_eq!(m.status().since, at(2.0).wall);
}
