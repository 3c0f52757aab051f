//! The answer side of the relay (cloud-relay.md §2, §3, §5): the modern
//! answer shape, header filtering, inline vs blob, file upload through the
//! hub's three HTTPS calls (Azure layout and plain-broker endpoint), and
//! truncation of large error bodies.

use std::time::Duration;

use serde_json::{json, Value};
use tether_testkit::http::{eclypse, Eclypse, UploadHub, UPLOAD_CONTAINER};
use tether_testkit::TestCa;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

async fn handle(relay: &Relay, call: MethodCall) -> MethodResponse {
    tokio::time::timeout(WAIT, relay.handle(call))
        .await
        .expect("answered in time")
}

fn get(rid: &str, path: &str) -> MethodCall {
    call(
        rid,
        &json!({"path": path, "method": "GET", "headers": {"accept": "*/*"}}),
    )
}

/// A relay with an Azure-layout upload stand-in over TLS.
struct AzureSetup {
    eclypse: Eclypse,
    hub: UploadHub,
    relay: Relay,
    _dir: tempfile::TempDir,
}

async fn azure_setup() -> AzureSetup {
    let ca = TestCa::new("hub CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(&dir, "hub-ca.pem", &ca.cert_pem());
    let hub = UploadHub::start_tls(&ca.issue_server(&["127.0.0.1"])).await;
    let eclypse = eclypse().await;
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&eclypse.base_url()),
        azure_uploader(&hub, ca_file),
    )
    .unwrap();
    AzureSetup {
        eclypse,
        hub,
        relay,
        _dir: dir,
    }
}

/// Checks a blob answer and returns its uuid part.
fn blob_answer(resp: &MethodResponse, content_type: &str) -> String {
    assert_eq!(resp.status, 200);
    let v = decode(resp);
    assert!(v.get("body").is_none(), "no body with a blobUrl: {v}");
    assert_eq!(v["headers"]["Content-Type"], content_type);
    let name = v["blobUrl"].as_str().expect("blobUrl is text");
    let uuid = name
        .strip_prefix("RestApi/")
        .expect("under the method name, no leading slash");
    let parsed = uuid::Uuid::parse_str(uuid).expect("a uuid");
    assert_eq!(
        parsed.hyphenated().to_string(),
        uuid,
        "lowercase hyphenated"
    );
    uuid.to_string()
}

/// Spec §2 first example, byte for byte: root status, only Content-Type
/// kept (Set-Cookie, ETag, X-Powered-By dropped), body as text.
#[tokio::test]
async fn spec_example_inline_answer_is_byte_exact() {
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    let resp = handle(&relay, get("1", "/api/rest/v1/info")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        r#"{"status":200,"headers":{"Content-Type":"application/json;charset=UTF-8"},"body":"{\"apiRevision\":\"8.0\"}"}"#
    );
}

/// A controller 404 is passed on inline with its status, in the modern
/// form (root `status`, never only `headers.status`).
#[tokio::test]
async fn a_controller_404_is_passed_on_inline() {
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    let resp = handle(&relay, get("1", "/no/such/thing")).await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        r#"{"status":404,"headers":{"Content-Type":"text/plain"},"body":"Not found"}"#
    );
}

/// Every answer is a JSON object whose root status is the method status,
/// whatever the outcome.
#[tokio::test]
async fn every_answer_is_an_object_with_the_method_status() {
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    for (i, path) in [
        "/api/rest/v1/info",
        "/status/204/0",
        "/status/418/3",
        "/status/500/0",
        "/../x",
    ]
    .iter()
    .enumerate()
    {
        let resp = handle(&relay, get(&i.to_string(), path)).await;
        let v = decode(&resp);
        assert!(v["body"].is_string(), "{path}: {v}");
    }
}

