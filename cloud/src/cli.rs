//! The `tether-cloud` subcommands' flags and their dispatch, so
//! `main.rs` only names [`CloudCommand`] and calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::config::{read_secret, read_tokens, BrokerConfig, DeviceAuth, ServeConfig};
use super::error::CloudError;
use super::invoke::{self, exit, RequestArgs};
use super::process;

/// Broker connection flags, shared by every cloud subcommand.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Broker URL: `mqtts://host:port`, or `mqtt://host:port` with
    /// `--allow-insecure`.
    #[arg(long)]
    pub broker: Option<String>,
    /// Allow `mqtt://` (no TLS).
    #[arg(long)]
    pub allow_insecure: bool,
    /// MQTT username.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) for the broker.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// `tether-cloud ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum CloudCommand {
    /// Call a direct method on a device and print the answer. Exit codes:
    /// 0 answered 2xx, 3 other status, 4 not connected, 5 timeout,
    /// 6 broker unreachable, 7 invalid answer, 64 bad arguments.
    Invoke {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Device id.
        #[arg(long)]
        device: String,
        /// Method name.
        #[arg(long)]
        method: String,
        /// JSON payload.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// How long to wait for the answer, e.g. `30s`.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Send a REST request through the device's relay (the Cloud Relay
    /// payload on the `RestApi` method) and print the body; exit codes as
    /// for `invoke`.
    Request {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Device id.
        #[arg(long)]
        device: String,
        /// HTTP method: GET, PUT, POST or DELETE.
        http_method: String,
        /// Path and query on the controller, e.g. `/api/rest/v1/info`.
        path: String,
        /// Request body (POST, PUT).
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Request body from a file.
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Content-Type of the body.
        #[arg(long)]
        content_type: Option<String>,
        /// Accept header.
        #[arg(long)]
        accept: Option<String>,
        /// The relay's direct method.
        #[arg(long, default_value = "RestApi")]
        method_name: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Serve the Cloud Relay HTTP API (and the device upload endpoint)
    /// over the broker.
    Serve {
        /// TOML file; flags override it.
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// URL devices reach this server at (`scheme://host[:port]`).
        #[arg(long)]
        public_url: Option<String>,
        /// Static bearer tokens, one per line.
        #[arg(long)]
        tokens_file: Option<PathBuf>,
        /// No API authentication (local demos only).
        #[arg(long)]
        allow_anonymous: bool,
        /// Blob directory.
        #[arg(long)]
        blob_dir: Option<PathBuf>,
        /// Device upload authentication: `broker` or `none`.
        #[arg(long)]
        device_auth: Option<String>,
    },
}

/// Runs a cloud subcommand; returns the process exit code.
pub fn run(cmd: CloudCommand) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-cloud: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(dispatch(cmd))
}

async fn dispatch(cmd: CloudCommand) -> i32 {
    match cmd {
        CloudCommand::Invoke {
            broker,
            device,
            method,
            payload,
            timeout,
        } => {
            let (broker, timeout) = match (broker_config(&broker, None), duration(&timeout)) {
                (Ok(b), Ok(t)) => (b, t),
                (Err(e), _) | (_, Err(e)) => return usage(&e),
            };
            invoke::invoke(&broker, &device, &method, &payload, timeout).await
        }
        CloudCommand::Request {
            broker,
            device,
            http_method,
            path,
            body,
            body_file,
            content_type,
            accept,
            method_name,
            timeout,
        } => {
            let (broker, timeout) = match (broker_config(&broker, None), duration(&timeout)) {
                (Ok(b), Ok(t)) => (b, t),
                (Err(e), _) | (_, Err(e)) => return usage(&e),
            };
            let body = match (body, body_file) {
                (Some(b), _) => Some(b.into_bytes()),
                (None, Some(f)) => match std::fs::read(&f) {
                    Ok(b) => Some(b),
                    Err(e) => return usage(&CloudError::io("--body-file", f, e)),
                },
                (None, None) => None,
            };
            let args = RequestArgs {
                method_name,
                http_method,
                path,
                body,
                content_type,
                accept,
            };
            invoke::request(&broker, &device, &args, timeout).await
        }
        CloudCommand::Serve { .. } => match serve_config(cmd) {
            Ok(cfg) => serve_until_signal(cfg).await,
            Err(e) => usage(&e),
        },
    }
}

fn usage(e: &CloudError) -> i32 {
    eprintln!("tether-cloud: {e}");
    exit::USAGE
}

fn duration(s: &str) -> Result<Duration, CloudError> {
    humantime::parse_duration(s).map_err(|e| CloudError::config("--timeout", e.to_string()))
}

/// Flags over `base` (the config file's broker, if any).
fn broker_config(
    args: &BrokerArgs,
    base: Option<BrokerConfig>,
) -> Result<BrokerConfig, CloudError> {
    let mut cfg = match (&args.broker, base) {
        (Some(url), Some(mut b)) => {
            b.url.clone_from(url);
            b
        }
        (Some(url), None) => BrokerConfig::new(url.clone()),
        (None, Some(b)) => b,
        (None, None) => return Err(CloudError::config("--broker", "is required")),
    };
    cfg.allow_insecure |= args.allow_insecure;
    if let Some(u) = &args.username {
        cfg.username = Some(u.clone());
    }
    if let Some(p) = &args.password_file {
        cfg.password = Some(read_secret("--password-file", p)?);
    }
    if let Some(ca) = &args.ca_file {
        cfg.ca_file = Some(ca.clone());
    }
    cfg.endpoint()?;
    Ok(cfg)
}

fn serve_config(cmd: CloudCommand) -> Result<ServeConfig, CloudError> {
    let CloudCommand::Serve {
        config,
        broker,
        listen,
        public_url,
        tokens_file,
        allow_anonymous,
        blob_dir,
        device_auth,
    } = cmd
    else {
        return Err(CloudError::config("serve", "not a serve command"));
    };
    let mut cfg = match &config {
        Some(path) => {
            let mut c = ServeConfig::load(path)?;
            c.broker = broker_config(&broker, Some(c.broker))?;
            c
        }
        None => {
            let dir = blob_dir
                .clone()
                .ok_or_else(|| CloudError::config("--blob-dir", "is required without --config"))?;
            let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            ServeConfig::new(listen, broker_config(&broker, None)?, dir)
        }
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = blob_dir {
        cfg.blobs.dir = d;
    }
    if public_url.is_some() {
        cfg.public_url = public_url;
    }
    if let Some(t) = tokens_file {
        cfg.auth.tokens = read_tokens(&t)?;
    }
    cfg.auth.anonymous |= allow_anonymous;
    match device_auth.as_deref() {
        None => {}
        Some("broker") => cfg.device_auth = DeviceAuth::Broker,
        Some("none") => cfg.device_auth = DeviceAuth::None,
        Some(other) => {
            return Err(CloudError::config(
                "--device-auth",
                format!("{other:?} is not broker or none"),
            ))
        }
    }
    Ok(cfg)
}

async fn serve_until_signal(cfg: ServeConfig) -> i32 {
    process::init_logging();
    let stop = CancellationToken::new();
    let handle = match super::serve(cfg, stop.clone()).await {
        Ok(h) => h,
        Err(e) => return usage(&e),
    };
    if let Err(e) = process::stop_signal().await {
        eprintln!("tether-cloud serve: cannot install signal handlers: {e}");
        return 1;
    }
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(20), handle.stopped())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 20 s; stopping anyway");
    }
    0
}
