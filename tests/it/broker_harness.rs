//! Self-test of the mosquitto harness in `tether-testkit`: it starts, enforces what its
//! options say, and survives kill/restart, freeze/thaw and reload. Uses plain rumqttc
//! clients only, so it does not depend on tether's own code.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions,
    Publish, QoS, TlsConfiguration, Transport,
};
use tether_testkit::{untrusted_ca_pem, Broker, BrokerOptions};
use tokio::time::timeout;

/// Every wait on the network in these tests; a hang fails fast.
const WAIT: Duration = Duration::from_secs(5);

const IOTHUB_USER: &str =
    "hub.example.net/dev1/?api-version=2021-04-12&DeviceClientType=tether%2F0.1.0";
const SAS_PASSWORD: &str = "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1\
                            &sig=Zm9vYmFy%2B%2F%3D&se=1700000000";

fn install_crypto_provider() {
    // Another test in this binary may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls(ca_pem: String) -> Transport {
    Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca_pem.into_bytes(),
        alpn: None,
        client_auth: None,
    })
}

fn tls_options(broker: &Broker, id: &str, user: &str, pass: &str) -> MqttOptions {
    install_crypto_provider();
    let mut opts = MqttOptions::new(id, "localhost", broker.tls_port());
    opts.set_transport(tls(broker.ca_pem()));
    opts.set_credentials(user, pass);
    opts
}

/// Polls until the CONNACK; returns the first connection error instead, if any.
async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("no CONNACK nor error within the wait")?;
        if let Event::Incoming(Incoming::ConnAck(_)) = event {
            return Ok((client, eventloop));
        }
    }
}

async fn next_publish(eventloop: &mut EventLoop) -> Publish {
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("no PUBLISH within the wait")
            .expect("connection failed while waiting for a PUBLISH");
        if let Event::Incoming(Incoming::Publish(publish)) = event {
            return publish;
        }
    }
}

async fn next_suback(eventloop: &mut EventLoop) {
    loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("no SUBACK within the wait")
            .expect("connection failed while waiting for a SUBACK");
        if let Event::Incoming(Incoming::SubAck(_)) = event {
            return;
        }
    }
}

/// Subscribes to `topic` and publishes to it on the same connection; returns what came back.
async fn round_trip(client: &AsyncClient, eventloop: &mut EventLoop, topic: &str) -> Publish {
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    next_suback(eventloop).await;
    client
        .publish(topic, QoS::AtLeastOnce, false, b"ping".to_vec())
        .await
        .unwrap();
    next_publish(eventloop).await
}

/// Publish/subscribe round trip over TLS with a password, with an IoT Hub–style username
/// (`/`, `?`, `=`, `&`, `%`) and a SAS-token–style password.
#[tokio::test]
async fn tls_round_trip_with_iothub_style_username() {
    let broker = Broker::start(BrokerOptions::new().user(IOTHUB_USER, SAS_PASSWORD));
    let (client, mut eventloop) = connect(tls_options(&broker, "dev1", IOTHUB_USER, SAS_PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("TLS connect failed: {e}\n{}", broker.log()));
    let got = round_trip(&client, &mut eventloop, "tether/test").await;
    assert_eq!(got.topic, "tether/test");
    assert_eq!(&got.payload[..], b"ping");
}

/// Topics starting with `$iothub/` can be subscribed and published (rumqttd cannot).
#[tokio::test]
async fn iothub_dollar_topics_are_routed() {
    let broker = Broker::start(BrokerOptions::new().user("gw", "s3cret"));
    let (client, mut eventloop) = connect(tls_options(&broker, "gw", "gw", "s3cret"))
        .await
        .unwrap();
    client
        .subscribe("$iothub/twin/res/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    next_suback(&mut eventloop).await;
    client
        .publish(
            "$iothub/twin/res/200/?$rid=1",
            QoS::AtLeastOnce,
            false,
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut eventloop).await.topic,
        "$iothub/twin/res/200/?$rid=1"
    );
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let broker = Broker::start(BrokerOptions::new().user("gw", "s3cret"));
    let err = connect(tls_options(&broker, "gw", "gw", "wrong"))
        .await
        .err();
    assert!(
        matches!(
            err,
            Some(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            ))
        ),
        "expected a refusal, got {err:?}"
    );
}

