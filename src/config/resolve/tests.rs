//! Loader tests: defaults, every validation rule, secret files, the example.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    load, parse, AdminListen, AzureAuth, Config, ConfigError, FullPolicy, HubEndpoint, LogFormat,
    Transport,
};

const KEY: &str = "O+H9VTcdJP0TQkl7bh4nVG0OJNrEataMpuWB54D0VEc=";
const CONTROLLER: &str = "[controller]\nbase_url = \"https://127.0.0.1\"\n";

/// A minimal valid file around the given `[hub]` body plus extra sections.
fn with_hub(hub: &str, rest: &str) -> String {
    format!("[hub]\n{hub}\n{CONTROLLER}{rest}")
}

fn broker(rest: &str) -> String {
    with_hub(
        "url = \"mqtts://broker.example.com\"\ndevice_id = \"gw\"",
        rest,
    )
}

fn azure(cs: &str, hub_extra: &str) -> String {
    with_hub(&format!("connection_string = \"{cs}\"\n{hub_extra}"), "")
}

fn ok(text: &str) -> Config {
    parse(text, Path::new("/etc/tether")).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

fn err(text: &str) -> String {
    match parse(text, Path::new("/etc/tether")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn write(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body).expect("write temp file");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod temp file");
    path
}

#[test]
fn the_example_file_parses_to_the_defaults() {
    let cfg = ok(include_str!("../../../config/tether.example.toml"));
    let HubEndpoint::Broker(b) = &cfg.hub.endpoint else {
        panic!("expected a broker")
    };
    assert_eq!(
        (b.host.as_str(), b.port, b.tls, b.device_id.as_str()),
        ("broker.example.com", 8883, true, "gateway-01")
    );
    assert_eq!(cfg.hub.keep_alive, Duration::from_secs(240));
    assert!(cfg.bridge.is_none() && cfg.admin.listen.is_none());
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn the_example_file_documents_every_key() {
    let text = include_str!("../../../config/tether.example.toml");
    for key in [
        "connection_string",
        "connection_string_file",
        "url",
        "device_id",
        "username",
        "password",
        "password_file",
        "client_cert_file",
        "client_key_file",
        "allow_insecure",
        "transport",
        "proxy",
        "ca_file",
        "port",
        "keep_alive",
        "sas_ttl",
        "connect_timeout",
        "max_messages_per_second",
        "base_url",
        "accept_invalid_certs",
        "method_name",
        "allowed_paths",
        "max_concurrent",
        "max_queued",
        "request_timeout",
        "inline_limit",
        "upload_url",
        "[[relay.schedule]]",
        "name",
        "every",
        "method",
        "path",
        "body",
        "ttl",
        "max_bytes",
        "full_policy",
        "engine",
        "cache_bytes",
        "batch_max_bytes",
        "failure_ttl",
        "[store.extended_data]",
        "device",
        "baud",
        "profile",
        "mcu_reset_chip",
        "mcu_reset_line",
        "module_reset_chip",
        "module_reset_line",
        "forward",
        "timeout",
        "listen",
        "token",
        "token_file",
        "level",
        "format",
    ] {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} =")) || l == key
        });
        assert!(documented, "{key} is missing from the example");
    }
}

