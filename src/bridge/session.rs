//! One open device: the driver's events (values upstream, answers to the
//! cloud, link state) and the cloud's commands, in one loop so the module
//! is never shared.

use std::collections::VecDeque;

use embedded_hal::digital::{InputPin, OutputPin};
use firmware_bridge::driver::{AsyncDriver, NoPin};
use firmware_bridge::message::{reason, state};
use firmware_bridge::table::{owner, Owner};
use firmware_bridge::value::unhex;
use firmware_bridge::{
    Error as ModuleError, Event, LinkDownReason, Module, Outcome, ProtocolError,
};
use tokio::time::Instant;
use tracing::debug;

use super::api::{Command, Origin, Reply, ValueInput};
use super::port::{Port, TokioClock};
use super::recovery::LinkLoss;
use super::runner::{finish, End, Runner, Waiter, BEAT_TICK};
use super::upstream::AttributeChange;

type Driver<I> = AsyncDriver<Port, TokioClock, NoPin, I>;

/// What a command led to.
enum Started {
    /// Answered at once.
    Done(Reply),
    /// Sent to the MCU; the answer comes as an event.
    Sent(firmware_bridge::RequestHandle),
}

impl<P: OutputPin + Send + 'static> Runner<P> {
    /// Runs until the device fails, the link breaks beyond in-session
    /// repair, or shutdown; hands the module back.
    pub(super) async fn session<I: InputPin + Send>(
        &mut self,
        mut driver: Driver<I>,
    ) -> (End, Module) {
        let mut storm = VecDeque::new();
        let end = loop {
            self.beat.beat_expecting(BEAT_TICK * 2);
            let stray = driver.module_mut().stray_bytes();
            self.out.stats.set_stray_bytes(stray);
            let deadline = self.next_deadline();
            // Every branch is cancel-safe: the driver keeps partly written
            // chunks and tokio's serial read loses nothing; mpsc recv too.
            let end = tokio::select! {
                _ = self.shutdown.cancelled() => Some(End::Shutdown),
                ev = driver.poll() => match ev {
                    Ok(ev) => self.on_event(ev, &mut driver, &mut storm).await,
                    Err(e) => Some(End::Lost(LinkLoss::DeviceGone(e.to_string()))),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        let now = driver.now_ms();
                        self.apply(cmd, driver.module_mut(), now, true);
                        None
                    }
                    None => Some(End::Shutdown),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.expire();
                    None
                }
                _ = tokio::time::sleep(BEAT_TICK) => None,
            };
            if let Some(end) = end {
                break end;
            }
        };
        let (_port, _clock, module) = driver.into_parts();
        (end, module)
    }

    async fn on_event<I: InputPin + Send>(
        &mut self,
        ev: Event,
        driver: &mut Driver<I>,
        storm: &mut VecDeque<Instant>,
    ) -> Option<End> {
        match ev {
            Event::LinkUp => {
                storm.clear();
                self.out.stats.set_up();
            }
            Event::LinkDown(why) => {
                let loss = match why {
                    LinkDownReason::RebootRequested => LinkLoss::RebootRequested,
                    LinkDownReason::McuUnresponsive => LinkLoss::McuUnresponsive,
                    // Restarts we or the MCU's reset caused: the boot follows.
                    _ => {
                        self.out.stats.set_down("restarting");
                        return None;
                    }
                };
                self.out.stats.set_down(loss.label());
                if self.reset_mcu(&loss).await {
                    let now = driver.now_ms();
                    driver.module_mut().mcu_reset_done(now);
                }
            }
            Event::McuStuck => {
                self.out.stats.set_down(LinkLoss::McuStuck.label());
                if self.reset_mcu(&LinkLoss::McuStuck).await {
                    let now = driver.now_ms();
                    driver.module_mut().mcu_reset_done(now);
                }
            }
            Event::McuUpdate { attr_id, value, .. }
            | Event::ModuleAttributeSet { attr_id, value } => {
                self.out.stats.count_update();
                self.publish(driver.module_mut(), attr_id, value, true);
            }
            Event::SetResult {
                handle,
                attr_id,
                outcome,
            } => self.answered(driver.module_mut(), handle, attr_id, outcome, true),
            Event::GetResult {
                handle,
                attr_id,
                outcome,
            } => self.answered(driver.module_mut(), handle, attr_id, outcome, false),
            Event::ProtocolError(e) => {
                self.out.stats.count_protocol_error();
                debug!(error = %e, "afLib4 protocol error");
                if matches!(e, ProtocolError::BadSyncFrame(_)) {
                    self.out.stats.count_checksum_error();
                    let now = Instant::now();
                    storm.push_back(now);
                    while storm
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > self.tuning.storm_window)
                    {
                        storm.pop_front();
                    }
                    if storm.len() >= self.tuning.storm_errors {
                        return Some(End::Lost(LinkLoss::ChecksumStorm));
                    }
                }
            }
        }
        None
    }

    /// The MCU answered a SET or GET of ours.
    fn answered(
        &mut self,
        module: &mut Module,
        handle: firmware_bridge::RequestHandle,
        attr_id: u16,
        outcome: Outcome,
        is_set: bool,
    ) {
        let data_type = module.table().def(attr_id).map(|d| d.data_type);
        let data_type = data_type.unwrap_or(firmware_bridge::DataType::Bytes);
        let ok_reason = if is_set {
            reason::SERVICE_SET
        } else {
            reason::GET_RESPONSE
        };
        let reply = match outcome {
            Outcome::Updated(value) => {
                self.out.stats.count_update();
                let r = Reply::value(attr_id, data_type, &value, state::UPDATED, ok_reason);
                // A GET answer is no change; only report its value.
                self.publish(module, attr_id, value, is_set);
                r
            }
            Outcome::Refused {
                state,
                reason,
                value,
            } => {
                self.out.stats.count_update();
                let r = Reply::value(attr_id, data_type, &value, state, reason);
                self.publish(module, attr_id, value, false);
                r
            }
            Outcome::TimedOut => {
                Reply::error(504, Some(attr_id), "timeout", "the MCU did not answer")
            }
            Outcome::Aborted => Reply::error(
                503,
                Some(attr_id),
                "link restarted",
                "the link to the MCU restarted before it answered",
            ),
        };
        // Unknown handles were already answered (504) or belong to nobody.
        if let Some(w) = self.pending.remove(&handle) {
            finish(w, reply);
        }
    }

    /// Reports a value in reported properties and, when `upstream` and the
    /// filter allow, sends it as an attribute message.
    fn publish(&self, module: &Module, attr_id: u16, value: Vec<u8>, upstream: bool) {
        let data_type = module
            .table()
            .def(attr_id)
            .map_or(firmware_bridge::DataType::Bytes, |d| d.data_type);
        self.out.reporter.put(attr_id, data_type.to_display(&value));
        if upstream && self.out.forward.allows(attr_id) {
            self.out.upstream.push(AttributeChange {
                attribute_id: attr_id,
                data: value,
                data_type,
            });
        }
    }

    /// Applies one cloud command; `online` is false while the device is
    /// closed, when only module attributes can be served.
    pub(super) fn apply(&mut self, cmd: Command, module: &mut Module, now: u64, online: bool) {
        let (attr_id, origin, reply, started) = match cmd {
            Command::Set {
                attr_id,
                value,
                origin,
                reply,
            } => {
                let s = self.start_set(module, attr_id, value, origin, now, online);
                (attr_id, origin, reply, s)
            }
            Command::Get { attr_id, reply } => {
                let s = start_get(module, attr_id, now, online);
                (attr_id, Origin::Method, Some(reply), s)
            }
        };
        let waiter = Waiter {
            attr_id,
            origin,
            reply,
            deadline: Instant::now() + self.timeout,
        };
        match started {
            Started::Done(r) => finish(waiter, r),
            Started::Sent(handle) => {
                self.pending.insert(handle, waiter);
            }
        }
    }

    fn start_set(
        &mut self,
        module: &mut Module,
        attr_id: u16,
        value: ValueInput,
        origin: Origin,
        now: u64,
        online: bool,
    ) -> Started {
        let Some(def) = module.table().def(attr_id).cloned() else {
            return Started::Done(unknown(attr_id));
        };
        if !def.operations.write {
            return Started::Done(Reply::error(
                403,
                Some(attr_id),
                "forbidden",
                "the profile does not mark this attribute WRITE",
            ));
        }
        let max = usize::from(def.length);
        let bytes = match value {
            ValueInput::Text(t) => def.data_type.parse(&t, max),
            ValueInput::Hex(h) => unhex(&h),
        };
        let bytes = match bytes {
            Ok(b) if b.len() <= max => b,
            Ok(b) => {
                let detail = format!("{} bytes exceed the declared length {max}", b.len());
                return Started::Done(Reply::error(400, Some(attr_id), "invalid value", &detail));
            }
            Err(e) => {
                return Started::Done(Reply::error(
                    400,
                    Some(attr_id),
                    "invalid value",
                    &e.to_string(),
                ))
            }
        };
        // Desired properties come again on every reconnect; a value the
        // attribute already has needs no SET.
        if origin == Origin::Desired && module.table().value(attr_id) == Some(&bytes[..]) {
            return Started::Done(Reply::value(
                attr_id,
                def.data_type,
                &bytes,
                0,
                reason::SERVICE_SET,
            ));
        }
        if owner(attr_id) == Owner::Mcu {
            if !online {
                return Started::Done(link_down(attr_id));
            }
            return match module.set_attribute(attr_id, bytes, now) {
                Ok(h) => Started::Sent(h),
                Err(e) => Started::Done(refused(attr_id, e)),
            };
        }
        match module.update_module_attribute(attr_id, bytes.clone(), reason::SERVICE_SET, now) {
            Ok(()) => {
                self.publish(module, attr_id, bytes.clone(), true);
                Started::Done(Reply::value(
                    attr_id,
                    def.data_type,
                    &bytes,
                    0,
                    reason::SERVICE_SET,
                ))
            }
            Err(e) => Started::Done(refused(attr_id, e)),
        }
    }
}

