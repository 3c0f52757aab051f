use super::*;

const KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
const TOKEN: &str = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=c2VjcmV0c2ln%3D&se=1593353305";

fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
    ConnectionString::parse(s)
}

fn key_bytes(cs: &ConnectionString) -> Vec<u8> {
    match &cs.auth {
        ConnectionAuth::SharedAccessKey(k) => k.0.clone(),
        other => panic!("expected a key, got {other:?}"),
    }
}

#[test]
fn a_key_string_parses_with_all_fields() {
    let cs = parse(&format!(
        "HostName=hub.azure-devices.net;DeviceId=dev-1;ModuleId=m1;\
         GatewayHostName=edge.local;SharedAccessKey={KEY}"
    ))
    .expect("valid");
    assert_eq!(cs.host_name, "hub.azure-devices.net");
    assert_eq!(cs.device_id, "dev-1");
    assert_eq!(cs.module_id.as_deref(), Some("m1"));
    assert_eq!(cs.gateway_host_name.as_deref(), Some("edge.local"));
    assert_eq!(key_bytes(&cs).len(), 32);
    assert!(cs.unknown_keys.is_empty());
}

#[test]
fn padding_equals_in_the_key_survive_the_first_equals_split() {
    let cs = parse("HostName=h;DeviceId=d;SharedAccessKey=cGFzc3dvcmQ=").expect("valid");
    assert_eq!(key_bytes(&cs), b"password");
}

#[test]
fn an_unpadded_key_decodes_like_the_padded_one() {
    let a = parse("HostName=h;DeviceId=d;SharedAccessKey=key").expect("valid");
    let b = parse("HostName=h;DeviceId=d;SharedAccessKey=key=").expect("valid");
    assert_eq!(key_bytes(&a), vec![0x91, 0xEC]);
    assert_eq!(key_bytes(&a), key_bytes(&b));
}

#[test]
fn trailing_and_doubled_separators_are_ignored() {
    let cs = parse(&format!(";HostName=h;;DeviceId=d;SharedAccessKey={KEY};")).expect("valid");
    assert_eq!(cs.device_id, "d");
}

#[test]
fn x509_true_parses_without_a_key() {
    let cs = parse("HostName=h;DeviceId=d;x509=true").expect("valid");
    assert_eq!(cs.auth, ConnectionAuth::X509);
}

#[test]
fn x509_false_is_rejected() {
    let err = parse("HostName=h;DeviceId=d;x509=false").unwrap_err();
    assert_eq!(
        err,
        ConnectionStringError::InvalidX509 {
            value: "false".into()
        }
    );
}

#[test]
fn a_signature_string_yields_its_expiry() {
    let cs = parse(&format!(
        "HostName=h;DeviceId=d;SharedAccessSignature={TOKEN}"
    ))
    .expect("valid");
    match cs.auth {
        ConnectionAuth::SharedAccessSignature { token, expires_at } => {
            assert_eq!(expires_at, 1_593_353_305);
            assert_eq!(token.expose(), TOKEN);
        }
        other => panic!("expected a signature, got {other:?}"),
    }
}

#[test]
fn a_signature_without_se_or_sr_or_with_a_bad_se_is_rejected() {
    for token in [
        "SharedAccessSignature sr=h&sig=abc",
        "SharedAccessSignature sig=abc&se=12",
        "SharedAccessSignature sr=h&sig=abc&se=soon",
        "SharedAccessSignature sr=h&se=12",
        "sr=h&sig=abc&se=12",
    ] {
        let err = parse(&format!(
            "HostName=h;DeviceId=d;SharedAccessSignature={token}"
        ));
        assert!(
            matches!(err, Err(ConnectionStringError::InvalidSignature { .. })),
            "{token}: {err:?}"
        );
    }
}

