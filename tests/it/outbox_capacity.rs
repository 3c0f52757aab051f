//! Capacity: `store.max_bytes` with `drop-oldest` (dropped messages become
//! failures with the reason) and `reject-new` (503 + Retry-After), and a
//! full disk (507, nothing kept, no crash), injected through the storage
//! trait.

use crate::outbox_rig;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::outbox_rig::{Rig, RigOptions, Subscriber, EVENTS};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tether_outbox::store::{Batch, Rows, SledStorage};
use tether_outbox::{IntakeError, Storage, StoreError};
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
    let s = rig.stats();
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
    let mut accepted = 0;
    loop {
        match rig
            .outbox
            .intake
            .submit(vec![outbox_rig::test_message(accepted)])
            .await
        {
            Ok(_) => accepted += 1,
            Err(IntakeError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 100_000, "never full");
    }
    let (status, retry, _) = rig
        .call(
            Method::POST,
            "/v1/attributes",
            Some(json!({"attributeId": 1, "value": 1, "attributeDataType": "SINT8"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0));
    let s = rig.stats();
    assert_eq!(
        (s.messages, s.failures),
        (accepted as u64, 0),
        "nothing dropped"
    );
}

/// Sled with a switch that makes every sync fail as a full disk would.
struct FullDisk {
    inner: SledStorage,
    full: AtomicBool,
}

impl Storage for FullDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        self.inner.scan(from, to, limit, reverse)
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.apply(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::from_io(std::io::Error::from(
                std::io::ErrorKind::StorageFull,
            )));
        }
        self.inner.sync()
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
}

/// A full disk makes intake answer 507; what was refused is never sent,
/// and intake works again once space is back.
#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_nothing_of_the_refused_request() {
    let broker = Broker::start(BrokerOptions::new());
    let mut sub = Subscriber::connect(broker.plain_port(), &format!("{EVENTS}#")).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FullDisk {
        inner: SledStorage::open(dir.path(), 4 * MIB).unwrap(),
        full: AtomicBool::new(false),
    });
    let rig = Rig::start(
        broker.plain_port(),
        RigOptions {
            storage: Some(storage.clone()),
            ..Default::default()
        },
    )
    .await;
    storage.full.store(true, Ordering::SeqCst);
    let change = json!({"attributeId": 7, "value": 1, "attributeDataType": "SINT8"});
    let (status, _, body) = rig
        .call(Method::POST, "/v1/attributes", Some(change.clone()))
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let h: serde_json::Value = rig
        .http
        .get(rig.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["components"]["outbox"]["ok"], false, "{h}");
    storage.full.store(false, Ordering::SeqCst);
    let (status, _, body) = rig.call(Method::POST, "/v1/attributes", Some(change)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["ids"][0].as_str().unwrap().to_string();
    sub.until_all(std::slice::from_ref(&id), Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let more = sub.until_all(&[], Duration::from_millis(1)).await;
    assert_eq!(more, vec![id], "only the accepted message went out");
    let s = rig.stats();
    assert_eq!((s.accepted, s.messages), (1, 0), "{s:?}");
}
