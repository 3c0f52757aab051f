//! A full disk, injected through the storage trait: intake answers 507 and
//! keeps nothing of the refused request, `/healthz` reports the unwritable
//! store, and intake works again once space is back. The hub session, its
//! delivery task and the admin API run in-process against a real
//! Mosquitto; the cloud side is an observer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tether_outbox::store::{Batch, Op, Rows};
use tether_outbox::{Outbox, Stats, Storage, StoreError};
use tether_testkit::{Broker, BrokerOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin, Bound};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Secret;
use crate::hub::{self, Router};
use crate::outbox::metrics::OutboxMetrics;
use crate::outbox::{spawn_hub_sink, spawn_upkeep, HubSinkOptions};
use crate::service::Beat;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const EVENTS: &str = "devices/dev1/messages/events/";

/// A store in memory whose syncs fail as on a full disk while `full` is
/// set. In memory, not on an engine: the engines are the outbox crate's
/// own, and the answer to a full disk is the outbox's and the daemon's
/// whatever the engine (`tests/it/chaos_disk_full.rs` fills a real disk
/// under the binary).
#[derive(Default)]
struct FullDisk {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    full: AtomicBool,
}

impl FullDisk {
    fn map(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for FullDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Rows, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let map = self.map();
        let range = map.range(from.to_vec()..to.to_vec());
        let rows: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        Ok(rows
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut map = self.map();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => map.insert(k, v),
                Op::Del(k) => map.remove(&k),
            };
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::from_io(std::io::Error::from(
                std::io::ErrorKind::StorageFull,
            )));
        }
        Ok(())
    }
    fn disk_bytes(&self) -> u64 {
        0
    }
}

/// The outbox on `storage` delivering to the hub at `port` (and its
/// upkeep, which removes what was delivered), with the admin
/// API's health, metrics, attribute intake and stats on a free loopback
/// port; its base URL.
async fn start(
    port: u16,
    storage: Arc<dyn Storage>,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> String {
    crate::tls::install_crypto_provider();
    let text = format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
         keep_alive = \"5s\"\nconnect_timeout = \"2s\"\n[store]\npath = \"{}\"\n",
        dir.join("store").display()
    );
    let cfg = crate::config::parse(&text, dir).expect("valid config");
    let clock: SharedClock = Arc::new(SystemClock);
    let outbox = Outbox::with_storage(
        storage,
        tether_outbox::settings(&cfg.store),
        &[],
        clock.clone(),
    )
    .expect("the outbox opens");
    let h = hub::start(
        &cfg.hub,
        Router::new(),
        clock.clone(),
        serde_json::Map::new(),
        Beat::detached(),
        stop.clone(),
    )
    .expect("the hub session starts");
    spawn_hub_sink(
        &outbox,
        h.handle.clone(),
        h.deliveries,
        HubSinkOptions {
            max_messages_per_second: cfg.hub.max_messages_per_second,
            batch_max_bytes: cfg.store.batch_max_bytes,
        },
        Beat::detached(),
        stop.clone(),
    );
    spawn_upkeep(&outbox, Beat::detached(), stop.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let base = format!("http://{}", listener.local_addr().expect("admin addr"));
    let metrics = Arc::new(OutboxMetrics(outbox.core.clone()));
    let state = Arc::new(Admin {
        hub: h.handle.watch_status(),
        metrics: vec![metrics.clone()],
        checks: vec![metrics],
        token: Some(Secret::new(TOKEN)),
    });
    let v1 = admin::attributes::router(Arc::new(admin::attributes::AttributesApi {
        intake: outbox.intake.clone(),
        device_id: "dev1".into(),
        extended_data: cfg.store.extended_data.clone(),
        clock,
    }))
    .merge(admin::failures::router(Arc::new(
        admin::failures::FailuresApi {
            core: outbox.core.clone(),
            intake: outbox.intake.clone(),
        },
    )));
    admin::serve(Bound::Tcp(listener), admin::app(state, v1), stop.clone());
    base
}

/// A full disk makes intake answer 507; what was refused is never sent,
/// and intake works again once space is back.
#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_nothing_of_the_refused_request() {
    let broker = Broker::start(BrokerOptions::new());
    let mut cloud = tether_testkit::cloud(broker.plain_port(), &[&format!("{EVENTS}#")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(FullDisk::default());
    let stop = CancellationToken::new();
    let base = start(broker.plain_port(), storage.clone(), dir.path(), &stop).await;
    let http = reqwest::Client::new();
    let post = |change: Value| {
        http.post(format!("{base}/v1/attributes"))
            .bearer_auth(TOKEN)
            .json(&change)
            .send()
    };

    storage.full.store(true, Ordering::SeqCst);
    let change = json!({"attributeId": 7, "value": 1, "attributeDataType": "SINT8"});
    let resp = post(change.clone()).await.expect("intake answers");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let h: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("/healthz answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(h["components"]["outbox"]["ok"], false, "{h}");

    storage.full.store(false, Ordering::SeqCst);
    let resp = post(change).await.expect("intake answers");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.expect("JSON");
    let id = body["ids"][0].as_str().expect("an id").to_string();
    let sent = cloud
        .next_on(EVENTS, Duration::from_secs(10))
        .await
        .expect("the accepted message arrives");
    let m: Value = serde_json::from_slice(&sent.payload).expect("JSON message");
    assert_eq!(m["id"], id.as_str());
    assert!(
        cloud
            .next_on(EVENTS, Duration::from_millis(500))
            .await
            .is_err(),
        "only the accepted message went out"
    );
    let s: Stats = http
        .get(format!("{base}/v1/outbox/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("stats answer")
        .json()
        .await
        .expect("the outbox stats");
    assert_eq!((s.accepted, s.messages), (1, 0), "{s:?}");
    stop.cancel();
}
