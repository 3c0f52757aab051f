//! A real mosquitto broker per test, in its own temporary directory, on loopback ports.
//!
//! [`Broker::start`] writes `mosquitto.conf`, the test PKI and the password file into a
//! [`TempDir`], runs `mosquitto -c mosquitto.conf` as a child process and returns once the
//! broker answers an MQTT CONNECT. Dropping the [`Broker`] SIGKILLs the process and removes
//! the directory.
//!
//! Listeners (all bound to 127.0.0.1, `per_listener_settings true`):
//! - TLS ([`Broker::tls_port`]): server certificate for `localhost` and `127.0.0.1` signed by
//!   the test CA ([`Broker::ca_pem`]); anonymous refused; password file, or client
//!   certificates with [`BrokerOptions::tls_client_certs`].
//! - plain TCP ([`Broker::plain_port`]): anonymous allowed unless
//!   [`BrokerOptions::plain_anonymous`] is false, in which case the password file applies.
//! - websockets, when [`BrokerOptions::websockets`] is set: plain ([`Broker::ws_port`],
//!   authenticated like the plain listener) and TLS ([`Broker::wss_port`], same certificate
//!   as the TLS listener, password file). Debian 12's mosquitto 2.0.11 has libwebsockets
//!   built in; its listeners work as long as a TCP listener exists too, as here.
//!
//! Ports are picked below the kernel's ephemeral range so that outgoing connections never
//! take them, which keeps [`Broker::restart`] on the same ports reliable.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::{Issued, TestPki};

/// How long [`Broker::start`], [`Broker::restart`] and [`Broker::reload`] wait.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const START_ATTEMPTS: usize = 5;

const NOT_INSTALLED: &str = "mosquitto not found: install with apt-get install mosquitto \
                             mosquitto-clients (CI's .ci/run does)";

/// What the broker should enforce; [`Default`] is TLS with no users (so nobody can log in
/// over TLS until [`BrokerOptions::user`] adds one) and an anonymous plain listener.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// `(username, password)` pairs for the password file. Usernames may contain `/`, `?`,
    /// `=`, `%` and `&` (IoT Hub style); mosquitto forbids only `:`.
    pub users: Vec<(String, String)>,
    /// Whether the plain listener (and the websockets one) lets anyone in. When false, they
    /// check the password file like the TLS listener.
    pub plain_anonymous: bool,
    /// TLS listener: `require_certificate true` + `use_identity_as_username true` instead of
    /// the password file. Issue client certificates with [`Broker::issue_client_cert`].
    pub tls_client_certs: bool,
    /// Adds websockets listeners, plain ([`Broker::ws_port`]) and TLS ([`Broker::wss_port`]).
    pub websockets: bool,
    /// `persistence true` in the temporary directory, saved on every change, so sessions
    /// and queued messages survive [`Broker::kill`] + [`Broker::restart`]. mosquitto saves
    /// at the end of a loop iteration: see [`Broker::wait_saved_since`].
    pub persistence: bool,
    /// Content of an ACL file (mosquitto `acl_file` syntax), applied to every listener.
    pub acl: Option<String>,
    /// Extra global configuration lines, written before the first listener.
    pub extra_config: String,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            users: Vec::new(),
            plain_anonymous: true,
            tls_client_certs: false,
            websockets: false,
            persistence: false,
            acl: None,
            extra_config: String::new(),
        }
    }
}

impl BrokerOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn user(mut self, username: &str, password: &str) -> Self {
        self.users.push((username.to_owned(), password.to_owned()));
        self
    }

    pub fn plain_anonymous(mut self, allowed: bool) -> Self {
        self.plain_anonymous = allowed;
        self
    }

    pub fn tls_client_certs(mut self, required: bool) -> Self {
        self.tls_client_certs = required;
        self
    }

    pub fn websockets(mut self, enabled: bool) -> Self {
        self.websockets = enabled;
        self
    }

    pub fn persistence(mut self, enabled: bool) -> Self {
        self.persistence = enabled;
        self
    }

    pub fn acl(mut self, content: &str) -> Self {
        self.acl = Some(content.to_owned());
        self
    }

    pub fn extra_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        self.extra_config.push('\n');
        self
    }
}

