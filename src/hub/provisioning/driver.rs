//! One registration over rumqttc: connects to DPS, feeds the
//! [`Machine`] what arrives and does what it decides, until it is done,
//! fails, or shutdown. Connection options are built like the hub's (same
//! TLS roots and `hub.ca_file`, same proxy, the `[hub]` client certificate
//! for x509), with DPS's own identity.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tether_protocol::dps;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{HubConfig, ProvisioningAuth, ProvisioningConfig, Transport as Wire};
use crate::hub::alarm::Alarm;
use crate::hub::failure::classify;
use crate::hub::options::{parse_proxy, tls_transport, OptionsError};
use crate::hub::Failure;

use super::error::DpsError;
use super::machine::{Action, Machine, Settings};
use super::Assignment;

/// DPS answers are small; room for a custom payload echoed back.
const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Requests queued towards the event loop (a registration sends a few).
const REQUESTS: usize = 8;
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long the DISCONNECT after the outcome may take.
const GOODBYE: Duration = Duration::from_secs(2);

/// `host:port` of DPS, for messages.
pub(super) fn target(hub: &HubConfig, p: &ProvisioningConfig) -> String {
    format!("{}:{}", p.global_endpoint, port(hub, p))
}

fn port(hub: &HubConfig, p: &ProvisioningConfig) -> u16 {
    let ws = hub.transport == Wire::WebSocket;
    p.port.unwrap_or(if ws { 443 } else { 8883 })
}

/// Connection options for DPS, with the credentials valid at `now_unix`.
///
/// # Errors
/// When TLS files cannot be loaded or the proxy setting is malformed.
pub(super) fn options(
    hub: &HubConfig,
    p: &ProvisioningConfig,
    now_unix: u64,
) -> Result<MqttOptions, OptionsError> {
    let port = port(hub, p);
    let ws = hub.transport == Wire::WebSocket;
    let host = &p.global_endpoint;
    let mut opts = if ws {
        // The SDKs use the hub's WebSocket path for DPS too.
        let url = format!("wss://{host}:{port}/$iothub/websocket");
        MqttOptions::new(&p.registration_id, url, port)
    } else {
        MqttOptions::new(&p.registration_id, host.clone(), port)
    };
    // DPS keeps no sessions; asking for one changes nothing.
    opts.set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    let cert = match &p.auth {
        ProvisioningAuth::X509(c) => Some(c),
        ProvisioningAuth::Key { .. } => None,
    };
    opts.set_transport(tls_transport(hub.ca_file.as_deref(), cert, ws)?);
    if let Some(proxy) = &hub.proxy {
        opts.set_proxy(parse_proxy(proxy)?);
    }
    let username = dps::username(&p.id_scope, &p.registration_id);
    let password = match &p.auth {
        ProvisioningAuth::Key { key, .. } => {
            let se = now_unix + hub.sas_ttl.as_secs().max(1);
            dps::sas_token(&key.0, &p.id_scope, &p.registration_id, se)
                .expose()
                .to_owned()
        }
        ProvisioningAuth::X509(_) => String::new(),
    };
    opts.set_credentials(username, password);
    Ok(opts)
}

/// Runs one registration with `opts`; `on_retry` hears of requests DPS
/// refused for now (throttling). `None` when shutdown came first.
pub(super) async fn register(
    opts: MqttOptions,
    settings: Settings,
    target: &str,
    connect_timeout: Duration,
    shutdown: &CancellationToken,
    mut on_retry: impl FnMut(&DpsError),
) -> Option<Result<Assignment, DpsError>> {
    let (client, mut eventloop) = AsyncClient::new(opts, REQUESTS);
    let mut net = eventloop.network_options();
    net.set_connection_timeout(connect_timeout.as_secs().max(1));
    eventloop.set_network_options(net);
    let origin = Instant::now();
    let mut machine = Machine::new(settings);
    let mut deadline = None;
    let mut alarm = Alarm::new();
    let outcome = loop {
        // The poll future lives across timer ticks: cancelling it could cut
        // a packet halfway (see the hub session's `next_event`).
        let next = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                alarm.set(deadline);
                tokio::select! {
                    biased;
                    ev = &mut poll => break Next::Event(ev),
                    () = shutdown.cancelled() => break Next::Stop,
                    () = alarm.fired() => {
                        deadline = None;
                        machine.timeout(origin.elapsed());
                        if let Some(end) = drain(&mut machine, &client, origin, &mut deadline, &mut on_retry) {
                            break Next::End(end);
                        }
                    }
                }
            }
        };
        let now = origin.elapsed();
        match next {
            Next::Stop => return None,
            Next::End(end) => break end,
            Next::Event(Ok(Event::Incoming(Packet::ConnAck(_)))) => machine.connected(now),
            Next::Event(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, SubscribeReasonCode::Failure));
                machine.subscribed(now, granted);
            }
            Next::Event(Ok(Event::Incoming(Packet::Publish(p)))) => {
                machine.message(now, &p.topic, &p.payload);
            }
            Next::Event(Ok(_)) => {}
            Next::Event(Err(e)) => break Err(connection_error(&e, target)),
        }
        if let Some(end) = drain(&mut machine, &client, origin, &mut deadline, &mut on_retry) {
            break end;
        }
    };
    Some(goodbye(client, eventloop, outcome).await)
}

/// What ended one wait.
enum Next {
    Event(Result<Event, ConnectionError>),
    Stop,
    End(Result<Assignment, DpsError>),
}

/// Does what the machine decided; returns the outcome once there is one.
fn drain(
    machine: &mut Machine,
    client: &AsyncClient,
    origin: Instant,
    deadline: &mut Option<Instant>,
    on_retry: &mut impl FnMut(&DpsError),
) -> Option<Result<Assignment, DpsError>> {
    while let Some(action) = machine.poll_action() {
        let queued = match action {
            Action::Subscribe(filter) => client.try_subscribe(filter, QoS::AtLeastOnce),
            Action::Publish { topic, payload } => {
                client.try_publish(topic, QoS::AtLeastOnce, false, payload)
            }
            Action::WaitUntil(at) => {
                *deadline = Some(origin + at);
                Ok(())
            }
            Action::Retrying(e) => {
                on_retry(&e);
                Ok(())
            }
            Action::Done(a) => return Some(Ok(a)),
            Action::Failed(e) => return Some(Err(e)),
        };
        if let Err(e) = queued {
            return Some(Err(DpsError::Connection {
                failure: Failure::Network,
                message: format!("could not queue a request to DPS ({e}); trying again later"),
            }));
        }
    }
    None
}

/// Says goodbye to DPS (bounded), then hands back `outcome`.
async fn goodbye(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    outcome: Result<Assignment, DpsError>,
) -> Result<Assignment, DpsError> {
    if eventloop.network.is_some() && client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(GOODBYE, async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    outcome
}

/// A refused CONNECT names DPS's settings, not the hub's.
fn connection_error(e: &ConnectionError, target: &str) -> DpsError {
    let what = format!("DPS at {target}");
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => DpsError::Connection {
            failure: Failure::Auth,
            message: format!(
                "{what} refused the credentials ({code:?}): check hub.provisioning.id_scope, \
                 registration_id and the key or certificate, and that the enrollment exists and \
                 is enabled"
            ),
        },
        other => {
            let (failure, message) = classify(other, &what);
            DpsError::Connection { failure, message }
        }
    }
}
