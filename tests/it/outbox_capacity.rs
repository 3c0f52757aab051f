//! Capacity: `store.max_bytes` with `drop-oldest` (dropped messages become
//! failures with the reason) and `reject-new` (503 + Retry-After). A full
//! disk (507, nothing kept, no crash) is made real on a tmpfs in
//! `chaos_disk_full.rs`, and injected into the outbox crate's own tests
//! (syncs that fail as on a full disk, `outbox/src/intake.rs`).

use crate::outbox_rig::{Rig, RigOptions};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_testkit::{Broker, BrokerOptions};

const MIB: u64 = 1 << 20;

/// With the broker down and a 1 MiB cap, intake keeps accepting and the
/// oldest messages are dropped into failures that say why.
#[tokio::test]
async fn drop_oldest_keeps_accepting_and_records_dropped_messages_as_failures() {
    let mut broker = Broker::start(BrokerOptions::new());
    broker.stop();
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: format!("max_bytes = {MIB}\n"),
            ..Default::default()
        },
    )
    .await;
    rig.submit(6000, 200).await;
    let s = rig.stats().await;
    assert!(s.bytes <= MIB / 2, "live data within the budget: {s:?}");
    assert!(
        s.sinks[0].dropped > 0 && s.failures == s.sinks[0].dropped,
        "{s:?}"
    );
    let (_, _, page) = rig
        .call(Method::GET, "/v1/pushFailures?limit=1", None)
        .await;
    let err = page["pushFailures"][0]["errorMessage"].as_str().unwrap();
    assert!(err.contains("drop-oldest"), "{err}");
    let m = rig
        .http
        .get(rig.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("tether_outbox_dropped_total{reason=\"store_full_drop_oldest\"}"),
        "{m}"
    );
}

/// With `reject-new`, a full store answers 503 with Retry-After and keeps
/// what it has.
#[tokio::test]
async fn reject_new_answers_503_with_retry_after_when_full() {
    let mut broker = Broker::start(BrokerOptions::new());
    broker.stop();
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            store: format!("max_bytes = {MIB}\nfull_policy = \"reject-new\"\n"),
            ..Default::default()
        },
    )
    .await;
    // Fifty changes a request until the first refusal, then one at a time
    // until a single change is refused too: that refusal is the answer
    // checked.
    let mut accepted = 0;
    let mut per = 50;
    let retry = loop {
        let changes: Vec<_> = (0..per)
            .map(|i| json!({"attributeId": i + 1, "value": 1000, "attributeDataType": "SINT32"}))
            .collect();
        let (status, retry, body) = rig
            .call(Method::POST, "/v1/attributes", Some(json!(changes)))
            .await;
        match status {
            StatusCode::ACCEPTED => accepted += per,
            StatusCode::SERVICE_UNAVAILABLE if per > 1 => per = 1,
            StatusCode::SERVICE_UNAVAILABLE => break retry,
            other => panic!("{other}: {body}"),
        }
        assert!(accepted < 100_000, "never full");
    };
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0));
    let s = rig.stats().await;
    assert_eq!(
        (s.messages, s.failures),
        (accepted as u64, 0),
        "nothing dropped"
    );
}
