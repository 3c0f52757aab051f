//! Admission, de-duplication, schedules, metrics and the audit line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tether_testkit::http::Eclypse;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::ScheduleConfig;
use crate::relay::schedule::ScheduleResult;
use crate::relay::spawn_schedules;

const WAIT: Duration = Duration::from_secs(10);

async fn handle(relay: &Relay, call: MethodCall) -> MethodResponse {
    tokio::time::timeout(WAIT, relay.handle(call))
        .await
        .expect("answered in time")
}

fn get_on(connection: u64, rid: &str, path: &str) -> MethodCall {
    call_on(
        connection,
        rid,
        json!({"path": path, "method": "GET"})
            .to_string()
            .as_bytes(),
    )
}

async fn limited(max_concurrent: usize, max_queued: usize) -> (Eclypse, Arc<Relay>) {
    let mut cfg = relay_config();
    cfg.max_concurrent = max_concurrent;
    cfg.max_queued = max_queued;
    let (eclypse, relay) = plain_relay(cfg).await;
    (eclypse, Arc::new(relay))
}

fn spawn_call(relay: &Arc<Relay>, call: MethodCall) -> tokio::task::JoinHandle<MethodResponse> {
    let relay = relay.clone();
    tokio::spawn(async move { relay.handle(call).await })
}

/// With every slot taken and no queue, a call is answered 503 at once (not
/// left for the hub to time out), counted, and not remembered: the same
/// `$rid` is served once the relay has room.
#[tokio::test]
async fn a_full_relay_answers_503_at_once() {
    let (eclypse, relay) = limited(1, 0).await;
    let first = spawn_call(&relay, get_on(1, "1", "/hold"));
    assert!(
        eclypse.wait_for_requests(1).await,
        "the controller got no request"
    );

    let started = tokio::time::Instant::now();
    let busy = handle(&relay, get_on(1, "2", "/api/rest/v1/info")).await;
    assert_eq!(busy.status, 503);
    assert_eq!(error_of(&busy), "busy");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(relay.metrics().busy_total(), 1);

    eclypse.release();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status, decode(&first)["body"].as_str()),
        (200, Some("released"))
    );
    let again = handle(&relay, get_on(1, "2", "/api/rest/v1/info")).await;
    assert_eq!(again.status, 200, "busy answers are not cached");
}