#[test]
fn an_empty_broker_config_gets_the_documented_defaults() {
    let cfg = ok(&broker(""));
    let h = &cfg.hub;
    assert_eq!(h.transport, Transport::Mqtt);
    assert_eq!(
        (h.keep_alive, h.sas_ttl, h.connect_timeout),
        (
            Duration::from_secs(240),
            Duration::from_secs(3600),
            Duration::from_secs(30)
        )
    );
    assert_eq!(h.max_messages_per_second, None);
    let r = &cfg.relay;
    assert_eq!(
        (
            r.method_name.as_str(),
            r.max_concurrent,
            r.max_queued,
            r.inline_limit
        ),
        ("RestApi", 4, 16, 16384)
    );
    assert_eq!(r.request_timeout, Duration::from_secs(25));
    let s = &cfg.store;
    assert_eq!(s.path, PathBuf::from("/var/lib/tether"));
    assert_eq!(
        (s.ttl, s.failure_ttl),
        (Duration::from_secs(86_400), Duration::from_secs(86_400))
    );
    assert_eq!(
        (s.max_bytes, s.cache_bytes, s.batch_max_bytes),
        (256 << 20, 2 << 20, 0)
    );
    assert_eq!(s.full_policy, FullPolicy::DropOldest);
    assert_eq!(
        (cfg.log.level.as_str(), cfg.log.format),
        ("info", LogFormat::Text)
    );
    assert!(cfg.bridge.is_none() && cfg.admin.listen.is_none() && cfg.warnings.is_empty());
}

#[test]
fn azure_defaults_to_100_messages_per_second_and_the_port_can_be_overridden() {
    let cfg = ok(&azure(
        &format!("HostName=h.net;DeviceId=d;SharedAccessKey={KEY}"),
        "",
    ));
    assert_eq!(cfg.hub.max_messages_per_second, Some(100));
    let HubEndpoint::Azure(a) = &cfg.hub.endpoint else {
        panic!("expected azure")
    };
    assert!(matches!(a.auth, AzureAuth::SharedAccessKey(ref k) if k.0.len() == 32));
    assert_eq!(a.port, None);
    let cfg = ok(&azure(
        &format!("HostName=h.net;DeviceId=d;SharedAccessKey={KEY}"),
        "port = 9883\nmax_messages_per_second = 0\ntransport = \"websocket\"",
    ));
    let HubEndpoint::Azure(a) = &cfg.hub.endpoint else {
        panic!("expected azure")
    };
    assert_eq!(
        (a.port, cfg.hub.max_messages_per_second, cfg.hub.transport),
        (Some(9883), None, Transport::WebSocket)
    );
}

#[test]
fn connection_string_errors_are_prefixed_with_the_key() {
    assert_eq!(
        err(&azure(&format!("HostName=h;SharedAccessKey={KEY}"), "")),
        "hub.connection_string: missing DeviceId"
    );
    let msg = err(&azure(
        &format!("HostName=h;SharedAccessKeyName=owner;SharedAccessKey={KEY}"),
        "",
    ));
    assert!(
        msg.starts_with("hub.connection_string: this is a service") && !msg.contains(KEY),
        "{msg}"
    );
}

#[test]
fn hub_needs_exactly_one_of_connection_string_and_url() {
    let both = with_hub(&format!("url = \"mqtts://b\"\ndevice_id = \"d\"\nconnection_string = \"HostName=h;DeviceId=d;SharedAccessKey={KEY}\""), "");
    assert_eq!(
        err(&both),
        "hub: set either connection_string or url, not both"
    );
    assert!(err(CONTROLLER).starts_with("hub: set connection_string"));
    let two = azure(
        &format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
        "connection_string_file = \"cs\"",
    );
    assert_eq!(
        err(&two),
        "hub.connection_string: set either connection_string or connection_string_file, not both"
    );
}

#[test]
fn a_secret_file_is_trimmed_and_a_loose_mode_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "cs",
        &format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}\n"),
        0o644,
    );
    write(dir.path(), "pw", "s3cret\r\n", 0o600);
    let text = "[hub]\nconnection_string_file = \"cs\"\n[controller]\nbase_url = \"https://127.0.0.1\"\nusername = \"u\"\npassword_file = \"pw\"\n";
    let cfg = parse(text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.controller.password.as_ref().map(|p| p.expose()),
        Some("s3cret")
    );
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    let w = &cfg.warnings[0];
    assert!(
        w.starts_with("hub.connection_string_file:")
            && w.contains("chmod 600")
            && w.contains("0644"),
        "{w}"
    );
}

