//! Afero's failure API as a partner's existing client uses it, against the
//! real `tether` binary: `GET /v1/partners/{partnerId}/pushFailures` (a bare
//! array, oldest first, UUID ids, exactly Afero's fields), then `DELETE
//! .../pushFailures/{partnerPushFailureId}` for each. Failures come from a
//! hub nobody answers and a webhook answering 500, expired after a short
//! `store.ttl`. Also: ids stay the same across restarts, the decimal ids of
//! earlier releases still resolve, and (a seeded property test, in
//! process) every listed failure is deleted once and only once.

use crate::outbox_rig;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::outbox_rig::{config_text, free_addr, test_message, Tether, TOKEN};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tether::admin::{self, Admin, Bound};
use tether::clock::SystemClock;
use tether_outbox::{FailureIds, Outbox};
use tether_testkit::http::{Reply, Server};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// A failure as Afero's tech note lists its fields; any other field fails
/// the parse.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PushFailure {
    partner_push_failure_id: String,
    partner_id: String,
    created_timestamp: u64,
    error_message: String,
    partner_push_message: Value,
}

/// A partner's client written only from the tech note: a base URL, a
/// bearer token and the partner id; list, then delete each.
struct PartnerClient {
    http: reqwest::Client,
    base: String,
    partner_id: String,
}

impl PartnerClient {
    fn new(base: &str, partner_id: &str) -> Self {
        Self {
            http: http(),
            base: base.to_string(),
            partner_id: partner_id.to_string(),
        }
    }

    async fn push_failures(&self) -> Vec<PushFailure> {
        let url = format!("{}/v1/partners/{}/pushFailures", self.base, self.partner_id);
        let resp = self.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("a JSON array of push failures")
    }

    async fn delete(&self, id: &str) -> StatusCode {
        let url = format!(
            "{}/v1/partners/{}/pushFailures/{id}",
            self.base, self.partner_id
        );
        let resp = self.http.delete(url).bearer_auth(TOKEN);
        resp.send().await.unwrap().status()
    }
}

/// The real binary with the hub at an address nobody answers and the
/// webhook `acme` at `hook`, both giving up after `store.ttl = 1s`.
fn start(dir: &Path, admin: SocketAddr, hook: &str) -> Tether {
    let dead_hub = free_addr().port();
    let cfg = dir.join("tether.toml");
    let text = config_text(dead_hub, dir, "ttl = \"1s\"\n", Some(admin));
    let hook = format!("[[webhook]]\nname = \"acme\"\nurl = \"{hook}/notify\"\ntimeout = \"2s\"\n");
    std::fs::write(&cfg, format!("{text}\n{hook}")).unwrap();
    Tether::start(&cfg, &dir.join("tether.log"))
}

thread_local! {
    /// One client per test (each runs on its own thread and runtime):
    /// building one loads the system's trust roots, slower than a request.
    static CLIENT: reqwest::Client = outbox_rig::client();
}

fn http() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