/// A call that finds the slots taken waits in the bounded queue and is
/// served when a slot frees; one more than the queue holds is refused.
#[tokio::test]
async fn queued_calls_wait_for_a_slot_and_the_queue_is_bounded() {
    let (eclypse, relay) = limited(1, 1).await;
    let first = spawn_call(&relay, get_on(1, "1", "/hold"));
    assert!(
        eclypse.wait_for_requests(1).await,
        "the controller got no request"
    );
    let queued = spawn_call(&relay, get_on(1, "2", "/api/rest/v1/info"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = handle(&relay, get_on(1, "3", "/api/rest/v1/info")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(eclypse.requests().len(), 1, "the queued call waits");

    eclypse.release();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(queued.await.unwrap().status, 200);
    assert_eq!(eclypse.requests().len(), 2);
}

/// A repeated `$rid` on the same connection gets the first answer again
/// without a second execution; the same `$rid` on another connection (the
/// counters restart per connection) is a new call.
#[tokio::test]
async fn repeated_rids_are_deduplicated_per_connection() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/echo", "method": "POST", "body": "once", "headers": {"content-Type": "text/plain"}});
    let a = handle(&relay, call_on(1, "7", payload.to_string().as_bytes())).await;
    let b = handle(&relay, call_on(1, "7", payload.to_string().as_bytes())).await;
    assert_eq!(a, b);
    assert_eq!(eclypse.requests().len(), 1);
    assert_eq!(relay.metrics().deduplicated_total(), 1);

    let c = handle(&relay, call_on(2, "7", payload.to_string().as_bytes())).await;
    assert_eq!(c.status, 200);
    assert_eq!(eclypse.requests().len(), 2);
    let d = handle(&relay, call_on(1, "8", payload.to_string().as_bytes())).await;
    assert_eq!(d.status, 200);
    assert_eq!(eclypse.requests().len(), 3);
}

/// A duplicate that arrives while the first delivery is still running
/// waits for that answer instead of executing again.
#[tokio::test]
async fn a_duplicate_in_flight_shares_the_first_answer() {
    let (eclypse, relay) = limited(4, 4).await;
    let first = spawn_call(&relay, get_on(1, "9", "/hold"));
    assert!(
        eclypse.wait_for_requests(1).await,
        "the controller got no request"
    );
    let second = spawn_call(&relay, get_on(1, "9", "/hold"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    eclypse.release();
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(a.status, 200);
    assert_eq!(a, b);
    assert_eq!(eclypse.requests().len(), 1);
}

fn schedule(
    name: &str,
    every: Duration,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> ScheduleConfig {
    ScheduleConfig {
        name: name.into(),
        every,
        method: method.into(),
        path: path.into(),
        body: body.map(str::to_string),
    }
}

/// Scheduled calls run on their period against the controller and their
/// answers come out with the schedule's name and time; shutdown stops them.
#[tokio::test]
async fn schedules_produce_results_on_their_period() {
    let (eclypse, relay) = plain_relay(relay_config()).await;
    let relay = Arc::new(relay.with_clock(Arc::new(ManualClock::at_unix(NOW_UNIX))));
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let schedules = [
        schedule(
            "info",
            Duration::from_millis(100),
            "GET",
            "/api/rest/v1/info",
            None,
        ),
        schedule(
            "push",
            Duration::from_millis(150),
            "POST",
            "/echo/trend",
            Some(r#"{"a":1}"#),
        ),
    ];
    let task = spawn_schedules(relay.clone(), &schedules, tx, shutdown.clone());
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|r: &&ScheduleResult| r.name == "push")
        .count()
        < 2
    {
        let r = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a result in time")
            .expect("open");
        seen.push(r);
    }
    let info = seen.iter().find(|r| r.name == "info").unwrap();
    assert_eq!(info.at_unix_ms, NOW_UNIX * 1000);
    assert_eq!(
        info.response,
        json!({"status": 200, "headers": {"Content-Type": "application/json;charset=UTF-8"}, "body": "{\"apiRevision\":\"8.0\"}"})
    );
    let push = seen.iter().find(|r| r.name == "push").unwrap();
    assert_eq!(push.response["body"], r#"{"a":1}"#);
    assert_eq!(push.to_message()["schedule"], "push");
    let posted = eclypse
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(posted.header("content-type"), Some("application/json"));
    assert_eq!(
        posted.header("authorization"),
        Some(eclypse_basic().as_str())
    );

    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

/// With paused time: the first result comes one period after start, then
/// one per period; a schedule with a refused path still reports its answer.
#[tokio::test(start_paused = true)]
async fn schedules_follow_their_period_exactly() {
    let relay = Relay::new(
        &relay_config(),
        &controller_config("http://127.0.0.1:9"),
        Uploader::Disabled,
    )
    .unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let every = Duration::from_secs(300);
    let task = spawn_schedules(
        Arc::new(relay),
        &[schedule("bad", every, "GET", "/../secret", None)],
        tx,
        shutdown.clone(),
    );
    let start = tokio::time::Instant::now();
    for n in 1..=3u32 {
        let r = rx.recv().await.expect("a result");
        assert_eq!(start.elapsed(), every * n);
        assert_eq!(r.name, "bad");
        assert_eq!(r.response["status"], 400);
    }
    shutdown.cancel();
    task.await.unwrap();
}

/// The metrics text names statuses, the latency histogram, busy and bytes.
#[tokio::test]
async fn metrics_count_calls_by_status_with_latency_and_bytes() {
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    handle(&relay, get_on(1, "1", "/api/rest/v1/info")).await;
    handle(&relay, get_on(1, "2", "/nope")).await;
    handle(
        &relay,
        call_on(
            1,
            "3",
            json!({"path": "/echo", "method": "POST", "body": "12345"})
                .to_string()
                .as_bytes(),
        ),
    )
    .await;
    let mut out = String::new();
    relay.metrics().render_prometheus(&mut out);
    for line in [
        "tether_relay_requests_total{status=\"200\"} 2\n",
        "tether_relay_requests_total{status=\"404\"} 1\n",
        "tether_relay_request_duration_seconds_count 3\n",
        "tether_relay_request_duration_seconds_bucket{le=\"+Inf\"} 3\n",
        "tether_relay_busy_total 0\n",
        "tether_relay_request_bytes_total 5\n",
        "tether_relay_response_bytes_total 35\n",
        "# TYPE tether_relay_request_duration_seconds histogram\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One audit line per call with rid, method, path, status, duration and
/// bytes, but no secret-looking query values and no bodies.
#[tokio::test]
async fn each_call_writes_one_audit_line_without_secrets_or_bodies() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // While a single dispatcher exists, tracing-core computes a callsite's
    // interest from the registering thread's default, so another test
    // thread could cache "never" for the audit callsite. A second live
    // dispatcher turns that shortcut off; the rebuild fixes earlier caches.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();
    let (_eclypse, relay) = plain_relay(relay_config()).await;
    let payload = json!({"path": "/echo/x?id=4&password=hunter2", "method": "POST", "body": "body-secret-text"});
    handle(&relay, call_on(3, "42", payload.to_string().as_bytes())).await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("relayed call"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    for part in [
        "rid=42",
        "connection=3",
        "method=\"POST\"",
        "path=\"/echo/x?id=4&password=***\"",
        "status=200",
        "duration_ms=",
        "sent_bytes=16",
        "received_bytes=16",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("body-secret-text"), "{text}");
}