#[test]
fn a_missing_or_empty_secret_file_names_key_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "empty", "\n", 0o600);
    let text = broker("[admin]\ntoken_file = \"nope\"\n");
    let e = parse(&text, dir.path()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::File { key, path, .. } if key == "admin.token_file" && path.ends_with("nope")),
        "{e:?}"
    );
    let e = parse(&broker("[admin]\ntoken_file = \"empty\"\n"), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("admin.token_file:") && e.ends_with("is empty"),
        "{e}"
    );
}

#[test]
fn inline_and_file_secrets_together_are_rejected() {
    let text = with_hub("url = \"mqtts://b\"\ndevice_id = \"d\"\nusername = \"u\"\npassword = \"p\"\npassword_file = \"f\"", "");
    assert_eq!(
        err(&text),
        "hub.password: set either password or password_file, not both"
    );
}

#[test]
fn plaintext_mqtt_needs_allow_insecure() {
    let plain = "url = \"mqtt://b.lan\"\ndevice_id = \"d\"";
    assert_eq!(
        err(&with_hub(plain, "")),
        "hub.url: mqtt:// (plaintext) needs allow_insecure = true"
    );
    let cfg = ok(&with_hub(&format!("{plain}\nallow_insecure = true"), ""));
    let HubEndpoint::Broker(b) = &cfg.hub.endpoint else {
        panic!("expected a broker")
    };
    assert_eq!((b.tls, b.port), (false, 1883));
}

#[test]
fn unsupported_schemes_and_credentials_in_urls_are_rejected() {
    assert_eq!(
        err(&with_hub("url = \"http://b\"\ndevice_id = \"d\"", "")),
        "hub.url: unsupported scheme \"http\" (use mqtts://, mqtt://, wss:// or ws://)"
    );
    let msg = err(&with_hub(
        "url = \"mqtts://u:hunter2@b\"\ndevice_id = \"d\"",
        "",
    ));
    assert!(
        msg.starts_with("hub.url: must not contain credentials") && !msg.contains("hunter2"),
        "{msg}"
    );
    assert!(
        err(&with_hub("url = \"mqtts://b/x\"\ndevice_id = \"d\"", ""))
            .contains("only used with wss://")
    );
    assert!(
        err(&with_hub("url = \"mqtts://b:0\"\ndevice_id = \"d\"", ""))
            .starts_with("hub.url: port \"0\"")
    );
}

#[test]
fn wss_urls_select_the_websocket_transport_with_a_default_path() {
    let cfg = ok(&with_hub(
        "url = \"wss://b.example\"\ndevice_id = \"d\"",
        "",
    ));
    let HubEndpoint::Broker(b) = &cfg.hub.endpoint else {
        panic!("expected a broker")
    };
    assert_eq!(
        (cfg.hub.transport, b.port, b.path.as_str()),
        (Transport::WebSocket, 443, "/mqtt")
    );
    let cfg = ok(&with_hub(
        "url = \"wss://[::1]:8443/ws\"\ndevice_id = \"d\"",
        "",
    ));
    let HubEndpoint::Broker(b) = &cfg.hub.endpoint else {
        panic!("expected a broker")
    };
    assert_eq!(
        (b.host.as_str(), b.port, b.path.as_str()),
        ("::1", 8443, "/ws")
    );
    let msg = err(&with_hub(
        "url = \"mqtts://b\"\ndevice_id = \"d\"\ntransport = \"websocket\"",
        "",
    ));
    assert!(msg.starts_with("hub.transport:"), "{msg}");
}

#[test]
fn hub_port_overrides_the_default_but_may_not_contradict_the_url() {
    let cfg = ok(&with_hub(
        "url = \"mqtts://b\"\ndevice_id = \"d\"\nport = 18883",
        "",
    ));
    let HubEndpoint::Broker(b) = &cfg.hub.endpoint else {
        panic!("expected a broker")
    };
    assert_eq!(b.port, 18883);
    assert!(err(&with_hub(
        "url = \"mqtts://b:1\"\ndevice_id = \"d\"\nport = 2",
        ""
    ))
    .starts_with("hub.port:"));
}

