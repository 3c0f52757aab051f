//! The walkthrough: each step does one thing through the real paths and
//! prints what happened; [`Report`] is the summary, with one
//! machine-checkable line for CI.

use serde_json::json;
use tokio::time::Instant;

use super::error::DemoError;
use super::stack::{Stack, DEVICE};
use super::steps::{ms, one_line, settled};

/// The controller point the demo writes: the zone setpoint.
const SETPOINT: &str =
    "/api/rest/v1/protocols/bacnet/local/objects/analog-value/2/properties/present-value";

/// What the walkthrough counted.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// REST calls made through the Cloud Relay API.
    pub relay_calls: u32,
    /// Of those, answered 2xx by the controller.
    pub relay_ok: u32,
    /// The cloud's `setAttribute` reached the MCU and was answered 200.
    pub set_attribute_ok: bool,
    /// Attribute messages tether's outbox accepted.
    pub accepted: u64,
    /// Distinct attribute messages the cloud received.
    pub delivered: u64,
    /// Updates accepted while the link was cut.
    pub kept: u64,
    /// Push failures in tether's outbox (expired, dropped, refused).
    pub failures: u64,
}

impl Report {
    /// Accepted messages the cloud never got.
    pub fn lost(&self) -> u64 {
        self.accepted.saturating_sub(self.delivered)
    }

    /// Whether the demo showed what it promises.
    pub fn passed(&self) -> bool {
        self.relay_calls > 0
            && self.relay_ok == self.relay_calls
            && self.set_attribute_ok
            && self.kept > 0
            && self.lost() == 0
            && self.delivered == self.accepted
            && self.failures == 0
    }

    /// The summary block; its last line is the one CI parses.
    pub fn print(&self) {
        println!("\nSummary");
        println!(
            "  Cloud Relay REST calls   {} made, {} answered 2xx by the controller",
            self.relay_calls, self.relay_ok
        );
        let set = if self.set_attribute_ok {
            "reached the MCU"
        } else {
            "FAILED"
        };
        println!("  cloud setAttribute       {set}");
        println!(
            "  attribute messages       {} accepted, {} delivered, {} lost ({} kept through the outage)",
            self.accepted,
            self.delivered,
            self.lost(),
            self.kept
        );
        println!("  push failures            {}", self.failures);
        println!(
            "summary: relay_calls={} ok={} set_attribute={} attributes_accepted={} delivered={} lost={} outage_kept={} result={}",
            self.relay_calls,
            self.relay_ok,
            if self.set_attribute_ok { "ok" } else { "failed" },
            self.accepted,
            self.delivered,
            self.lost(),
            self.kept,
            if self.passed() { "pass" } else { "fail" },
        );
    }
}

/// Runs every step in order.
///
/// # Errors
/// The first step that could not complete.
pub async fn run(stack: &mut Stack) -> Result<Report, DemoError> {
    let mut report = Report::default();
    println!("{}", parts(stack));
    println!(
        "\n1. Relaying GET /api/rest/v1/info from the Cloud Relay API → broker → tether → controller, and back"
    );
    relay(stack, &mut report, "GET", "/api/rest/v1/info", None).await?;
    println!("\n2. Relaying a write: PUT the zone setpoint to 23.5 °C");
    relay(
        stack,
        &mut report,
        "PUT",
        SETPOINT,
        Some(r#"{"value":23.5}"#),
    )
    .await?;
    if let Some(v) = stack.eclypse.value(2) {
        println!("   the controller's setpoint is now {v} °C");
    }
    super::walk_mcu::updates(stack).await?;
    report.set_attribute_ok = super::walk_mcu::set_attribute(stack).await?;
    report.kept = super::walk_mcu::outage(stack).await?;
    let stats = settled(&stack.admin, &stack.observer).await?;
    report.accepted = stats.accepted;
    report.failures = stats.failures;
    report.delivered = stack.observer.delivered() as u64;
    Ok(report)
}

fn parts(stack: &Stack) -> String {
    format!(
        "  MQTT broker (rumqttd)          mqtt://{broker}\n  link cutter (TCP proxy)        {proxy} → broker\n  ECLYPSE REST API (simulated)   {controller}\n  afLib4 MCU (simulated, pty)    {pty}  profile afBlink Plumo-2D\n  tether                         device {DEVICE}, admin http://{admin}\n  tether-cloud serve             {api}\n  files                          {dir}",
        broker = stack.broker,
        proxy = stack.proxy.addr(),
        controller = stack.eclypse.base_url(),
        pty = stack.mcu.path().display(),
        admin = stack.admin.addr(),
        api = stack.cloud.public_url(),
        dir = stack.dir().display(),
    )
}

/// The Cloud Relay API URL for the demo device.
fn api_url(stack: &Stack) -> String {
    format!(
        "{}/api/v1/devices/{DEVICE}/request",
        stack.cloud.public_url()
    )
}

/// One REST call through `tether-cloud serve`, printed with its answer.
async fn relay(
    stack: &Stack,
    report: &mut Report,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(), DemoError> {
    let m = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| DemoError::Http(e.to_string()))?;
    let mut req = stack
        .http
        .request(m, api_url(stack))
        .header("Remote-Query", path)
        .header("Accept", "application/json");
    let verb = if method == "GET" {
        String::new()
    } else {
        format!(" -X {method}")
    };
    let mut shown = format!("   curl{verb} {} -H 'Remote-Query: {path}'", api_url(stack));
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
        shown.push_str(&format!(" -H 'Content-Type: application/json' -d '{b}'"));
    }
    println!("{shown}");
    let t0 = Instant::now();
    report.relay_calls += 1;
    let resp = req
        .send()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?;
    println!("   ← {status} in {}: {}", ms(t0.elapsed()), one_line(&text));
    if !(200..300).contains(&status) {
        return Err(DemoError::Unexpected(format!(
            "{method} {path} answered {status}"
        )));
    }
    report.relay_ok += 1;
    Ok(())
}

/// With `--keep`: what to try against the running demo.
pub fn print_hints(stack: &Stack) {
    let api = api_url(stack);
    let admin = stack.admin.addr();
    let token = stack.admin.token();
    let setpoint = json!({"value": 21.0});
    println!(
        "\nEverything keeps running. Try, from another terminal (Ctrl-C here stops it all):\n\
         \n  # the controller's REST API through the cloud, the broker and tether\
         \n  curl -s {api} -H 'Remote-Query: /api/rest/v1/info'\
         \n  curl -s {api} -H 'Remote-Query: /api/rest/v1/protocols/bacnet/local/objects'\
         \n  curl -s -X PUT {api} -H 'Remote-Query: {SETPOINT}' -H 'Content-Type: application/json' -d '{setpoint}'\
         \n  # a direct method to the MCU\
         \n  cargo run -p tether-cloud -- invoke --broker mqtt://{broker} --allow-insecure --device {DEVICE} --method setAttribute --payload '{{\"attributeId\":1,\"value\":\"true\"}}'\
         \n  # tether's admin API\
         \n  curl -s http://{admin}/healthz\
         \n  curl -s http://{admin}/metrics\
         \n  curl -s -H 'Authorization: Bearer {token}' http://{admin}/v1/outbox/stats\
         \n  cargo run -p tether -- outbox stats -c {config}\
         \n  cargo run -p tether -- check-config -c {config}",
        broker = stack.broker,
        config = stack.config.display(),
    );
}