/// Module attributes are answered from the table; the MCU's are asked for.
fn start_get(module: &mut Module, attr_id: u16, now: u64, online: bool) -> Started {
    let Some(data_type) = module.table().def(attr_id).map(|d| d.data_type) else {
        return Started::Done(unknown(attr_id));
    };
    if owner(attr_id) == Owner::Mcu {
        if !online {
            return Started::Done(link_down(attr_id));
        }
        return match module.get_attribute(attr_id, now) {
            Ok(h) => Started::Sent(h),
            Err(e) => Started::Done(refused(attr_id, e)),
        };
    }
    let value = module.table().current(attr_id).unwrap_or_default();
    Started::Done(Reply::value(
        attr_id,
        data_type,
        &value,
        0,
        reason::GET_RESPONSE,
    ))
}

fn unknown(attr_id: u16) -> Reply {
    Reply::error(
        404,
        Some(attr_id),
        "unknown attribute",
        "the profile has no such attribute",
    )
}

fn link_down(attr_id: u16) -> Reply {
    Reply::error(
        503,
        Some(attr_id),
        "link down",
        "the serial device is not open",
    )
}

fn refused(attr_id: u16, e: ModuleError) -> Reply {
    let status = match e {
        ModuleError::Busy(_) => 409,
        ModuleError::ValueTooLong { .. } => 400,
        ModuleError::QueueFull => 503,
        ModuleError::NotMcuAttribute(_) | ModuleError::NotModuleAttribute(_) => 403,
    };
    Reply::error(status, Some(attr_id), "refused", &e.to_string())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
