//! The request side of the relay (cloud-relay.md §1, §5), end to end
//! against a real ECLYPSE stand-in: payload rows, header filtering,
//! controller auth and TLS, path attacks, and every failure answer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tether_testkit::http::{blob_source, eclypse, eclypse_tls};
use tether_testkit::TestCa;

use super::*;
use crate::relay::RelayError;

/// Every wait on a call; a hang fails fast.
const WAIT: Duration = Duration::from_secs(10);

async fn handle(relay: &Relay, call: MethodCall) -> MethodResponse {
    tokio::time::timeout(WAIT, relay.handle(call))
        .await
        .expect("answered in time")
}

/// Spec §1 first example: a GET reaches the controller with tether's Basic
/// auth and the cloud's Accept, and its answer comes back.
#[tokio::test]
async fn spec_example_get_reaches_the_controller_with_basic_auth() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = br#"{"path":"/api/rest/v1/info","method":"GET","headers":{"accept":"*/*"}}"#;
    let resp = handle(&relay, call_on(1, "1", payload)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(decode(&resp)["body"], r#"{"apiRevision":"8.0"}"#);
    let reqs = eclypse.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/api/rest/v1/info");
    assert_eq!(
        reqs[0].header("authorization"),
        Some(eclypse_basic().as_str())
    );
    assert_eq!(reqs[0].header("accept"), Some("*/*"));
    assert!(reqs[0].body.is_empty());
}

/// Spec §1 second example, byte for byte: inline body, `content-Type`,
/// the query passed on, Content-Length matching the bytes sent.
#[tokio::test]
async fn spec_example_post_sends_the_inline_body_with_its_content_type() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = br#"{"body":"{\"value\":21.5}","path":"/api/rest/v1/some/resource?x=1","method":"POST","headers":{"accept":"application/json","content-Type":"application/json; charset=utf-8","content-Length":14}}"#;
    let resp = handle(&relay, call_on(1, "1", payload)).await;
    assert_eq!(resp.status, 200, "{}", decode(&resp));
    let r = &eclypse.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/api/rest/v1/some/resource?x=1");
    assert_eq!(r.body, br#"{"value":21.5}"#);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("content-length"), Some("14"));
    assert_eq!(r.header("accept"), Some("application/json"));
    // The echo came back inline.
    assert_eq!(decode(&resp)["body"], r#"{"value":21.5}"#);
}

/// Content-Length is recomputed from the bytes actually sent, not copied
/// from the client's `content-Length`; non-ASCII text goes as UTF-8.
#[tokio::test]
async fn content_length_is_recomputed_from_the_bytes_sent() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/echo", "method": "PUT", "body": "température 21 °C",
        "headers": {"content-Type": "text/plain", "content-Length": 999}});
    assert_eq!(handle(&relay, call("1", &payload)).await.status, 200);
    let r = &eclypse.requests()[0];
    assert_eq!(r.body, "température 21 °C".as_bytes());
    assert_eq!(r.header("content-length"), Some("19"));
}

/// An empty POST body (`"body":""`) and a POST without body both send
/// `Content-Length: 0`.
#[tokio::test]
async fn empty_post_bodies_send_a_zero_content_length() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    handle(
        &relay,
        call(
            "1",
            &json!({"path": "/echo", "method": "POST", "headers": {}, "body": ""}),
        ),
    )
    .await;
    handle(
        &relay,
        call("2", &json!({"path": "/echo", "method": "POST"})),
    )
    .await;
    for r in eclypse.requests() {
        assert_eq!(r.header("content-length"), Some("0"));
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n == "content-length")
                .count(),
            1
        );
        assert!(r.body.is_empty());
    }
}

/// The body is re-encoded in the charset its Content-Type names, as the
/// Cloud Relay decoded it with that charset.
#[tokio::test]
async fn bodies_are_reencoded_in_the_named_charset() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/status/201/0", "method": "POST", "body": "é",
        "headers": {"content-Type": "text/plain; charset=iso-8859-1"}});
    assert_eq!(handle(&relay, call("1", &payload)).await.status, 201);
    assert_eq!(eclypse.requests()[0].body, [0xe9]);
}