/// A body of exactly `inline_limit` bytes stays inline; one byte more goes
/// through Azure file upload: slot request with a fresh SAS, a BlockBlob
/// PUT under `{deviceId}/RestApi/{uuid}`, a success notification; the
/// answer names `RestApi/{uuid}` with the Content-Type.
#[tokio::test]
async fn bodies_over_the_inline_limit_go_through_azure_file_upload() {
    let s = azure_setup().await;
    let inline = handle(&s.relay, get("1", "/size/16384")).await;
    assert_eq!(decode(&inline)["body"].as_str().unwrap().len(), 16384);
    assert!(s.hub.server.requests().is_empty());

    let resp = handle(&s.relay, get("2", "/size/16385")).await;
    let uuid = blob_answer(&resp, "text/plain");
    let blobs = s.hub.blobs();
    assert_eq!(blobs.len(), 1);
    assert_eq!(
        blobs[0].path,
        format!("{UPLOAD_CONTAINER}/{DEVICE}/RestApi/{uuid}")
    );
    assert_eq!(blobs[0].blob_type.as_deref(), Some("BlockBlob"));
    assert_eq!(blobs[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(blobs[0].body, vec![b'a'; 16385]);
    assert!(
        blobs[0]
            .target
            .ends_with("?sv=2021-08-06&sr=b&sp=w&sig=test%2Bsig"),
        "{}",
        blobs[0].target
    );

    let reqs = s.hub.server.requests();
    let (slot, put, note) = (&reqs[0], &reqs[1], &reqs[2]);
    assert_eq!(slot.method, "POST");
    assert_eq!(slot.target, "/devices/dev1/files?api-version=2021-04-12");
    assert_eq!(
        serde_json::from_slice::<Value>(&slot.body).unwrap(),
        json!({"blobName": format!("RestApi/{uuid}")})
    );
    assert_eq!(slot.header("content-type"), Some("application/json"));
    let sas = format!(
        "SharedAccessSignature sr=127.0.0.1%3A{}%2Fdevices%2Fdev1&sig=",
        s.hub.server.host_port().rsplit(':').next().unwrap()
    );
    let auth = slot.header("authorization").unwrap();
    assert!(
        auth.starts_with(&sas) && auth.ends_with("&se=1700003600"),
        "{auth}"
    );
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.header("authorization"),
        None,
        "the SAS in the URL is the blob's auth"
    );
    assert_eq!(
        note.target,
        "/devices/dev1/files/notifications?api-version=2021-04-12"
    );
    assert_eq!(note.header("authorization"), Some(auth));
    let notes = s.hub.notifications();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["isSuccess"], true);
    assert_eq!(notes[0]["statusCode"], 201);
    assert_eq!(notes[0]["correlationId"], format!("corr-0-RestApi/{uuid}"));
    assert!(notes[0]["statusDescription"].is_string());
    // Nothing about the upload went to the controller.
    assert_eq!(s.eclypse.requests().len(), 2);
}

/// Bytes that are not UTF-8 go through upload whatever their size, exact.
#[tokio::test]
async fn binary_bodies_go_through_upload_exactly() {
    let s = azure_setup().await;
    let resp = handle(&s.relay, get("1", "/binary")).await;
    blob_answer(&resp, "application/octet-stream");
    assert_eq!(s.hub.blobs()[0].body, (0..=255u8).collect::<Vec<_>>());
}

/// Spec §2 third example: a blob answer carries Content-Disposition too.
#[tokio::test]
async fn blob_answers_carry_content_disposition() {
    let s = azure_setup().await;
    let resp = handle(&s.relay, get("1", "/backup")).await;
    let uuid = blob_answer(&resp, "application/zip");
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        format!(
            r#"{{"status":200,"headers":{{"Content-Type":"application/zip","Content-Disposition":"attachment; filename=\"backup.zip\""}},"blobUrl":"RestApi/{uuid}"}}"#
        )
    );
}

/// Non-2xx answers are always inline (the Cloud Relay answers blob
/// responses with 200), cut to the inline limit with a marker.
#[tokio::test]
async fn large_error_bodies_are_cut_inline_with_a_marker() {
    let s = azure_setup().await;
    let resp = handle(&s.relay, get("1", "/status/500/50000")).await;
    assert_eq!(resp.status, 500);
    let v = decode(&resp);
    let body = v["body"].as_str().unwrap();
    assert_eq!(
        body,
        format!(
            "{}\n[truncated by tether: 16384 of 50000 bytes shown]",
            "x".repeat(16384)
        )
    );
    assert!(resp.body.len() < 120 * 1024);
    assert!(s.hub.server.requests().is_empty(), "no upload for an error");

    let small = handle(&s.relay, get("2", "/status/503/10")).await;
    assert_eq!(small.status, 503);
    assert_eq!(decode(&small)["body"], "xxxxxxxxxx");
}