#[test]
fn broker_identity_rules_are_enforced() {
    assert!(err(&with_hub("url = \"mqtts://b\"", "")).starts_with("hub.device_id: required"));
    assert!(
        err(&with_hub("url = \"mqtts://b\"\ndevice_id = \"a/b\"", ""))
            .starts_with("hub.device_id:")
    );
    assert!(err(&with_hub(
        "url = \"mqtts://b\"\ndevice_id = \"d\"\npassword = \"p\"",
        ""
    ))
    .starts_with("hub.password: needs hub.username"));
    assert!(err(&with_hub(
        "url = \"mqtts://b\"\ndevice_id = \"d\"\nclient_cert_file = \"c\"",
        ""
    ))
    .starts_with("hub.client_key_file: required"));
}

#[test]
fn azure_rejects_broker_only_keys() {
    let cs = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    assert!(
        err(&azure(&cs, "device_id = \"x\"")).starts_with("hub.device_id: only used with hub.url")
    );
    assert!(err(&azure(&cs, "username = \"x\"")).starts_with("hub.username:"));
}

#[test]
fn azure_x509_needs_readable_certificate_and_key_files() {
    let cs = "HostName=h;DeviceId=d;x509=true";
    assert!(err(&azure(cs, "")).starts_with("hub.client_cert_file: required with x509=true"));
    let e = parse(
        &azure(
            cs,
            "client_cert_file = \"/nonexistent/c.pem\"\nclient_key_file = \"k.pem\"",
        ),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::File { key, .. } if key == "hub.client_cert_file"),
        "{e:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "c.pem", "cert", 0o644);
    write(dir.path(), "k.pem", "key", 0o600);
    let cfg = parse(
        &azure(
            cs,
            "client_cert_file = \"c.pem\"\nclient_key_file = \"k.pem\"",
        ),
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let HubEndpoint::Azure(a) = &cfg.hub.endpoint else {
        panic!("expected azure")
    };
    assert!(matches!(&a.auth, AzureAuth::X509(c) if c.key_file == dir.path().join("k.pem")));
    let sas = format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}");
    let msg = parse(
        &azure(
            &sas,
            "client_cert_file = \"c.pem\"\nclient_key_file = \"k.pem\"",
        ),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.starts_with("hub.client_cert_file: only used with x509=true"),
        "{msg}"
    );
}

#[test]
fn an_expired_token_and_unknown_keys_warn() {
    let cs = "HostName=h;DeviceId=d;Foo=1;SharedAccessSignature=SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc&se=1000";
    let cfg = ok(&azure(cs, ""));
    assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0].contains("unknown key Foo"));
    assert!(cfg.warnings[1].contains("expired at 1970-01-01T00:16:40Z"));
}

#[test]
fn hub_timing_limits_are_checked() {
    assert_eq!(
        err(&broker("").replace("device_id", "keep_alive = \"2s\"\ndevice_id")),
        "hub.keep_alive: must be at least 5s"
    );
    assert!(err(&azure(
        &format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
        "keep_alive = \"30m\""
    ))
    .contains("1177s"));
    assert_eq!(
        err(&broker("").replace("device_id", "sas_ttl = \"10s\"\ndevice_id")),
        "hub.sas_ttl: must be at least 60s"
    );
}