/// Only Accept, Content-Type, Content-Length and Content-Disposition reach
/// the controller; the cloud's Authorization never does, tether's Basic
/// auth does. Keys are matched in any case, `accept` arrays are joined.
#[tokio::test]
async fn only_the_four_headers_are_forwarded_and_the_cloud_authorization_never() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/echo", "method": "POST", "body": "x", "headers": {
        "ACCEPT": ["text/plain", "application/json"],
        "content-Type": "text/plain",
        "content-Disposition": "attachment; filename=\"a.txt\"",
        "content-Length": 1,
        "authorization": "Bearer cloud-token",
        "Authorization": "Basic Y2xvdWQ6c2VjcmV0",
        "cookie": "session=cloud",
        "x-forwarded-for": "203.0.113.9",
        "host": "evil.example",
        "x-ms-client-request-id": "abc"}});
    assert_eq!(handle(&relay, call("1", &payload)).await.status, 200);
    let r = &eclypse.requests()[0];
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    for forbidden in ["cookie", "x-forwarded-for", "x-ms-client-request-id"] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} forwarded: {names:?}"
        );
    }
    assert_eq!(r.header("authorization"), Some(eclypse_basic().as_str()));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .count(),
        1
    );
    assert_eq!(r.header("host"), Some(eclypse.host_port().as_str()));
    assert_eq!(r.header("accept"), Some("text/plain, application/json"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"a.txt\"")
    );
}

/// GET and DELETE carry no body and no content headers (§1 step 1).
#[tokio::test]
async fn get_and_delete_carry_no_body_or_content_headers() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    for (i, m) in ["GET", "delete"].iter().enumerate() {
        let payload = json!({"path": "/echo", "method": m, "body": "dropped",
            "headers": {"content-Type": "text/plain", "content-Length": 7}});
        assert_eq!(
            handle(&relay, call(&i.to_string(), &payload)).await.status,
            200
        );
    }
    let reqs = eclypse.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[1].method, "DELETE");
    for r in reqs {
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-type"), None);
        assert!(r.header("content-length").is_none() || r.header("content-length") == Some("0"));
    }
}

/// Methods other than GET, PUT, POST and DELETE are answered 405 and never
/// reach the controller.
#[tokio::test]
async fn other_methods_are_answered_405() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    for m in ["PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"] {
        let resp = handle(
            &relay,
            call(m, &json!({"path": "/echo", "method": m, "headers": {}})),
        )
        .await;
        assert_eq!(resp.status, 405, "{m}");
        assert_eq!(error_of(&resp), "method_not_allowed");
    }
    assert!(eclypse.requests().is_empty());
}

/// Payloads that are not a request object are answered 400.
#[tokio::test]
async fn unreadable_payloads_are_answered_400() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    for (i, p) in [
        "",
        "nope",
        "[]",
        "null",
        "\"{}\"",
        r#"{"method":"GET"}"#,
        r#"{"path":"/x"}"#,
    ]
    .iter()
    .enumerate()
    {
        let resp = handle(&relay, call_on(1, &i.to_string(), p.as_bytes())).await;
        assert_eq!(resp.status, 400, "{p}");
        assert_eq!(error_of(&resp), "invalid_request", "{p}");
    }
    assert!(eclypse.requests().is_empty());
}

/// Every path attack is answered 400 and nothing reaches the controller.
#[tokio::test]
async fn path_attacks_are_answered_400() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let attacks = [
        "http://evil.example/x",
        "https://evil.example",
        "evil.example/api",
        "//evil.example/api",
        "/api//x",
        "@evil.example/x",
        "/..",
        "/../etc/passwd",
        "/api/rest/../../x",
        "/api/./x",
        "/%2e%2E/x",
        "/%2E%2e",
        "/.%2e/x",
        "/api%2f..%2fx",
        "/api%2Fx",
        "/api%5Cx",
        "/api%5cx",
        "/api\\x",
        "\\\\evil\\x",
        "/api\r\nX-Injected: 1",
        "/api\nx",
        "/api\0",
        "/api%00",
        "/api%0d%0aX: 1",
        "/api%zz",
        "",
    ];
    for (i, path) in attacks.iter().enumerate() {
        let resp = handle(
            &relay,
            call(&i.to_string(), &json!({"path": path, "method": "GET"})),
        )
        .await;
        assert_eq!(resp.status, 400, "{path:?}: {}", decode(&resp));
        let code = error_of(&resp);
        assert!(
            code == "invalid_path" || code == "invalid_request",
            "{path:?}: {code}"
        );
    }
    assert!(eclypse.requests().is_empty(), "{:?}", eclypse.requests());
}

/// A `#fragment` is dropped; the query goes as given (encoded dots and
/// slashes in the query are not path tricks).
#[tokio::test]
async fn the_fragment_is_dropped_and_the_query_passed_as_given() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/echo/x?a=1&b=%2F..%2e&c=d%20e#frag", "method": "GET"});
    assert_eq!(handle(&relay, call("1", &payload)).await.status, 200);
    assert_eq!(
        eclypse.requests()[0].target,
        "/echo/x?a=1&b=%2F..%2e&c=d%20e"
    );
}

