//! A stand-in for the Azure Device Provisioning Service: an MQTT client on the test broker
//! that answers the DPS device API's requests like DPS would.
//!
//! It subscribes to `$dps/registrations/PUT/#` and `$dps/registrations/GET/#` over the
//! broker's plain listener and answers each request on
//! `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` with what its script says.
//! The device's identity is checked before any request arrives: the broker's password file
//! holds the exact DPS username and SAS token (deterministic under a `ManualClock`), so a
//! wrong key or scope is refused at CONNECT as DPS refuses it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One request the device sent.
#[derive(Debug, Clone)]
pub struct Request {
    /// `register` or `poll`.
    pub kind: &'static str,
    /// Its `$rid`.
    pub rid: String,
    /// The poll's `operationId`.
    pub operation_id: Option<String>,
    /// The body (register: `{"registrationId": ..., "payload": ...}`).
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl Reply {
    /// 202 `assigning` for operation `op`, polled after `retry_after` seconds.
    pub fn assigning(op: &str, retry_after: u64) -> Self {
        Reply {
            status: 202,
            retry_after: Some(retry_after),
            body: json!({"operationId": op, "status": "assigning"}),
        }
    }

    /// 200 `assigned` to `hub` as `device`.
    pub fn assigned(hub: &str, device: &str) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: json!({
                "operationId": "op-1",
                "status": "assigned",
                "registrationState": {
                    "registrationId": device,
                    "assignedHub": hub,
                    "deviceId": device,
                    "status": "assigned",
                    "substatus": "initialAssignment"
                }
            }),
        }
    }

    /// An error status with DPS's error document.
    pub fn error(status: u16, code: u64, message: &str, retry_after: Option<u64>) -> Self {
        Reply {
            status,
            retry_after,
            body: json!({"errorCode": code, "trackingId": "t-1", "message": message}),
        }
    }

    /// 200 with the registration `failed`.
    pub fn failed(code: u64, message: &str) -> Self {
        Reply {
            status: 200,
            retry_after: None,
            body: json!({
                "operationId": "op-1",
                "status": "failed",
                "registrationState": {
                    "status": "failed", "errorCode": code, "errorMessage": message
                }
            }),
        }
    }
}

/// Decides the answer to a request, given every request so far (this one last).
pub type Script = Box<dyn Fn(&[Request]) -> Reply + Send>;

/// The running stand-in; it disconnects when dropped.
pub struct Dps {
    requests: watch::Receiver<Vec<Request>>,
    task: JoinHandle<()>,
}

impl Dps {
    /// Connects to the broker's plain listener on `port` and answers with `script`.
    pub async fn start(port: u16, script: Script) -> Dps {
        let mut opts = MqttOptions::new("dps-stand-in", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        client
            .subscribe("$dps/registrations/PUT/#", QoS::AtLeastOnce)
            .await
            .expect("queue the subscription");
        client
            .subscribe("$dps/registrations/GET/#", QoS::AtLeastOnce)
            .await
            .expect("queue the subscription");
        let mut subacks = 0;
        while subacks < 2 {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subacks += 1,
                Ok(Ok(_)) => {}
                other => panic!("the DPS stand-in could not subscribe: {other:?}"),
            }
        }
        let (tx, requests) = watch::channel(Vec::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                let Event::Incoming(Packet::Publish(p)) = event else {
                    continue;
                };
                let Some(request) = parse(&p.topic, &p.payload) else {
                    continue;
                };
                let rid = request.rid.clone();
                let reply = {
                    let mut seen = log.lock().unwrap();
                    seen.push(request);
                    tx.send_replace(seen.clone());
                    script(&seen)
                };
                let mut topic = format!("$dps/registrations/res/{}/?$rid={rid}", reply.status);
                if let Some(s) = reply.retry_after {
                    topic.push_str(&format!("&retry-after={s}"));
                }
                let _ = client
                    .publish(topic, QoS::AtLeastOnce, false, reply.body.to_string())
                    .await;
            }
        });
        Dps { requests, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.borrow().clone()
    }

    /// Waits until `n` requests arrived (panics after `within`).
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<Request> {
        let mut rx = self.requests.clone();
        let got = tokio::time::timeout(within, rx.wait_for(|r| r.len() >= n))
            .await
            .map(|r| r.map(|r| r.clone()));
        match got {
            Ok(Ok(r)) => r,
            _ => panic!(
                "the DPS stand-in saw {} requests, not {n}: {:?}",
                self.requests.borrow().len(),
                self.requests.borrow()
            ),
        }
    }
}

impl Drop for Dps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(topic: &str, payload: &[u8]) -> Option<Request> {
    let (kind, query) =
        if let Some(q) = topic.strip_prefix("$dps/registrations/PUT/iotdps-register/?") {
            ("register", q)
        } else if let Some(q) =
            topic.strip_prefix("$dps/registrations/GET/iotdps-get-operationstatus/?")
        {
            ("poll", q)
        } else {
            return None;
        };
    let field = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    Some(Request {
        kind,
        rid: field("$rid")?,
        operation_id: field("operationId"),
        body: serde_json::from_slice(payload).unwrap_or(Value::Null),
        at: Instant::now(),
    })
}
