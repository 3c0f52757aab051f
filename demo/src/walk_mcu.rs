//! The walkthrough's MCU steps: attribute updates upstream, a cloud
//! `setAttribute` down to the MCU, and an outage during which updates are
//! kept and after which they are delivered.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::error::DemoError;
use super::mcu::McuEvent;
use super::stack::{Stack, DEVICE};
use super::steps::{diagnosis, ms, one_line, settled, WAIT};

/// One MCU change and how the cloud sees it.
struct Change {
    attr_id: u16,
    name: &'static str,
    /// `true` for attribute 1 (BOOLEAN), else a SINT16 module attribute.
    value: i16,
}

impl Change {
    const fn blink(on: bool) -> Self {
        Self {
            attr_id: 1,
            name: "Blink",
            value: on as i16,
        }
    }

    const fn led(value: i16) -> Self {
        Self {
            attr_id: 1024,
            name: "LED",
            value,
        }
    }

    /// `attributeDataConverted` as tether sends it.
    fn shown(&self) -> String {
        match self.attr_id {
            1 => (self.value != 0).to_string(),
            _ => self.value.to_string(),
        }
    }

    /// The MCU application makes the change (an UPDATE of its own
    /// attribute, or a SET of a module attribute).
    fn apply(&self, stack: &Stack) {
        match self.attr_id {
            1 => stack.mcu.update(1, &[u8::from(self.value != 0)]),
            id => stack.mcu.set_module(id, &self.value.to_le_bytes()),
        }
        println!(
            "   MCU   → attribute {} ({}) = {}",
            self.attr_id,
            self.name,
            self.shown()
        );
    }
}

/// Step 3: the MCU reports changes; the cloud receives them.
pub(crate) async fn updates(stack: &mut Stack) -> Result<(), DemoError> {
    println!("\n3. The MCU reports attribute changes over the pty; tether sends them upstream");
    let changes = [Change::blink(true), Change::led(1)];
    let t0 = Instant::now();
    for c in &changes {
        c.apply(stack);
    }
    arrivals(stack, &changes, t0).await
}

/// Step 4: `setAttribute` as a direct method; returns whether the MCU
/// applied it and the cloud got 200.
pub(crate) async fn set_attribute(stack: &mut Stack) -> Result<bool, DemoError> {
    println!("\n4. The cloud calls setAttribute on the device (a direct method over MQTT)");
    let payload = json!({"attributeId": 1, "value": "false"}).to_string();
    println!("   cloud → devices/{DEVICE}/methods/POST/setAttribute {payload}");
    let t0 = Instant::now();
    let answer = stack
        .caller
        .call(DEVICE, "setAttribute", payload.into_bytes(), WAIT)
        .await
        .map_err(|e| DemoError::Cloud(format!("setAttribute: {e}")))?;
    let body = String::from_utf8_lossy(&answer.payload);
    println!(
        "   cloud ← {} in {}: {}",
        answer.status,
        ms(t0.elapsed()),
        one_line(&body)
    );
    let seen = stack
        .mcu
        .wait(Duration::from_secs(2), |e| {
            matches!(e, McuEvent::Set { attr_id: 1, .. })
        })
        .await;
    let applied = stack.mcu.value(1) == Some(vec![0]);
    match (&seen, applied) {
        (Some(_), true) => println!("   MCU   ← SET attribute 1 = false, applied"),
        _ => println!("   MCU   did not receive the SET"),
    }
    Ok(answer.status == 200 && seen.is_some() && applied)
}

/// Steps 5 and 6: cut the link, make changes, restore it; returns how
/// many updates tether kept through the outage.
pub(crate) async fn outage(stack: &mut Stack) -> Result<u64, DemoError> {
    // Start from a quiet link, so what arrives later is the outage's.
    settled(&stack.admin, &stack.observer).await?;
    stack.observer.drain();
    let before = stack.admin.outbox_stats().await?.accepted;
    let delivered_before = stack.observer.delivered();

    println!("\n5. Outage: the link between tether and the broker is cut (the TCP proxy drops it)");
    let t0 = Instant::now();
    stack.proxy.unplug();
    let state = wait_hub(stack, |s| s != "connected", "tether to notice the outage").await?;
    println!("   tether noticed in {}: hub {state}", ms(t0.elapsed()));
    let changes = [Change::blink(true), Change::led(2), Change::blink(false)];
    for c in &changes {
        c.apply(stack);
    }
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let stats = stack.admin.outbox_stats().await?;
        if stats.accepted >= before + changes.len() as u64 {
            break stats;
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout(
                "the outbox to accept the outage's updates",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kept = stats.accepted - before;
    let waiting: u64 = stats.sinks.iter().map(|s| s.depth).sum();
    let meanwhile = stack.observer.delivered() - delivered_before;
    println!(
        "   tether kept them: its outbox accepted {kept}, {waiting} wait for the hub; the cloud received {meanwhile}"
    );
    // Let a reconnect attempt or two fail, as they would in the field.
    tokio::time::sleep(Duration::from_millis(800)).await;

    println!("\n6. The link is back");
    let t1 = Instant::now();
    stack
        .proxy
        .replug()
        .await
        .map_err(|e| DemoError::Unexpected(format!("cannot restore the link: {e}")))?;
    wait_hub(stack, |s| s == "connected", "tether to reconnect").await?;
    println!(
        "   tether reconnected in {} (backoff with jitter)",
        ms(t1.elapsed())
    );
    arrivals(stack, &changes, t1).await?;
    Ok(kept)
}

/// Polls tether's hub state until `pred` holds.
async fn wait_hub(
    stack: &Stack,
    pred: impl Fn(&str) -> bool,
    what: &'static str,
) -> Result<String, DemoError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = stack.admin.hub_state().await?;
        if pred(&state) {
            return Ok(state);
        }
        if Instant::now() > deadline {
            return Err(DemoError::Timeout(what));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for each change to arrive upstream, in any order, printing it.
async fn arrivals(stack: &mut Stack, changes: &[Change], t0: Instant) -> Result<(), DemoError> {
    let mut pending: Vec<(u64, String)> = changes
        .iter()
        .map(|c| (u64::from(c.attr_id), c.shown()))
        .collect();
    let deadline = Instant::now() + WAIT;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(a) = stack.observer.next_arrival(left).await else {
            return Err(DemoError::Unexpected(format!(
                "no attribute message upstream within {WAIT:?}; {}",
                diagnosis(&stack.admin, &stack.observer).await
            )));
        };
        let Some(i) = pending
            .iter()
            .position(|(id, v)| *id == a.attribute_id && *v == a.value)
        else {
            continue;
        };
        pending.remove(i);
        let topic = a.topic.split('%').next().unwrap_or_default();
        println!(
            "   cloud ← attribute {} = {} after {} on {topic}…",
            a.attribute_id,
            a.value,
            ms(t0.elapsed())
        );
    }
    Ok(())
}