#[test]
fn bridge_rules_are_checked() {
    assert_eq!(
        err(&broker("[bridge]\ndevice = \"/dev/ttyS1\"\nbaud = 1234\n")),
        "bridge.baud: 1234 is not one of 9600, 19200, 38400, 57600, 115200"
    );
    assert!(ok(&broker("[bridge]\n")).bridge.is_none());
    assert!(err(&broker("[bridge]\nbaud = 9600\n")).starts_with("bridge.device: required"));
    assert!(err(&broker(
        "[bridge]\ndevice = \"/dev/ttyS1\"\nmcu_reset_chip = \"/dev/gpiochip0\"\n"
    ))
    .starts_with("bridge.mcu_reset_line: required"));
    let cfg = ok(&broker("[bridge]\ndevice = \"/dev/ttyS1\"\nbaud = 115200\nmodule_reset_chip = \"/dev/gpiochip0\"\nmodule_reset_line = 4\nforward = [1024]\n"));
    let b = cfg.bridge.expect("bridge");
    assert_eq!(
        (b.baud, b.module_reset_line, b.timeout),
        (
            115200,
            Some((PathBuf::from("/dev/gpiochip0"), 4)),
            Duration::from_secs(25)
        )
    );
}

#[test]
fn invalid_controller_certs_are_only_accepted_for_local_hosts() {
    let rest = |url: &str| {
        with_hub("url = \"mqtts://b\"\ndevice_id = \"d\"", "")
            .replace("https://127.0.0.1", url)
            .replace(
                "[controller]\n",
                "[controller]\naccept_invalid_certs = true\n",
            )
    };
    assert_eq!(err(&rest("https://controller.example.com")), "controller.accept_invalid_certs: only allowed for loopback or link-local controller hosts; use ca_file for others");
    for url in [
        "https://localhost",
        "https://127.0.0.1:8443/api/",
        "https://169.254.10.1",
        "https://[fe80::1]",
        "https://[::1]",
    ] {
        let cfg = ok(&rest(url));
        assert!(cfg.controller.accept_invalid_certs && !cfg.controller.base_url.ends_with('/'));
    }
}

#[test]
fn the_controller_defaults_to_loopback_https_and_needs_an_http_url() {
    let cfg = ok("[hub]\nurl = \"mqtts://b\"\ndevice_id = \"d\"\n");
    assert_eq!(cfg.controller.base_url, "https://127.0.0.1");
    assert!(!cfg.controller.accept_invalid_certs && cfg.controller.password.is_none());
    let msg = err(&broker("").replace("https://127.0.0.1", "ftp://x"));
    assert_eq!(
        msg,
        "controller.base_url: must start with https:// or http://"
    );
    let msg = err(&broker("").replace("base_url", "password = \"p\"\nbase_url"));
    assert_eq!(msg, "controller.password: needs controller.username");
}

#[test]
fn admin_listen_rules_are_checked() {
    assert!(err(&broker(
        "[admin]\nlisten = \"0.0.0.0:8086\"\ntoken = \"0123456789abcdef\"\n"
    ))
    .starts_with("admin.listen: must be a loopback address or unix:PATH"));
    assert!(err(&broker("[admin]\nlisten = \"127.0.0.1:8086\"\n"))
        .starts_with("admin.token: required when admin listens on TCP"));
    assert!(err(&broker("[admin]\nlisten = \"localhost\"\n"))
        .starts_with("admin.listen: \"localhost\" is not IP:PORT"));
    let cfg = ok(&broker(
        "[admin]\nlisten = \"unix:/run/tether/admin.sock\"\n",
    ));
    assert_eq!(
        cfg.admin.listen,
        Some(AdminListen::Unix("/run/tether/admin.sock".into()))
    );
    let cfg = ok(&broker(
        "[admin]\nlisten = \"[::1]:8086\"\ntoken = \"0123456789abcdef\"\n",
    ));
    assert!(matches!(cfg.admin.listen, Some(AdminListen::Tcp(a)) if a.port() == 8086));
}