/// A position in the broker's log; see [`Broker::log_mark`].
#[derive(Clone, Copy, Debug)]
pub struct LogMark(usize);

/// A running (or deliberately killed/frozen) mosquitto. See the module docs.
pub struct Broker {
    dir: TempDir,
    pki: TestPki,
    child: Option<Child>,
    tls_port: u16,
    plain_port: u16,
    ws_port: Option<u16>,
    wss_port: Option<u16>,
}

impl Broker {
    /// Starts a broker and waits until it accepts MQTT connections.
    ///
    /// # Panics
    ///
    /// If mosquitto or mosquitto_passwd is not installed, if the broker exits or does not
    /// answer within 10 s (the message includes its log), or if no free ports are found.
    pub fn start(opts: BrokerOptions) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("tether-mosquitto-")
            .tempdir()
            .expect("create broker temp dir");
        let pki = TestPki::new();
        write(&dir.path().join("ca.pem"), &pki.ca.cert_pem());
        write(&dir.path().join("server.pem"), &pki.server.cert_pem);
        write(&dir.path().join("server.key"), &pki.server.key_pem);
        if let Some(acl) = &opts.acl {
            write(&dir.path().join("acl"), acl);
        }
        write_password_file(&dir.path().join("passwd"), &opts.users);

        let mut broker = Broker {
            dir,
            pki,
            child: None,
            tls_port: 0,
            plain_port: 0,
            ws_port: None,
            wss_port: None,
        };
        for attempt in 1..=START_ATTEMPTS {
            broker.tls_port = free_port();
            broker.plain_port = free_port();
            broker.ws_port = opts.websockets.then(free_port);
            broker.wss_port = opts.websockets.then(free_port);
            write(&broker.conf_path(), &broker.config_text(&opts));
            let mark = broker.log_mark();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                // Another process took a port between the probe and mosquitto's bind.
                Err(_)
                    if attempt < START_ATTEMPTS
                        && broker.log_since(mark.0).contains("Address already in use") => {}
                Err(log) => panic!("mosquitto did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// The plain websockets listener's port, if [`BrokerOptions::websockets`] was set.
    pub fn ws_port(&self) -> Option<u16> {
        self.ws_port
    }

    /// The TLS websockets listener's port (`wss://localhost:{port}/mqtt`, any path), if
    /// [`BrokerOptions::websockets`] was set. It checks the password file.
    pub fn wss_port(&self) -> Option<u16> {
        self.wss_port
    }

    /// The PEM file of the CA that signed the broker's certificate.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.pki.ca.cert_pem()
    }

    /// A client certificate signed by the broker's CA, whose CN becomes the username when
    /// [`BrokerOptions::tls_client_certs`] is set.
    pub fn issue_client_cert(&self, common_name: &str) -> Issued {
        self.pki.ca.issue_client(common_name)
    }

    /// The broker's temporary directory (config, certificates, log, persistence).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while a process is running (or frozen).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the broker and reaps it: no goodbye to clients, no persistence save beyond
    /// what was already written. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the broker and waits for it to exit (it saves persistence on the way out);
    /// SIGKILLs it after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again with the same configuration and ports (killing it first if
    /// it is still running) and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If it does not come up, e.g. because another process took one of the ports.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait() {
            panic!("mosquitto did not restart on the same ports:\n{log}");
        }
    }

    /// SIGSTOP: the broker keeps its sockets open but answers nothing.
    pub fn freeze(&self) {
        signal(self.running_pid("freeze"), "STOP");
    }

    /// SIGCONT, undoing [`Broker::freeze`].
    pub fn thaw(&self) {
        signal(self.running_pid("thaw"), "CONT");
    }

    /// Rewrites the password file; call [`Broker::reload`] to make a running broker read it.
    pub fn set_users(&self, users: &[(&str, &str)]) {
        let owned: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        write_password_file(&self.dir.path().join("passwd"), &owned);
    }

    /// SIGHUP (mosquitto rereads its config, password and ACL files) and waits until the
    /// broker has done so and serves connections again. Existing connections stay up.
    pub fn reload(&self) {
        let mark = self.log_mark();
        signal(self.running_pid("reload"), "HUP");
        self.wait_logged_then_answering(mark, "Reloading config");
    }

    /// Waits until the log after `mark` shows `needle`, then until the broker answers a
    /// CONNECT. mosquitto logs a reload or a save before doing it, but its loop is single
    /// threaded: a CONNACK to a CONNECT sent after the log line means the work is over.
    fn wait_logged_then_answering(&self, mark: LogMark, needle: &str) {
        assert!(
            self.wait_for_log_since(mark, needle, READY_TIMEOUT),
            "mosquitto did not log {needle:?} within {READY_TIMEOUT:?}:\n{}",
            self.log()
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        while !mqtt_ping(self.plain_port) {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not answer after {needle:?}:\n{}",
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until the broker's log (since its first start) contains `needle`; false on
    /// timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_since(LogMark(0), needle, timeout)
    }

    /// The current end of the log, for [`Broker::wait_for_log_since`].
    pub fn log_mark(&self) -> LogMark {
        LogMark(self.log_len())
    }

    /// Waits until the log written after `mark` contains `needle`; false on timeout.
    pub fn wait_for_log_since(&self, mark: LogMark, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_since(mark.0).contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until the broker has saved its persistence file after `mark` and finished
    /// writing it. mosquitto saves at the end of a loop iteration, after it has sent the
    /// PUBACK, so a [`Broker::kill`] right after a PUBACK can lose the message: call this
    /// in between when the test needs it kept.
    ///
    /// # Panics
    ///
    /// If no save is logged within 10 s (is persistence on?).
    pub fn wait_saved_since(&self, mark: LogMark) {
        self.wait_logged_then_answering(mark, "Saving in-memory database");
    }

    /// mosquitto's own log (`log_type all`) followed by whatever it printed on
    /// stdout/stderr, across restarts. Print it when a test fails.
    pub fn log(&self) -> String {
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        format!(
            "--- mosquitto.log ({}) ---\n{}\n--- stdout/stderr ---\n{out}",
            self.log_path().display(),
            self.log_since(0)
        )
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn log_len(&self) -> usize {
        fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize)
    }

    fn log_since(&self, offset: usize) -> String {
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    fn running_pid(&self, what: &str) -> u32 {
        self.pid()
            .unwrap_or_else(|| panic!("cannot {what} the broker: it is not running"))
    }

    /// Spawns mosquitto and waits until it logs that it runs (it has then opened every
    /// listener) and the plain listener answers a CONNECT. On failure, returns the log.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mark = self.log_mark();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .expect("open mosquitto stdout log");
        let err = out.try_clone().expect("clone log file handle");
        let mut child = Command::new(mosquitto_bin("mosquitto"))
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} (spawning it failed: {e})"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("mosquitto exited with {status}\n{}", self.log()));
            }
            // The log line also proves that it is our process that answers.
            if self.log_since(mark.0).contains(" running") && mqtt_ping(self.plain_port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "mosquitto did not accept connections within {READY_TIMEOUT:?}\n{}",
                    self.log()
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn config_text(&self, opts: &BrokerOptions) -> String {
        let dir = self.dir.path();
        let p = |name: &str| dir.join(name).display().to_string();
        let mut c = String::from("# Written by tether-testkit (testkit/src/broker.rs)\n");
        if effective_uid_is_root() {
            // Started as root, mosquitto switches to user `mosquitto`, which cannot read the
            // temporary directory.
            c += "user root\n";
        }
        c += "per_listener_settings true\n";
        c += &format!("log_dest file {}\n", p("mosquitto.log"));
        c += "log_type all\nlog_timestamp_format %H:%M:%S\nconnection_messages true\n";
        if opts.persistence {
            c += &format!(
                "persistence true\npersistence_location {}/\n\
                 autosave_on_changes true\nautosave_interval 1\n",
                dir.display()
            );
        } else {
            c += "persistence false\n";
        }
        c += &opts.extra_config;
        c += "\n";

        // Per-listener blocks, combined below.
        let acl = match &opts.acl {
            Some(_) => format!("acl_file {}\n", p("acl")),
            None => String::new(),
        };
        let tls_files = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        );
        let password_auth = format!("allow_anonymous false\npassword_file {}\n", p("passwd"));
        let open_auth = if opts.plain_anonymous {
            "allow_anonymous true\n"
        } else {
            &password_auth
        };
        let tls_auth = if opts.tls_client_certs {
            "allow_anonymous false\nrequire_certificate true\nuse_identity_as_username true\n"
        } else {
            &password_auth
        };
        let ws = "protocol websockets\n";

        let listen = |port: u16| format!("listener {port} 127.0.0.1\n");
        c += &format!("{}{open_auth}{acl}\n", listen(self.plain_port));
        c += &format!("{}{tls_files}{tls_auth}{acl}\n", listen(self.tls_port));
        if let Some(port) = self.ws_port {
            c += &format!("{}{ws}{open_auth}{acl}\n", listen(port));
        }
        if let Some(port) = self.wss_port {
            c += &format!("{}{ws}{tls_files}{password_auth}{acl}\n", listen(port));
        }
        c
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a mosquitto password file with `mosquitto_passwd -b` (PBKDF2-SHA512 hashes).
/// An empty list gives an empty file: the broker then refuses every password login.
fn write_password_file(path: &Path, users: &[(String, String)]) {
    write(path, "");
    for (user, pass) in users {
        let out = Command::new(mosquitto_bin("mosquitto_passwd"))
            .arg("-b")
            .arg(path)
            .arg(user)
            .arg(pass)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} (mosquitto_passwd: {e})"));
        assert!(
            out.status.success(),
            "mosquitto_passwd refused user {user:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Finds a mosquitto program on PATH, or in the sbin directories a non-root PATH may lack.
fn mosquitto_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{NOT_INSTALLED} ({name} is not on PATH nor in /usr/sbin)"))
}

/// Sends a signal by name through the shell's `kill` builtin (std has no signal API, and
/// this keeps the harness free of libc/unsafe).
fn signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", name, &pid.to_string()])
        .status()
        .expect("run sh to send a signal");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

fn effective_uid_is_root() -> bool {
    // "Uid:\treal\teffective\tsaved\tfs"
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Sends an MQTT 3.1.1 CONNECT (empty client id, clean session) and reports whether a
/// CONNACK came back, whatever its return code.
fn mqtt_ping(port: u16) -> bool {
    const CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0];
    const DISCONNECT: [u8; 2] = [0xe0, 0];
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut connack = [0u8; 4];
    let ok = stream.write_all(&CONNECT).is_ok()
        && stream.read_exact(&mut connack).is_ok()
        && connack[0] == 0x20;
    let _ = stream.write_all(&DISCONNECT);
    ok
}

/// A port on 127.0.0.1 that is free now, chosen below the ephemeral range.
fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    const LOW: u32 = 15_000;
    const SPAN: u32 = 16_000; // up to 31000, under Linux's default ephemeral start, 32768
    let next = NEXT.get_or_init(|| {
        // Different test binaries, and other users of this machine, start elsewhere.
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(seed.wrapping_mul(2_654_435_761) % SPAN)
    });
    for _ in 0..SPAN {
        let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}