#[tokio::test]
async fn untrusted_server_certificate_is_refused() {
    let broker = Broker::start(BrokerOptions::new().user("gw", "s3cret"));
    let mut opts = tls_options(&broker, "gw", "gw", "s3cret");
    opts.set_transport(tls(untrusted_ca_pem()));
    let err = connect(opts).await.err();
    assert!(matches!(err, Some(ConnectionError::Tls(_))), "got {err:?}");
}

/// Client certificates signed by the test CA log in with their CN as the username; a
/// client without one is refused. Also checks the `127.0.0.1` IP SAN.
#[tokio::test]
async fn client_certificate_login() {
    install_crypto_provider();
    let broker = Broker::start(BrokerOptions::new().tls_client_certs(true));
    let issued = broker.issue_client_cert("dev-x509");
    let mut opts = MqttOptions::new("dev-x509", "127.0.0.1", broker.tls_port());
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: broker.ca_pem().into_bytes(),
        alpn: None,
        client_auth: Some((issued.cert_pem.into_bytes(), issued.key_pem.into_bytes())),
    }));
    let (client, mut eventloop) = connect(opts)
        .await
        .unwrap_or_else(|e| panic!("x509 connect failed: {e}\n{}", broker.log()));
    round_trip(&client, &mut eventloop, "x509/t").await;
    assert!(broker.wait_for_log("u'dev-x509'", WAIT), "{}", broker.log());

    let mut anonymous = MqttOptions::new("anon", "127.0.0.1", broker.tls_port());
    anonymous.set_transport(tls(broker.ca_pem()));
    assert!(connect(anonymous).await.is_err());
}

/// After a SIGKILL the client loses its connection; the restarted broker listens on the
/// same ports and the client reconnects.
#[tokio::test]
async fn kill_and_restart_keep_the_ports() {
    let mut broker = Broker::start(BrokerOptions::new().user("gw", "s3cret"));
    let (tls_port, plain_port) = (broker.tls_port(), broker.plain_port());
    let (_client, mut eventloop) = connect(tls_options(&broker, "gw", "gw", "s3cret"))
        .await
        .unwrap();

    broker.kill();
    let after_kill = timeout(WAIT, eventloop.poll())
        .await
        .expect("no error after kill");
    assert!(after_kill.is_err(), "got {after_kill:?}");

    broker.restart();
    assert_eq!(
        (broker.tls_port(), broker.plain_port()),
        (tls_port, plain_port)
    );
    connect(tls_options(&broker, "gw", "gw", "s3cret"))
        .await
        .unwrap();
    let plain = MqttOptions::new("plain", "127.0.0.1", plain_port);
    connect(plain).await.unwrap();
}

/// With persistence, a QoS 1 message queued for an offline persistent session survives a
/// SIGKILL and restart.
#[tokio::test]
async fn persistence_survives_kill() {
    let mut broker = Broker::start(BrokerOptions::new().persistence(true));
    let port = broker.plain_port();
    let mut sub_opts = MqttOptions::new("durable-sub", "127.0.0.1", port);
    sub_opts.set_clean_session(false);
    let (sub, mut sub_loop) = connect(sub_opts.clone()).await.unwrap();
    sub.subscribe("queue/t", QoS::AtLeastOnce).await.unwrap();
    next_suback(&mut sub_loop).await;
    drop((sub, sub_loop));
    // Otherwise the publish below may still go to the dying connection, unsaved.
    assert!(broker.wait_for_log("durable-sub closed its connection", WAIT));

    let (publisher, mut pub_loop) = connect(MqttOptions::new("pub", "127.0.0.1", port))
        .await
        .unwrap();
    let mark = broker.log_mark();
    publisher
        .publish("queue/t", QoS::AtLeastOnce, false, b"kept".to_vec())
        .await
        .unwrap();
    loop {
        let event = timeout(WAIT, pub_loop.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Incoming::PubAck(_)) = event {
            break;
        }
    }

    broker.wait_saved_since(mark);
    broker.kill();
    broker.restart();
    let (_sub, mut sub_loop) = connect(sub_opts).await.unwrap();
    assert_eq!(&next_publish(&mut sub_loop).await.payload[..], b"kept");
}

