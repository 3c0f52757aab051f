//! Retention: messages not delivered within `store.ttl` become push
//! failures with the last error; the failure API and the CLI list, show,
//! delete and replay them; failures are purged after `store.failure_ttl`;
//! wall-clock jumps neither expire nor immortalise messages.

use std::sync::Arc;
use std::time::Duration;

use crate::outbox_rig::{config_text, Rig, RigOptions, Subscriber, EVENTS};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tether_testkit::{Broker, BrokerOptions, ManualClock};

const WAIT: Duration = Duration::from_secs(20);

/// A broker (stopped, with a subscriber session it keeps) and a rig whose
/// `n` submitted messages expired after `ttl` into push failures.
async fn expired(ttl: &str, n: usize) -> (Broker, Subscriber, Rig, Vec<String>) {
    let mut broker = Broker::start(BrokerOptions::new().persistence(true));
    let sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    broker.stop();
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: format!("ttl = \"{ttl}\"\n"),
            ..Default::default()
        },
    )
    .await;
    let ids = rig.submit(n, n).await;
    // Expiry records the failures first; the same upkeep round's compaction
    // removes the messages after it, so wait for both.
    rig.wait_stats("failures", Duration::from_secs(8), |s| {
        s.failures == n as u64 && s.messages == 0
    })
    .await;
    (broker, sub, rig, ids)
}

/// With the broker down, messages expire after the TTL into failures
/// carrying the hub's last error; tether's `/v1/pushFailures` extension
/// lists them (newest first, paged), shows, deletes and replays them (one,
/// then all) with their original ids.
#[tokio::test]
async fn undelivered_messages_become_failures_that_list_show_delete_and_replay() {
    let (mut broker, mut sub, rig, ids) = expired("2s", 3).await;
    let s = rig.stats().await;
    assert_eq!(
        (s.sinks[0].expired, s.sinks[0].depth, s.messages),
        (3, 0, 0),
        "{s:?}"
    );

    let (status, _, page) = rig
        .call(Method::GET, "/v1/pushFailures?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let list = page["pushFailures"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let f0 = &list[0];
    assert_eq!(f0["partnerId"], "hub");
    assert_eq!(
        f0["partnerPushMessage"]["id"],
        ids[2].as_str(),
        "newest first"
    );
    assert!(
        f0["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("hub unreachable since"),
        "{f0}"
    );
    assert!(f0["createdTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
    let next = page["next"].as_str().unwrap();
    let (_, _, page2) = rig
        .call(
            Method::GET,
            &format!("/v1/pushFailures?before={next}"),
            None,
        )
        .await;
    assert_eq!(
        page2["pushFailures"][0]["partnerPushMessage"]["id"],
        ids[0].as_str()
    );
    assert!(page2.get("next").is_none());

    let newest = f0["partnerPushFailureId"].as_str().unwrap().to_string();
    let (status, _, shown) = rig
        .call(Method::GET, &format!("/v1/pushFailures/{newest}"), None)
        .await;
    assert_eq!((status, &shown), (StatusCode::OK, f0));
    let (status, _, _) = rig
        .call(Method::DELETE, &format!("/v1/pushFailures/{newest}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = rig
        .call(Method::GET, &format!("/v1/pushFailures/{newest}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    broker.restart();
    rig.wait_connected(WAIT).await;
    let middle = list[1]["partnerPushFailureId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = rig
        .call(
            Method::POST,
            &format!("/v1/pushFailures/{middle}/replay"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    sub.until_all(&ids[1..2], WAIT).await;
    let (status, _, body) = rig
        .call(Method::POST, "/v1/pushFailures/replay", None)
        .await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::ACCEPTED, Some(1))
    );
    sub.until_all(&ids[0..1], WAIT).await;
    rig.wait_stats("no failures left", WAIT, |s| {
        s.failures == 0 && s.messages == 0
    })
    .await;
}

/// The wall clock jumping a month ahead (NTP after a boot without RTC), or
/// back, during a run ages nothing: messages expire after the TTL of
/// monotonic time.
#[tokio::test]
async fn wall_clock_jumps_neither_expire_nor_immortalise_messages() {
    let mut broker = Broker::start(BrokerOptions::new());
    broker.stop();
    let now = tether_protocol::time::unix_seconds(std::time::SystemTime::now());
    let clock = ManualClock::at_unix(now);
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: "ttl = \"2s\"\n".into(),
            clock: Some(Arc::new(clock.clone())),
            ..Default::default()
        },
    )
    .await;
    rig.submit(5, 5).await;
    clock.advance(Duration::from_secs(30 * 86_400));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        rig.stats().await.failures,
        0,
        "a forward jump expires nothing"
    );
    clock.set_unix(now - 86_400);
    rig.wait_stats(
        "expired after 2 s of real time",
        Duration::from_secs(5),
        |s| s.failures == 5,
    )
    .await;
}

/// Failures are purged automatically after `store.failure_ttl`.
#[tokio::test]
async fn failures_are_purged_after_the_failure_ttl() {
    let mut broker = Broker::start(BrokerOptions::new());
    broker.stop();
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: "ttl = \"1s\"\nfailure_ttl = \"1s\"\n".into(),
            ..Default::default()
        },
    )
    .await;
    rig.submit(4, 4).await;
    rig.wait_stats("failures recorded", Duration::from_secs(5), |s| {
        s.failures == 4
    })
    .await;
    rig.wait_stats("failures purged", Duration::from_secs(5), |s| {
        s.failures == 0
    })
    .await;
    let (_, _, page) = rig.call(Method::GET, "/v1/pushFailures", None).await;
    assert_eq!(page["pushFailures"].as_array().map(Vec::len), Some(0));
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .output()
        .expect("run tether");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tether failures list|show|delete|replay` (on Afero's partner paths)
/// and `tether outbox stats` use the admin API named in the config file.
#[tokio::test]
async fn the_cli_lists_shows_deletes_and_replays_failures() {
    let (mut broker, mut sub, rig, ids) = expired("1s", 2).await;
    let cfg = rig.dir.path().join("cli.toml");
    std::fs::write(
        &cfg,
        config_text(
            broker.plain_port(),
            rig.dir.path(),
            "",
            Some(rig.admin_addr),
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    let (code, out, err) = run(vec![
        "failures".into(),
        "list".into(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let oldest = list[0]["partnerPushFailureId"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, _) = run(vec![
        "failures".into(),
        "show".into(),
        oldest.clone(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains(&ids[0]), "oldest first: {out}");
    let (code, _, err) = run(vec![
        "failures".into(),
        "list".into(),
        "--partner".into(),
        "nobody".into(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("nobody"), "{err}");
    let (code, out, err) = run(vec![
        "failures".into(),
        "list".into(),
        "--limit".into(),
        "1".into(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ids[0]), "{out}");
    assert!(err.contains(&format!("--after {oldest}")), "{err}");
    let (code, _, _) = run(vec![
        "failures".into(),
        "delete".into(),
        oldest.clone(),
        "--partner".into(),
        "hub".into(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(vec![
        "failures".into(),
        "show".into(),
        oldest,
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404"), "{err}");

    broker.restart();
    rig.wait_connected(WAIT).await;
    let (code, out, err) = run(vec![
        "failures".into(),
        "replay".into(),
        "--all".into(),
        "-c".into(),
        c.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"replayed\": 1"), "{out}");
    sub.until_all(&ids[1..2], WAIT).await;
    let (code, out, _) = run(vec!["outbox".into(), "stats".into(), "-c".into(), c])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["sinks"][0]["name"], "hub", "{stats}");
}
