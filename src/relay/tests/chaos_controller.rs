//! The controller misbehaving at the TCP level: accepting and never
//! answering, answering slower than the request timeout, resetting the
//! connection, answering garbage or half a response. Every relayed call
//! still gets an error answer within the request timeout (plus slack), and
//! no call is left running afterwards (no task leak).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[derive(Debug, Clone, Copy)]
enum Misbehave {
    Hang,
    Slow,
    Reset,
    Garbage,
    HalfResponse,
}

/// A controller that reads a request and then misbehaves as told.
async fn controller(how: Misbehave) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match how {
                    Misbehave::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    Misbehave::Slow => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                            .await;
                    }
                    Misbehave::Reset => {
                        let _ = sock.set_zero_linger();
                    }
                    Misbehave::Garbage => {
                        let _ = sock.write_all(b"\x00\xffnot http at all\r\n\r\n").await;
                    }
                    Misbehave::HalfResponse => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"a\":")
                            .await;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_misbehaving_controller_gets_every_call_a_timely_error() {
    let cfg = relay_config();
    let limit = cfg.request_timeout + Duration::from_secs(1);
    for how in [
        Misbehave::Hang,
        Misbehave::Slow,
        Misbehave::Reset,
        Misbehave::Garbage,
        Misbehave::HalfResponse,
    ] {
        let url = controller(how).await;
        let relay = std::sync::Arc::new(
            Relay::new(&cfg, &controller_config(&url), Uploader::Disabled).unwrap(),
        );
        // More calls than slots plus queue: some are refused at once, the
        // rest time out; all are answered.
        let calls: Vec<_> = (0..24)
            .map(|i| {
                let relay = relay.clone();
                let c = call(
                    &format!("{how:?}-{i}"),
                    &json!({"path": "/api/x", "method": "GET"}),
                );
                tokio::spawn(async move {
                    let at = Instant::now();
                    let resp = tokio::time::timeout(Duration::from_secs(30), relay.handle(c)).await;
                    (resp, at.elapsed())
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for c in calls {
            let (resp, took) = c.await.unwrap();
            let resp = resp.unwrap_or_else(|_| panic!("{how:?}: a call was never answered"));
            assert!(took <= limit * 2, "{how:?}: answered after {took:?}");
            assert!(resp.status >= 500, "{how:?}: status {}", resp.status);
            decode(&resp);
            statuses.push(resp.status);
        }
        statuses.sort_unstable();
        statuses.dedup();
        eprintln!("controller {how:?}: statuses {statuses:?}");
        // Nothing still holds the relay: every slot is free again.
        assert_eq!(
            std::sync::Arc::strong_count(&relay),
            1,
            "{how:?}: a call task kept the relay"
        );
    }
}