/// A frozen broker keeps the connection open but acknowledges nothing until thawed.
#[tokio::test]
async fn freeze_holds_acks_until_thaw() {
    let broker = Broker::start(BrokerOptions::new());
    let (client, mut eventloop) = connect(MqttOptions::new("f", "127.0.0.1", broker.plain_port()))
        .await
        .unwrap();
    broker.freeze();
    client
        .publish("f/t", QoS::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    let held = timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await;
    assert!(held.is_err(), "a frozen broker acknowledged a publish");

    broker.thaw();
    timeout(WAIT, async {
        loop {
            if let Event::Incoming(Incoming::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("no PUBACK after thaw");
}

/// `set_users` + `reload` swaps the password file of a running broker.
#[tokio::test]
async fn set_users_and_reload() {
    let broker = Broker::start(BrokerOptions::new().user("old", "pw1"));
    connect(tls_options(&broker, "a", "old", "pw1"))
        .await
        .unwrap();

    broker.set_users(&[("new", "pw2")]);
    broker.reload();
    assert!(connect(tls_options(&broker, "b", "old", "pw1"))
        .await
        .is_err());
    connect(tls_options(&broker, "c", "new", "pw2"))
        .await
        .unwrap_or_else(|e| panic!("new user refused: {e}\n{}", broker.log()));
}

/// Publish/subscribe over the plain websockets listener, and over the TLS one with a
/// password.
#[tokio::test]
async fn websockets_round_trips() {
    let broker = Broker::start(BrokerOptions::new().user("gw", "s3cret").websockets(true));
    let port = broker.ws_port().expect("websockets listener requested");
    let mut opts = MqttOptions::new("ws", format!("ws://127.0.0.1:{port}/mqtt"), port);
    opts.set_transport(Transport::Ws);
    let (client, mut eventloop) = connect(opts)
        .await
        .unwrap_or_else(|e| panic!("websocket connect failed: {e}\n{}", broker.log()));
    assert_eq!(
        &round_trip(&client, &mut eventloop, "ws/t").await.payload[..],
        b"ping"
    );

    install_crypto_provider();
    let port = broker.wss_port().expect("websockets listener requested");
    let mut opts = MqttOptions::new("wss", format!("wss://localhost:{port}/mqtt"), port);
    opts.set_transport(Transport::wss_with_config(TlsConfiguration::Simple {
        ca: broker.ca_pem().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    opts.set_credentials("gw", "s3cret");
    let (client, mut eventloop) = connect(opts)
        .await
        .unwrap_or_else(|e| panic!("secure websocket connect failed: {e}\n{}", broker.log()));
    assert_eq!(
        &round_trip(&client, &mut eventloop, "wss/t").await.payload[..],
        b"ping"
    );
}

/// Only the password file guards the plain listener when anonymous access is off.
#[tokio::test]
async fn plain_listener_can_require_passwords() {
    let broker = Broker::start(
        BrokerOptions::new()
            .user("gw", "s3cret")
            .plain_anonymous(false),
    );
    let port = broker.plain_port();
    assert!(connect(MqttOptions::new("anon", "127.0.0.1", port))
        .await
        .is_err());
    let mut opts = MqttOptions::new("gw", "127.0.0.1", port);
    opts.set_credentials("gw", "s3cret");
    connect(opts).await.unwrap();
}
