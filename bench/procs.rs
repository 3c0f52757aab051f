//! The processes under test: a Mosquitto of our own (quiet log, unlimited
//! queues, optional persistence) and the release `tether` binary, started
//! with a systemd notify socket so start-up is timed to READY=1.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Waits for `child` to exit after SIGTERM; SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) {
    kill(child.id(), "-TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A mosquitto on one plain loopback listener. Unlike the test harness it
/// does not log every packet (that would cost more than the work measured),
/// and nothing is ever dropped for a slow subscriber.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

impl Mosquitto {
    pub fn start(persistence: bool) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("tether-bench-mosquitto-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut c = String::from("per_listener_settings false\nallow_anonymous true\n");
        c += &format!("log_dest file {}\n", dir.path().join("log").display());
        c += "log_type error\nlog_type warning\nlog_type notice\n";
        c += "max_queued_messages 0\nmax_queued_bytes 0\nset_tcp_nodelay true\n";
        if persistence {
            // Saved only on a clean stop: enough to keep a subscriber's
            // session (and what is queued for it) across a restart.
            c += &format!(
                "persistence true\npersistence_location {}/\nautosave_interval 0\n",
                dir.path().display()
            );
        }
        if is_root() {
            c += "user root\n";
        }
        c += &format!("listener {port} 127.0.0.1\n");
        std::fs::write(dir.path().join("mosquitto.conf"), c).expect("write conf");
        let mut m = Mosquitto {
            dir,
            child: None,
            port,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto on PATH (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// SIGTERM: mosquitto saves its persistence file on the way out.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(30));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The config file for a bench tether: hub on `port`, admin on `admin`,
/// store in `dir/store`, plus `extra` TOML (sections after `[store]`).
pub fn config(port: u16, admin: SocketAddr, dir: &Path, store: &str, extra: &str) -> String {
    format!(
        "[hub]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"dev1\"\nallow_insecure = true\n\
         keep_alive = \"30s\"\nconnect_timeout = \"2s\"\n\
         [store]\npath = \"{}\"\nmax_bytes = 4294967296\n{store}\n\
         [admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n[log]\nlevel = \"warn\"\n{extra}\n",
        dir.join("store").display()
    )
}

/// The `tether` binary under test, killed when dropped.
pub struct Tether {
    child: Child,
    pub pid: u32,
    pub admin: SocketAddr,
    /// spawn → READY=1.
    pub ready_after: Duration,
}

impl Tether {
    /// Starts `bin run -c cfg` and waits for READY=1 on a notify socket.
    pub fn start(bin: &Path, cfg: &Path, admin: SocketAddr, env: &[(String, String)]) -> Tether {
        let dir = cfg.parent().expect("config dir");
        let sock = dir.join("notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tether.log"))
            .expect("log");
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args(["run", "-c"])
            .arg(cfg)
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tether");
        let mut buf = [0u8; 4096];
        let ready_after = loop {
            if let Ok(n) = notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                    break t0.elapsed();
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "tether not READY within 120 s; see {}",
                dir.join("tether.log").display()
            );
        };
        let pid = child.id();
        Tether {
            child,
            pid,
            admin,
            ready_after,
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.pid)
    }

    /// User + system CPU time so far (all threads, living or not).
    pub fn cpu(&self) -> Duration {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name, which ends at the last ')'.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime, stime are fields 14, 15 (1-based) = 11, 12 here.
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        Duration::from_millis(ticks * 10) // CLK_TCK = 100 on Linux
    }

    pub async fn stats(&self, http: &reqwest::Client) -> Value {
        http.get(format!("http://{}/v1/outbox/stats", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// `/healthz` as JSON, whatever its status code (503 while the hub is
    /// unreachable still carries the components).
    pub async fn health(&self, http: &reqwest::Client) -> Value {
        http.get(format!("http://{}/healthz", self.admin))
            .send()
            .await
            .expect("healthz answers")
            .json()
            .await
            .expect("healthz json")
    }

    pub async fn connected(&self, http: &reqwest::Client) {
        for _ in 0..600 {
            if let Ok(r) = http
                .get(format!("http://{}/healthz", self.admin))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tether never connected");
    }

    /// SIGTERM and wait (tether stops within 20 s).
    pub fn stop(mut self) {
        terminate(&mut self.child, Duration::from_secs(25));
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Copies the directory tree `from` to `to` (regular files and folders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for e in std::fs::read_dir(from)
        .expect("read the directory to copy")
        .flatten()
    {
        let target = to.join(e.file_name());
        if e.metadata().expect("metadata").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}

/// Bytes in every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