#[test]
fn relay_rules_are_checked() {
    assert_eq!(
        err(&broker("[relay]\nallowed_paths = [\"/api\", \"x\"]\n")),
        "relay.allowed_paths: \"x\" must start with /"
    );
    assert!(err(&broker("[relay]\nmax_concurrent = 0\n")).starts_with("relay.max_concurrent:"));
    let sched = |body: &str| {
        broker(&format!(
            "[relay]\nallowed_paths = [\"/api\"]\n[[relay.schedule]]\nname = \"a\"\n{body}\n"
        ))
    };
    assert!(err(&sched("every = \"1m\"\npath = \"/other\""))
        .starts_with("relay.schedule[0].path: \"/other\" is outside"));
    assert!(
        err(&sched("every = \"1m\"\npath = \"/api\"\nmethod = \"BREW\""))
            .starts_with("relay.schedule[0].method:")
    );
    assert!(
        err(&sched("every = \"10ms\"\npath = \"/api\"")).starts_with("relay.schedule[0].every:")
    );
    let two = broker("[[relay.schedule]]\nname = \"a\"\nevery = \"1m\"\npath = \"/x\"\n[[relay.schedule]]\nname = \"a\"\nevery = \"1m\"\npath = \"/y\"\n");
    assert!(err(&two).starts_with("relay.schedule[1].name: \"a\" is used twice"));
    let cfg = ok(&sched(
        "every = \"1m\"\npath = \"/api/points\"\nmethod = \"post\"\nbody = \"{}\"",
    ));
    let s = &cfg.relay.schedules[0];
    assert_eq!(
        (s.method.as_str(), s.every, s.body.as_deref()),
        ("POST", Duration::from_secs(60), Some("{}"))
    );
}

#[test]
fn store_and_log_enumerations_are_checked() {
    assert_eq!(
        err(&broker("[store]\nfull_policy = \"drop-newest\"\n")),
        "store.full_policy: unknown policy \"drop-newest\" (use \"drop-oldest\" or \"reject-new\")"
    );
    assert_eq!(
        ok(&broker("[store]\nfull_policy = \"reject-new\"\n"))
            .store
            .full_policy,
        FullPolicy::RejectNew
    );
    assert!(err(&broker("[log]\nformat = \"xml\"\n")).starts_with("log.format: unknown format"));
    assert!(err(&broker("[log]\nlevel = \"tether=loud\"\n")).starts_with("log.level:"));
    assert_eq!(
        ok(&broker("[log]\nformat = \"json\"\n")).log.format,
        LogFormat::Json
    );
}

#[test]
fn extended_data_becomes_json() {
    let cfg = ok(&broker("[store]\npath = \"data\"\n[store.extended_data]\nsite = \"HQ\"\nfloor = 3\nsince = 2024-05-01\n"));
    let ext = serde_json::Value::Object(cfg.store.extended_data.clone());
    assert_eq!(
        ext,
        serde_json::json!({"site": "HQ", "floor": 3, "since": "2024-05-01"})
    );
    assert_eq!(cfg.store.path, PathBuf::from("/etc/tether/data"));
}

#[test]
fn syntax_errors_show_line_and_column_but_not_the_line() {
    let e = parse("[hub]\npassword = \"hunter2\nurl = 1\n", Path::new("/")).unwrap_err();
    let ConfigError::Syntax { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(message.starts_with("line 2, column"), "{message}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = parse(&broker("[hub2]\n"), Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 6, column 2") && e.contains("unknown field `hub2`"),
        "{e}"
    );
    let e = parse(&broker("[store]\nttl = \"forever\"\n"), Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 7") && e.contains("invalid duration"),
        "{e}"
    );
}

#[test]
fn load_names_a_missing_file_and_resolves_paths_next_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let e = load(&missing).unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    let path = write(
        dir.path(),
        "tether.toml",
        &broker("[admin]\ntoken = \"0123456789abcdef\"\nlisten = \"unix:admin.sock\"\n"),
        0o644,
    );
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.admin.listen,
        Some(AdminListen::Unix(dir.path().join("admin.sock")))
    );
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("holds inline secrets") && w.contains("chmod 600")),
        "{:?}",
        cfg.warnings
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(load(&path).expect("valid").warnings.is_empty());
}