/// With `allowed_paths` set, only paths under a prefix (segment-wise) are
/// relayed; the rest are refused 403.
#[tokio::test]
async fn allowed_paths_deny_everything_else() {
    let mut cfg = relay_config();
    cfg.allowed_paths = vec!["/api/rest/v1".into()];
    let (eclypse, relay) = plain_relay(cfg).await;
    let ok = handle(
        &relay,
        call(
            "1",
            &json!({"path": "/api/rest/v1/info?x=1", "method": "GET"}),
        ),
    )
    .await;
    assert_eq!(ok.status, 200);
    for (i, path) in ["/echo", "/api/rest/v1x", "/api/rest", "/API/rest/v1/info"]
        .iter()
        .enumerate()
    {
        let resp = handle(
            &relay,
            call(&format!("d{i}"), &json!({"path": path, "method": "GET"})),
        )
        .await;
        assert_eq!(resp.status, 403, "{path}");
        assert_eq!(error_of(&resp), "path_not_allowed");
    }
    assert_eq!(eclypse.requests().len(), 1);
}

/// A controller nobody listens for is answered 502.
#[tokio::test]
async fn an_unreachable_controller_is_answered_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&format!("http://127.0.0.1:{port}")),
        Uploader::Disabled,
    )
    .unwrap();
    let resp = handle(
        &relay,
        call("1", &json!({"path": "/api/rest/v1/info", "method": "GET"})),
    )
    .await;
    assert_eq!(resp.status, 502);
    assert_eq!(error_of(&resp), "controller_unreachable");
}

