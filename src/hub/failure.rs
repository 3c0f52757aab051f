//! Turns rumqttc's connection errors into a class (for backoff) and a
//! sentence an operator can act on: bad credentials and TLS problems are
//! not network trouble and must not read like it.

use std::io;

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

use super::machine::Failure;

/// Classifies `err` for a connection to `target` (`host:port`).
pub(crate) fn classify(err: &ConnectionError, target: &str) -> (Failure, String) {
    match err {
        ConnectionError::ConnectionRefused(code) => refused(*code, target),
        ConnectionError::Tls(e) => match tls_cause(e) {
            Some(cause) => tls(target, &cause),
            None => (Failure::Network, format!("cannot reach {target}: {e}")),
        },
        ConnectionError::Io(e) => io_failure(e, target),
        ConnectionError::NetworkTimeout => (
            Failure::Network,
            format!("no answer from {target} within the connect timeout"),
        ),
        ConnectionError::FlushTimeout => (
            Failure::Network,
            format!("writing to {target} timed out (link stalled)"),
        ),
        ConnectionError::MqttState(StateError::Deserialization(e)) => (
            Failure::Network,
            format!(
                "{target} sent a packet tether cannot read ({e}); tether dropped the connection"
            ),
        ),
        ConnectionError::MqttState(e) => (
            Failure::Network,
            format!("connection to {target} lost: {e}"),
        ),
        other => (
            Failure::Network,
            format!("connection to {target} failed: {other}"),
        ),
    }
}

/// Whether tether itself dropped the connection because a packet from the
/// broker could not be read (as opposed to the broker or the network
/// closing it).
pub(crate) fn is_unreadable_packet(err: &ConnectionError) -> bool {
    matches!(
        err,
        ConnectionError::MqttState(StateError::Deserialization(_))
    )
}

fn refused(code: ConnectReturnCode, target: &str) -> (Failure, String) {
    match code {
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => (
            Failure::Auth,
            format!(
                "{target} refused the credentials ({code:?}): check the device key, token or \
                 password in the [hub] section"
            ),
        ),
        ConnectReturnCode::BadClientId => (
            Failure::Auth,
            format!("{target} rejected the client id: check the device id in the [hub] section"),
        ),
        ConnectReturnCode::ServiceUnavailable => (
            Failure::Throttled,
            format!("{target} is unavailable or throttling this device; backing off"),
        ),
        other => (
            Failure::Auth,
            format!("{target} refused the connection ({other:?})"),
        ),
    }
}

fn io_failure(e: &io::Error, target: &str) -> (Failure, String) {
    match rustls_inside(e) {
        Some(cause) => tls(target, &cause),
        None => (Failure::Network, format!("cannot reach {target}: {e}")),
    }
}

fn tls(target: &str, cause: &str) -> (Failure, String) {
    (
        Failure::Tls,
        format!(
            "TLS with {target} failed: {cause}: check hub.ca_file, the server's certificate and \
             the system clock"
        ),
    )
}

fn tls_cause(e: &rumqttc::TlsError) -> Option<String> {
    match e {
        rumqttc::TlsError::Io(io) => rustls_inside(io),
        other => Some(other.to_string()),
    }
}

/// rustls reports handshake failures as an `io::Error` wrapping its own.
fn rustls_inside(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?;
    if let Some(r) = inner.downcast_ref::<rustls::Error>() {
        return Some(r.to_string());
    }
    let mut source = inner.source();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_are_auth_failures_that_say_so() {
        let (f, msg) = classify(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            "h:8883",
        );
        assert_eq!(f, Failure::Auth);
        assert!(msg.contains("refused the credentials"), "{msg}");
    }

    #[test]
    fn unknown_issuer_is_a_tls_failure() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let (f, msg) = classify(&ConnectionError::Io(io), "h:8883");
        assert_eq!(f, Failure::Tls);
        assert!(msg.contains("TLS with h:8883 failed"), "{msg}");
    }

    #[test]
    fn refused_tcp_is_a_network_failure() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let (f, msg) = classify(&ConnectionError::Io(io), "h:1");
        assert_eq!(f, Failure::Network);
        assert!(msg.starts_with("cannot reach h:1"), "{msg}");
    }

    #[test]
    fn throttling_backs_off_longer() {
        let (f, _) = classify(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable),
            "h",
        );
        assert_eq!(f, Failure::Throttled);
    }
}
