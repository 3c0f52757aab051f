//! Afero's failure API as a partner's existing client uses it, against the
//! real `tether` binary: `GET /v1/partners/{partnerId}/pushFailures` (a bare
//! array, oldest first, UUID ids, exactly Afero's fields), then `DELETE
//! .../pushFailures/{partnerPushFailureId}` for each. Failures come from a
//! hub nobody answers and a webhook answering 500, expired after a short
//! `store.ttl`. Also: ids stay the same across restarts and the decimal
//! ids of earlier releases still resolve. The seeded property test (every
//! listed failure is deleted once and only once) is a component test of
//! the admin API: `src/admin/tests/failures.rs`.

use crate::outbox_rig;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::outbox_rig::{config_text, free_addr, Tether, TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tether_testkit::afero::PushFailure;
use tether_testkit::http::{Reply, Server};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

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
