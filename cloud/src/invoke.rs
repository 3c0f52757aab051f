//! `tether-cloud invoke` and `tether-cloud request`: one direct-method
//! call from the command line, like `az iot hub invoke-device-method` for
//! any broker. The answer goes to stdout; the exit code says how it went
//! (see [`exit`]).

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::broker::{Broker, CallError};
use super::config::BrokerConfig;
use super::translate;
use tether_protocol::relay::{
    Answer, AnswerBody, ForwardHeaders, HttpMethod, RequestBody, RestRequest,
};
use tether_protocol::topics::cloud::is_topic_level;

/// Exit codes of `invoke` and `request`.
pub mod exit {
    /// The device answered with a 2xx status.
    pub const OK: i32 = 0;
    /// The device answered with another status.
    pub const DEVICE_STATUS: i32 = 3;
    /// The device is not connected.
    pub const NOT_CONNECTED: i32 = 4;
    /// No answer within the timeout.
    pub const TIMEOUT: i32 = 5;
    /// The broker is unreachable or refused us.
    pub const BROKER: i32 = 6;
    /// The answer is not understood, or a payload is too large.
    pub const INVALID: i32 = 7;
    /// Bad arguments (same as `check-config`'s invalid configuration).
    pub const USAGE: i32 = 64;
}

/// What `request` sends.
#[derive(Debug, Clone)]
pub struct RequestArgs {
    /// The direct method (`RestApi`).
    pub method_name: String,
    /// HTTP method.
    pub http_method: String,
    /// Path and query on the controller.
    pub path: String,
    /// Request body (POST/PUT), sent inline.
    pub body: Option<Vec<u8>>,
    /// Its Content-Type.
    pub content_type: Option<String>,
    /// `Accept`.
    pub accept: Option<String>,
}

/// Calls `method` with a JSON `payload` and prints
/// `{"status":…,"payload":…}`.
pub async fn invoke(
    broker: &BrokerConfig,
    device: &str,
    method: &str,
    payload: &str,
    timeout: Duration,
) -> i32 {
    if serde_json::from_str::<serde_json::Value>(payload).is_err() {
        eprintln!("tether-cloud invoke: --payload must be JSON");
        return exit::USAGE;
    }
    if !is_topic_level(method) {
        eprintln!("tether-cloud invoke: --method must be one topic level");
        return exit::USAGE;
    }
    let answer = match call(broker, device, method, payload.as_bytes().to_vec(), timeout).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let payload = serde_json::from_slice(&answer.payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&answer.payload).into_owned())
    });
    let out = serde_json::json!({"status": answer.status, "payload": payload});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    if (200..300).contains(&answer.status) {
        exit::OK
    } else {
        exit::DEVICE_STATUS
    }
}

/// Sends a REST request in the Cloud Relay shape and prints the answer's
/// body; its HTTP status goes to stderr.
pub async fn request(
    broker: &BrokerConfig,
    device: &str,
    args: &RequestArgs,
    timeout: Duration,
) -> i32 {
    let Ok(http_method) = HttpMethod::parse(&args.http_method) else {
        eprintln!("tether-cloud request: the method must be GET, PUT, POST or DELETE");
        return exit::USAGE;
    };
    if !args.path.starts_with('/') {
        eprintln!("tether-cloud request: the path must start with /");
        return exit::USAGE;
    }
    let with_body = http_method.has_body();
    let body = args.body.as_deref().filter(|_| with_body);
    let req = RestRequest {
        method: http_method,
        path: args.path.clone(),
        headers: ForwardHeaders {
            accept: args.accept.clone(),
            content_type: args.content_type.clone(),
            content_disposition: None,
        },
        body: match body {
            Some(b) => RequestBody::Inline(translate::decode_text(b, args.content_type.as_deref())),
            None if with_body => RequestBody::Inline(String::new()),
            None => RequestBody::None,
        },
    };
    let payload = req.encode(body.map(|b| b.len() as u64));
    let answer = match call(broker, device, &args.method_name, payload, timeout).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    match Answer::parse(&answer.payload) {
        Ok(Answer {
            status,
            body: AnswerBody::Inline(body),
            ..
        }) => {
            eprintln!("HTTP {status}");
            let mut out = std::io::stdout();
            let _ = out.write_all(body.as_bytes()).and_then(|()| out.flush());
            if (200..300).contains(&status) {
                exit::OK
            } else {
                exit::DEVICE_STATUS
            }
        }
        Ok(Answer {
            body: AnswerBody::Blob(name),
            ..
        }) => {
            // Without `serve`, there is no blob store to read it from.
            eprintln!("HTTP 200");
            eprintln!(
                "the body was uploaded as blob {name:?}; read it through `tether-cloud serve`"
            );
            exit::OK
        }
        Err(why) => {
            eprintln!("tether-cloud request: invalid answer: {why}");
            exit::INVALID
        }
    }
}

async fn call(
    broker: &BrokerConfig,
    device: &str,
    method: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<super::broker::Answer, i32> {
    if !is_topic_level(device) {
        eprintln!("tether-cloud: --device {device:?} cannot be a topic level");
        return Err(exit::USAGE);
    }
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let client = Broker::start(broker, 1, stop).map_err(|e| {
        eprintln!("tether-cloud: {e}");
        exit::USAGE
    })?;
    client
        .call(device, method, payload, timeout)
        .await
        .map_err(|e| {
            eprintln!("tether-cloud: {e}");
            match e {
                CallError::NotConnected(_) => exit::NOT_CONNECTED,
                CallError::Timeout(_) => exit::TIMEOUT,
                CallError::Unavailable(_) | CallError::Busy => exit::BROKER,
                CallError::TooLarge(_) => exit::INVALID,
            }
        })
}