/// A controller slower than the per-request timeout is answered 504, on
/// time.
#[tokio::test]
async fn a_slow_controller_is_answered_504_on_time() {
    let mut cfg = relay_config();
    cfg.request_timeout = Duration::from_millis(300);
    let (_eclypse, relay) = plain_relay(cfg).await;
    let started = Instant::now();
    let resp = handle(
        &relay,
        call("1", &json!({"path": "/slow", "method": "GET"})),
    )
    .await;
    assert_eq!(resp.status, 504);
    assert_eq!(error_of(&resp), "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// TLS: a certificate from an untrusted CA is refused (502, tls_failure);
/// the same controller is reached once its CA is in `ca_file`, or with
/// `accept_invalid_certs` on a loopback host.
#[tokio::test]
async fn controller_tls_trust_choices() {
    let ca = TestCa::new("controller CA");
    let eclypse = eclypse_tls(&ca.issue_server(&["127.0.0.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let info = json!({"path": "/api/rest/v1/info", "method": "GET"});

    let mut untrusted = controller_config(&eclypse.base_url());
    untrusted.ca_file = Some(write_pem(
        &dir,
        "other.pem",
        &TestCa::new("other CA").cert_pem(),
    ));
    let relay = Relay::new(&relay_config(), &untrusted, Uploader::Disabled).unwrap();
    let resp = handle(&relay, call("1", &info)).await;
    assert_eq!(resp.status, 502);
    assert_eq!(error_of(&resp), "tls_failure");
    assert!(eclypse.requests().is_empty());

    let mut trusted = controller_config(&eclypse.base_url());
    trusted.ca_file = Some(write_pem(&dir, "ca.pem", &ca.cert_pem()));
    let relay = Relay::new(&relay_config(), &trusted, Uploader::Disabled).unwrap();
    assert_eq!(handle(&relay, call("1", &info)).await.status, 200);

    let mut insecure = controller_config(&eclypse.base_url());
    insecure.accept_invalid_certs = true;
    let relay = Relay::new(&relay_config(), &insecure, Uploader::Disabled).unwrap();
    assert_eq!(handle(&relay, call("1", &info)).await.status, 200);
    assert_eq!(eclypse.requests().len(), 2);
}

/// `accept_invalid_certs` is refused for a host that is not loopback or
/// link-local.
#[tokio::test]
async fn accept_invalid_certs_is_refused_for_remote_controllers() {
    let mut cfg = controller_config("https://controller.example");
    cfg.accept_invalid_certs = true;
    let err = Relay::new(&relay_config(), &cfg, Uploader::Disabled)
        .err()
        .expect("refused");
    assert!(
        matches!(err, RelayError::InsecureTlsNotLocal { .. }),
        "{err}"
    );
}

/// When the controller itself answers an error (here 401 for wrong
/// credentials), its status and body are passed on as they are.
#[tokio::test]
async fn controller_errors_are_passed_on_as_they_are() {
    let eclypse = eclypse().await;
    let mut cfg = controller_config(&eclypse.base_url());
    cfg.password = Some(Secret::new("wrong"));
    let relay = Relay::new(&relay_config(), &cfg, Uploader::Disabled).unwrap();
    let resp = handle(
        &relay,
        call("1", &json!({"path": "/api/rest/v1/info", "method": "GET"})),
    )
    .await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        String::from_utf8(resp.body).unwrap(),
        r#"{"status":401,"headers":{"Content-Type":"text/plain"},"body":"Unauthorized"}"#
    );
}

/// Redirects are passed on, not followed (the Basic credentials never go
/// to another host).
#[tokio::test]
async fn redirects_are_passed_on_not_followed() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let resp = handle(
        &relay,
        call("1", &json!({"path": "/redirect", "method": "GET"})),
    )
    .await;
    assert_eq!(resp.status, 302);
    assert_eq!(eclypse.requests().len(), 1);
}

/// Spec §1 third example: the body is downloaded from `blobUrl` with a
/// plain GET (no credentials) and replayed with `content-Type`; the
/// controller sees the blob's real length, not the client's.
#[tokio::test]
async fn blob_requests_are_downloaded_and_replayed() {
    let ca = TestCa::new("cloud CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(&dir, "ca.pem", &ca.cert_pem());
    let body = b"------x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n\xff\x00bin\r\n------x--\r\n".to_vec();
    let blob_path = "/cloud-relay-fileupload/dev1/RestApi/0f8fad5b-d9cb-469f-a165-70867728950e";
    let source = blob_source(
        &ca.issue_server(&["127.0.0.1"]),
        HashMap::from([(blob_path.to_string(), body.clone())]),
    )
    .await;
    let eclypse = eclypse().await;
    let hub = tether_testkit::http::UploadHub::start().await;
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&eclypse.base_url()),
        endpoint_uploader(&hub, Some(ca_file)),
    )
    .unwrap();
    let sas = "?sv=2021-08-06&se=2024-05-01T12%3A20%3A00Z&sr=b&sp=r&sig=abc%2Bdef";
    let payload = json!({
        "blobUrl": format!("{}{blob_path}{sas}", source.base_url()),
        "path": "/echo/files", "method": "POST",
        "headers": {"accept": "*/*", "content-Type": "multipart/form-data; boundary=----x", "content-Length": 2345678}});
    let resp = handle(&relay, call("1", &payload)).await;
    assert_eq!(resp.status, 200, "{}", decode(&resp));
    let got = &source.requests()[0];
    assert_eq!(got.method, "GET");
    assert_eq!(got.target, format!("{blob_path}{sas}"));
    assert_eq!(got.header("authorization"), None);
    let r = &eclypse.requests()[0];
    assert_eq!(r.body, body);
    assert_eq!(
        r.header("content-type"),
        Some("multipart/form-data; boundary=----x")
    );
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

/// Blob download failures: a missing blob is 502, a non-https URL 400, a
/// blob over the size limit 413, an untrusted blob host 502; none reaches
/// the controller.
#[tokio::test]
async fn blob_download_failures_are_answered() {
    let ca = TestCa::new("cloud CA");
    let dir = tempfile::tempdir().unwrap();
    let source = blob_source(
        &ca.issue_server(&["127.0.0.1"]),
        HashMap::from([("/big".to_string(), vec![7u8; 100])]),
    )
    .await;
    let eclypse = eclypse().await;
    let hub = tether_testkit::http::UploadHub::start().await;
    let uploader = endpoint_uploader(&hub, Some(write_pem(&dir, "ca.pem", &ca.cert_pem())));
    let relay = Relay::new(
        &relay_config(),
        &controller_config(&eclypse.base_url()),
        uploader,
    )
    .unwrap()
    .with_max_body_bytes(50);
    let post =
        |url: String| json!({"blobUrl": url, "path": "/echo", "method": "PUT", "headers": {}});

    let resp = handle(
        &relay,
        call("1", &post(format!("{}/missing?sig=x", source.base_url()))),
    )
    .await;
    assert_eq!(
        (resp.status, error_of(&resp).as_str()),
        (502, "blob_download_failed")
    );

    let resp = handle(
        &relay,
        call("2", &post("http://blob.example/x?sig=1".into())),
    )
    .await;
    assert_eq!(
        (resp.status, error_of(&resp).as_str()),
        (400, "invalid_request")
    );
    let resp = handle(&relay, call("3", &post("file:///etc/passwd".into()))).await;
    assert_eq!(resp.status, 400);

    let resp = handle(
        &relay,
        call("4", &post(format!("{}/big?sig=x", source.base_url()))),
    )
    .await;
    assert_eq!(
        (resp.status, error_of(&resp).as_str()),
        (413, "payload_too_large")
    );

    let stranger = blob_source(
        &TestCa::new("other").issue_server(&["127.0.0.1"]),
        HashMap::new(),
    )
    .await;
    let resp = handle(
        &relay,
        call("5", &post(format!("{}/x?sig=x", stranger.base_url()))),
    )
    .await;
    assert_eq!(
        (resp.status, error_of(&resp).as_str()),
        (502, "blob_download_failed")
    );

    assert!(eclypse.requests().is_empty());
}