/// A failed blob PUT is answered 502 and still notified (isSuccess false)
/// so the hub frees the upload slot.
#[tokio::test]
async fn a_failed_upload_is_answered_502_and_notified() {
    let s = azure_setup().await;
    s.hub.fail_puts(true);
    let resp = handle(&s.relay, get("1", "/binary")).await;
    assert_eq!(resp.status, 502);
    assert_eq!(error_of(&resp), "upload_failed");
    let notes = s.hub.notifications();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["isSuccess"], false);
    let mut text = String::new();
    s.relay.metrics().render_prometheus(&mut text);
    assert!(
        text.contains("tether_relay_upload_failures_total 1\n"),
        "{text}"
    );
}

/// Plain-broker mode: `relay.upload_url` names a server with the hub's
/// layout over plain HTTP; the blob PUT follows its scheme and port, and the
/// device's broker username/password go as Basic auth.
#[tokio::test]
async fn plain_broker_uploads_use_the_endpoint_with_basic_auth() {
    let hub = UploadHub::start().await;
    let eclypse = eclypse().await;
    let mut cfg = relay_config();
    cfg.upload_url = Some(hub.server.base_url());
    let relay = Relay::new(
        &cfg,
        &controller_config(&eclypse.base_url()),
        endpoint_uploader(&hub, None),
    )
    .unwrap();
    let resp = handle(&relay, get("1", "/backup")).await;
    let uuid = blob_answer(&resp, "application/zip");
    assert_eq!(
        hub.blobs()[0].path,
        format!("{UPLOAD_CONTAINER}/{DEVICE}/RestApi/{uuid}")
    );
    let reqs = hub.server.requests();
    assert_eq!(reqs.len(), 3);
    let basic = basic(DEVICE, "broker-pw");
    assert_eq!(reqs[0].header("authorization"), Some(basic.as_str()));
    assert_eq!(reqs[2].header("authorization"), Some(basic.as_str()));
    assert_eq!(hub.notifications()[0]["isSuccess"], true);
}

/// Plain-broker mode with SAS credentials sends the same SAS token.
#[tokio::test]
async fn plain_broker_uploads_can_send_the_device_sas() {
    let hub = UploadHub::start().await;
    let eclypse = eclypse().await;
    let uploader = Uploader::Endpoint {
        base_url: format!("{}/", hub.server.base_url()),
        device_id: DEVICE.into(),
        auth: EndpointAuth::Device {
            credentials: azure_credentials("hub.example.net"),
            clock: Arc::new(ManualClock::at_unix(NOW_UNIX)),
        },
        ca_file: None,
    };
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&eclypse.base_url()),
        uploader,
    )
    .unwrap();
    blob_answer(
        &handle(&relay, get("1", "/binary")).await,
        "application/octet-stream",
    );
    let auth = hub.server.requests()[0]
        .header("authorization")
        .unwrap()
        .to_string();
    assert!(
        auth.starts_with("SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1&sig="),
        "{auth}"
    );
}

/// Without file upload, large text that still fits a method response goes
/// inline; binary or oversized bodies are answered 413.
#[tokio::test]
async fn without_upload_large_text_is_inline_and_binary_is_413() {
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    let resp = handle(&relay, get("1", "/size/50000")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(decode(&resp)["body"].as_str().unwrap().len(), 50000);
    for (i, path) in ["/binary", "/size/200000"].iter().enumerate() {
        let resp = handle(&relay, get(&format!("b{i}"), path)).await;
        assert_eq!(resp.status, 413, "{path}");
        assert_eq!(error_of(&resp), "payload_too_large");
    }
}

/// A controller answer over the body size limit is answered 413, not
/// buffered.
#[tokio::test]
async fn controller_answers_over_the_size_limit_are_413() {
    let eclypse = eclypse().await;
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&eclypse.base_url()),
        Uploader::Disabled,
    )
    .unwrap()
    .with_max_body_bytes(1000);
    let resp = handle(&relay, get("1", "/size/1001")).await;
    assert_eq!(resp.status, 413);
    assert_eq!(error_of(&resp), "payload_too_large");
    assert_eq!(handle(&relay, get("2", "/size/1000")).await.status, 200);
}