#[test]
fn duplicate_keys_are_rejected() {
    let err = parse("HostName=h;DeviceId=a;DeviceId=b;x509=true").unwrap_err();
    assert_eq!(
        err,
        ConnectionStringError::DuplicateKey {
            key: "DeviceId".into()
        }
    );
}

#[test]
fn mixed_authentication_is_rejected() {
    let err = parse(&format!(
        "HostName=h;DeviceId=d;SharedAccessKey={KEY};x509=true"
    ))
    .unwrap_err();
    assert_eq!(
        err,
        ConnectionStringError::MixedAuth {
            keys: vec!["SharedAccessKey", "x509"]
        }
    );
    let err = parse(&format!(
        "HostName=h;DeviceId=d;SharedAccessKey={KEY};SharedAccessSignature={TOKEN}"
    ))
    .unwrap_err();
    assert!(matches!(err, ConnectionStringError::MixedAuth { .. }));
}

#[test]
fn no_authentication_is_rejected() {
    assert_eq!(
        parse("HostName=h;DeviceId=d").unwrap_err(),
        ConnectionStringError::NoAuth
    );
}

#[test]
fn missing_host_or_device_is_rejected_with_a_prefixable_message() {
    let err = parse(&format!("HostName=h;SharedAccessKey={KEY}")).unwrap_err();
    assert_eq!(err.to_string(), "missing DeviceId");
    let err = parse(&format!("DeviceId=d;SharedAccessKey={KEY}")).unwrap_err();
    assert_eq!(err.to_string(), "missing HostName");
}

#[test]
fn a_service_string_is_named_as_such() {
    let err = parse(&format!(
        "HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    ))
    .unwrap_err();
    assert_eq!(err, ConnectionStringError::ServiceString);
    let msg = err.to_string();
    assert!(
        msg.contains("service") && msg.contains("device connection string"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_reported_not_fatal() {
    let cs = parse(&format!(
        "HostName=h;DeviceId=d;SharedAccessKey={KEY};Foo=bar;hostname=x"
    ))
    .expect("valid");
    assert_eq!(
        cs.unknown_keys,
        vec!["Foo".to_owned(), "hostname".to_owned()]
    );
}

#[test]
fn malformed_segments_and_empty_input_are_rejected() {
    assert_eq!(
        parse("HostName=h;garbage;DeviceId=d").unwrap_err(),
        ConnectionStringError::MalformedSegment { index: 2 }
    );
    assert_eq!(
        parse("=x;HostName=h").unwrap_err(),
        ConnectionStringError::MalformedSegment { index: 1 }
    );
    assert_eq!(parse(" ; ;").unwrap_err(), ConnectionStringError::Empty);
}

#[test]
fn empty_values_are_rejected() {
    let err = parse(&format!("HostName=;DeviceId=d;SharedAccessKey={KEY}")).unwrap_err();
    assert_eq!(err.to_string(), "HostName is empty");
    let err = parse("HostName=h;DeviceId=d;SharedAccessKey=").unwrap_err();
    assert_eq!(
        err,
        ConnectionStringError::EmptyValue {
            key: "SharedAccessKey".into()
        }
    );
}

#[test]
fn an_undecodable_key_is_rejected_without_echoing_it() {
    let err = parse("HostName=h;DeviceId=d;SharedAccessKey=not*base64!").unwrap_err();
    assert_eq!(err, ConnectionStringError::InvalidKey);
    let msg = err.to_string();
    assert!(
        msg.contains("SharedAccessKey") && !msg.contains("not*base64"),
        "{msg}"
    );
}

#[test]
fn debug_output_never_contains_the_key_or_token() {
    let cs = parse(&format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")).expect("valid");
    assert!(!format!("{cs:?}").contains("O+H9"));
    let cs = parse(&format!(
        "HostName=h;DeviceId=d;SharedAccessSignature={TOKEN}"
    ))
    .expect("valid");
    assert!(!format!("{cs:?}").contains("c2VjcmV0c2ln"));
}