async fn call(
    method: reqwest::Method,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http()
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the admin API answers");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until the daemon's admin API answers and then until it keeps
/// `n` failures.
async fn wait_failures(base: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = http()
            .get(format!("{base}/v1/outbox/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            if let Ok(s) = r.json::<Value>().await {
                if s["failures"].as_u64() == Some(n) {
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {n} push failures"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `n` attribute changes through the admin API; their message ids.
async fn submit(base: &str, n: u16) -> Vec<String> {
    let changes: Vec<Value> = (1..=n)
        .map(|i| json!({"attributeId": i, "value": 1, "attributeDataType": "SINT8"}))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = http()
            .post(format!("{base}/v1/attributes"))
            .bearer_auth(TOKEN)
            .json(&changes)
            .send()
            .await
        {
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let body: Value = r.json().await.unwrap();
            return body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tether never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failing_webhook() -> Server {
    Server::start(|_req| async { Reply::new(500, "partner endpoint down") })
        .await
        .expect("start the HTTP server on 127.0.0.1")
}

/// A partner's client, unchanged, lists its failures (oldest first, UUID
/// ids, Afero's fields only) and deletes each with 204; a second delete,
/// another partner's id and an unknown partner are 404; `limit` pages with
/// a `Link` header that a client may follow or ignore.
#[tokio::test]
async fn a_partner_client_from_the_tech_note_lists_then_deletes_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let hook = failing_webhook().await;
    let admin = free_addr();
    let base = format!("http://{admin}");
    let _tether = start(dir.path(), admin, &hook.base_url());
    let before_ms = ms_now();
    let ids = submit(&base, 3).await;
    wait_failures(&base, 6).await;

    let hub = PartnerClient::new(&base, "hub");
    let acme = PartnerClient::new(&base, "acme");
    let hub_failures = hub.push_failures().await;
    let acme_failures = acme.push_failures().await;
    for (client, list, error) in [
        (&hub, &hub_failures, "hub unreachable"),
        (&acme, &acme_failures, "500"),
    ] {
        let order: Vec<&str> = list
            .iter()
            .map(|f| f.partner_push_message["id"].as_str().unwrap())
            .collect();
        assert_eq!(order, ids, "oldest first, every message of the partner");
        for f in list.iter() {
            let uuid = Uuid::parse_str(&f.partner_push_failure_id).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 8);
            assert_eq!(f.partner_id, client.partner_id);
            assert!(f.error_message.contains(error), "{f:?}");
            assert!(
                (before_ms..=ms_now()).contains(&f.created_timestamp),
                "{f:?}"
            );
            assert_eq!(f.partner_push_message["deviceId"], "dev1");
            assert!(f.partner_push_message["attributeId"].is_u64(), "{f:?}");
        }
    }

    let (status, body) = call(
        reqwest::Method::GET,
        &base,
        "/v1/partners/nobody/pushFailures",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["partnerId"], "nobody", "{body}");
    let hubs_first = &hub_failures[0].partner_push_failure_id;
    assert_eq!(acme.delete(hubs_first).await, StatusCode::NOT_FOUND);
    assert_eq!(
        hub.push_failures().await.len(),
        3,
        "another partner cannot delete it"
    );

    let resp = http()
        .get(format!("{base}/v1/partners/acme/pushFailures?limit=2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let link = resp.headers()["link"].to_str().unwrap().to_string();
    let first: Vec<PushFailure> = resp.json().await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let resp = http()
        .get(format!("{base}{next}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("link").is_none(), "the last page");
    let rest: Vec<PushFailure> = resp.json().await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|f| &f.partner_push_failure_id)
            .collect::<Vec<_>>(),
        vec![&acme_failures[2].partner_push_failure_id]
    );

    for client in [&hub, &acme] {
        for f in client.push_failures().await {
            assert_eq!(
                client.delete(&f.partner_push_failure_id).await,
                StatusCode::NO_CONTENT
            );
            assert_eq!(
                client.delete(&f.partner_push_failure_id).await,
                StatusCode::NOT_FOUND
            );
        }
        assert!(client.push_failures().await.is_empty());
    }
    wait_failures(&base, 0).await;
}

/// Failures keep their UUIDs across a restart, and the decimal ids of
/// earlier releases (the records keep them; the store's layout did not
/// change) still name the same failures, once.
#[tokio::test]
async fn ids_survive_a_restart_and_old_decimal_ids_still_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let hook = failing_webhook().await;
    let admin = free_addr();
    let base = format!("http://{admin}");
    let mut tether = start(dir.path(), admin, &hook.base_url());
    submit(&base, 2).await;
    wait_failures(&base, 4).await;
    let listed = |c: PartnerClient| async move {
        c.push_failures()
            .await
            .into_iter()
            .map(|f| f.partner_push_failure_id)
            .collect::<Vec<_>>()
    };
    let hub_ids = listed(PartnerClient::new(&base, "hub")).await;
    let acme_ids = listed(PartnerClient::new(&base, "acme")).await;

    let pid = tether.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tether.child.wait().unwrap();
    let _tether = start(dir.path(), admin, &hook.base_url());
    wait_failures(&base, 4).await;
    assert_eq!(listed(PartnerClient::new(&base, "hub")).await, hub_ids);
    assert_eq!(listed(PartnerClient::new(&base, "acme")).await, acme_ids);

    let mut by_number = BTreeSet::new();
    for n in 1..=4 {
        let (status, f) = call(
            reqwest::Method::GET,
            &base,
            &format!("/v1/pushFailures/{n}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "decimal id {n}");
        by_number.insert(f["partnerPushFailureId"].as_str().unwrap().to_string());
    }
    let all: BTreeSet<String> = hub_ids.iter().chain(&acme_ids).cloned().collect();
    assert_eq!(
        by_number, all,
        "the decimal ids name exactly the listed failures"
    );

    let (_, first) = call(reqwest::Method::GET, &base, "/v1/pushFailures/1", None).await;
    let partner = first["partnerId"].as_str().unwrap();
    let uuid = first["partnerPushFailureId"].as_str().unwrap();
    let old = format!("/v1/partners/{partner}/pushFailures/1");
    assert_eq!(
        call(reqwest::Method::DELETE, &base, &old, None).await.0,
        StatusCode::NO_CONTENT
    );
    let new = format!("/v1/partners/{partner}/pushFailures/{uuid}");
    assert_eq!(
        call(reqwest::Method::DELETE, &base, &new, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, page) = call(reqwest::Method::GET, &base, "/v1/pushFailures", None).await;
    assert_eq!(
        page["pushFailures"].as_array().map(Vec::len),
        Some(3),
        "{page}"
    );
}

fn ms_now() -> u64 {
    tether_protocol::time::unix_ms(SystemTime::now())
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
        let cfg = tether::config::parse(&config_text(1, dir.path(), "", None), dir.path()).unwrap();
        let outbox =
            Outbox::open(&cfg.store, &["acme".into()], Arc::new(SystemClock), &|| {}).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (_, hub) = tokio::sync::watch::channel(tether::hub::HubStatus::new(SystemTime::now()));
        let state = Arc::new(Admin {
            hub,
            metrics: vec![],
            checks: vec![],
            token: Some(tether::config::Secret::new(TOKEN)),
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
            assert!(page.iter().all(|f| f.partner_id == partner));
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
        call(reqwest::Method::DELETE, &self.base, &path, None)
            .await
            .0
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
                None,
            )
            .await;
            assert_eq!(legacy.0, StatusCode::NOT_FOUND);
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
