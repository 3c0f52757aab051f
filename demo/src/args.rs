//! `tether demo`'s flags, and the addresses they give.

use std::net::SocketAddr;

/// `tether demo` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DemoArgs {
    /// Keep everything running after the walkthrough, until Ctrl-C, and
    /// print commands to try against it.
    #[arg(long)]
    pub keep: bool,
    /// Show tether's own logs at info level, interleaved with the walkthrough.
    #[arg(long)]
    pub verbose: bool,
    /// Only tether's warnings and errors (the default).
    #[arg(long, conflicts_with = "verbose")]
    pub quiet_logs: bool,
    /// Port of the Cloud Relay API (`tether-cloud serve`); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Port of the MQTT broker; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub broker_port: u16,
    /// Port of tether's admin API; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub admin_port: u16,
    /// Port of the simulated controller; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub controller_port: u16,
}

/// `addr` as given, or with port 0 a free loopback port, for parts that
/// need a concrete address before they bind (the embedded broker). Another program could take it in between; on a demo machine
/// that is unlikely and reported clearly when it happens.
pub(crate) async fn free_addr(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    tokio::net::TcpListener::bind(addr).await?.local_addr()
}
