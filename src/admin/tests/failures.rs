//! Afero's failure API as a component: the outbox with the sinks `hub`
//! and `acme` (no delivery tasks, failures made with `give_up`) behind the
//! admin API's failure routes. A seeded property test: every listed failure
//! is deleted once and only once. The same API against the daemon, with
//! failures from real sinks, is `tests/it/afero_failures.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use tether_outbox::{FailureIds, NewMessage, Outbox};
use tether_testkit::afero::PushFailure;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin, Bound};
use crate::clock::SystemClock;
use crate::config::Secret;
use crate::hub::HubStatus;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

thread_local! {
    /// One client per test (each runs on its own thread and runtime):
    /// building one loads the system's trust roots, slower than a request.
    static CLIENT: reqwest::Client = {
        crate::tls::install_crypto_provider();
        reqwest::Client::new()
    };
}

fn http() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

async fn call(method: reqwest::Method, base: &str, path: &str) -> StatusCode {
    let req = http()
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    req.send().await.expect("the admin API answers").status()
}

/// An attribute-typed message carrying its id and number `n`.
fn test_message(n: usize) -> NewMessage {
    let id = uuid::Uuid::new_v4();
    NewMessage {
        id,
        message_type: "attribute".into(),
        body: serde_json::json!({"id": id.to_string(), "n": n})
            .to_string()
            .into_bytes(),
        only_sink: None,
    }
}

/// tether in process with the sinks `hub` and `acme` (no delivery tasks)
/// and its admin API; failures are made with `give_up`.
struct Local {
    outbox: Outbox,
    base: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Local {
    async fn start() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[hub]\nurl = \"mqtt://127.0.0.1:1\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
             [store]\npath = \"{}\"\n",
            dir.path().join("store").display()
        );
        let cfg = crate::config::parse(&text, dir.path()).unwrap();
        let outbox =
            Outbox::open(&cfg.store, &["acme".into()], Arc::new(SystemClock), &|| {}).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (_, hub) = tokio::sync::watch::channel(HubStatus::new(SystemTime::now()));
        let state = Arc::new(Admin {
            hub,
            metrics: vec![],
            checks: vec![],
            token: Some(Secret::new(TOKEN)),
        });
        let v1 = admin::failures::router(Arc::new(admin::failures::FailuresApi {
            core: outbox.core.clone(),
            intake: outbox.intake.clone(),
        }));
        let stop = CancellationToken::new();
        admin::serve(Bound::Tcp(listener), admin::app(state, v1), stop.clone());
        Local {
            outbox,
            base,
            stop,
            _dir: dir,
        }
    }

    /// `n` messages, each failed for the hub, acme or both; how many
    /// failures that made per partner.
    async fn fail(&self, rng: &mut StdRng, n: usize) -> HashMap<&'static str, usize> {
        let msgs = (0..n).map(test_message).collect();
        self.outbox.intake.submit(msgs).await.unwrap();
        let core = &self.outbox.core;
        let mut made = HashMap::from([("hub", 0), ("acme", 0)]);
        let hub = core.read(0, 0, n).unwrap();
        let acme = core.read(1, 0, n).unwrap();
        for (h, a) in hub.iter().zip(&acme) {
            let pick = rng.gen_range(0..3);
            if pick != 1 {
                core.give_up(0, h, "hub unreachable").unwrap();
                *made.get_mut("hub").unwrap() += 1;
            }
            if pick != 0 {
                core.give_up(1, a, "500 Internal Server Error").unwrap();
                *made.get_mut("acme").unwrap() += 1;
            }
        }
        made
    }

    /// Every failure of `partner`, following `Link` pages of random size.
    async fn list(&self, rng: &mut StdRng, partner: &str) -> Vec<String> {
        let mut url = format!(
            "{}/v1/partners/{partner}/pushFailures?limit={}",
            self.base,
            rng.gen_range(1..=25)
        );
        let mut out = Vec::new();
        loop {
            let resp = http().get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let link = resp
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_string());
            let page: Vec<PushFailure> = resp.json().await.unwrap();
            assert!(page.iter().all(|f| f.partner_id == partner
                && f.created_timestamp > 0
                && !f.error_message.is_empty()
                && f.partner_push_message["id"].is_string()));
            out.extend(page.into_iter().map(|f| f.partner_push_failure_id));
            match link {
                Some(l) => {
                    let path = l
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_string();
                    url = format!("{}{path}", self.base);
                }
                None => return out,
            }
        }
    }

    async fn delete(&self, partner: &str, id: &str) -> StatusCode {
        let path = format!("/v1/partners/{partner}/pushFailures/{id}");
        call(reqwest::Method::DELETE, &self.base, &path).await
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Property: whatever the mix of partners, page sizes and order of
/// deletes, every listed failure is listed once, deleted with 204 exactly
/// once (also when two deletes race), and is 404 afterwards, for its own
/// partner, the other one and the extension path alike; another store's
/// UUID is 404. `TETHER_PROPTEST_SEEDS` runs more seeds.
#[tokio::test]
async fn every_listed_failure_can_be_deleted_once_and_only_once() {
    let seeds: u64 = std::env::var("TETHER_PROPTEST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let local = Local::start().await;
        let n = rng.gen_range(1..=60);
        let made = local.fail(&mut rng, n).await;
        let mut live: Vec<(&str, String)> = Vec::new();
        for partner in ["hub", "acme"] {
            let ids = local.list(&mut rng, partner).await;
            let distinct: BTreeSet<_> = ids.iter().collect();
            assert_eq!(distinct.len(), ids.len(), "seed {seed}: listed once");
            assert_eq!(ids.len(), made[partner], "seed {seed}: {partner} lists all");
            live.extend(ids.into_iter().map(|id| (partner, id)));
        }
        let stranger = FailureIds::for_store("another store").uuid(1).to_string();
        assert_eq!(local.delete("hub", &stranger).await, StatusCode::NOT_FOUND);

        live.shuffle(&mut rng);
        let mut deleted = 0;
        for (i, (partner, id)) in live.iter().enumerate() {
            let other = if *partner == "hub" { "acme" } else { "hub" };
            if rng.gen_bool(0.3) {
                assert_eq!(
                    local.delete(other, id).await,
                    StatusCode::NOT_FOUND,
                    "seed {seed}"
                );
            }
            let wins = if rng.gen_bool(0.3) {
                let (a, b) = tokio::join!(local.delete(partner, id), local.delete(partner, id));
                [a, b]
                    .iter()
                    .filter(|s| **s == StatusCode::NO_CONTENT)
                    .count()
            } else {
                usize::from(local.delete(partner, id).await == StatusCode::NO_CONTENT)
            };
            assert_eq!(wins, 1, "seed {seed}: {partner} {id} deleted exactly once");
            deleted += wins;
            assert_eq!(local.delete(partner, id).await, StatusCode::NOT_FOUND);
            let legacy = call(
                reqwest::Method::DELETE,
                &local.base,
                &format!("/v1/pushFailures/{id}"),
            )
            .await;
            assert_eq!(legacy, StatusCode::NOT_FOUND);
            if rng.gen_bool(0.1) {
                let left: BTreeSet<&String> = live[i + 1..]
                    .iter()
                    .filter(|(p, _)| p == partner)
                    .map(|(_, id)| id)
                    .collect();
                let listed = local.list(&mut rng, partner).await;
                assert_eq!(listed.iter().collect::<BTreeSet<_>>(), left, "seed {seed}");
            }
        }
        assert_eq!(deleted, made.values().sum::<usize>());
        assert_eq!(local.outbox.core.stats().failures, 0, "seed {seed}");
    }
}
