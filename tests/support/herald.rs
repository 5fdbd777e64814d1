//! Runs herald as a child process, the way an operator does: a config file in a temp dir,
//! `herald serve`, and a wait for its `event = "ready"` log line (never a sleep). Tests wait
//! on herald's structured events ([`Herald::wait_for_event`]: a field `event`, in text or JSON
//! log lines), not on the words of a message.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The herald binary cargo built for these tests.
pub fn herald_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

/// A base configuration for one test: loopback listeners on fresh addresses, dev certs and
/// keys generated into the test's own directory, the demo app. Tests edit the table.
pub fn base_config(dir: &Path) -> toml::Table {
    let submission = super::free_addr();
    let submissions = super::free_port_on(match submission.ip() {
        std::net::IpAddr::V4(ip) => ip,
        _ => unreachable!(),
    });
    let text = format!(
        r#"
[server]
hostname = "herald.example.test"
data_dir = "{data}"
grace_period = "5s"
log_level = "info,herald=debug"

[smtp]
submission = "{submission}"
submissions = "{submissions}"

[tls]
cert = "{data}/certs/herald.crt"
key = "{data}/certs/herald.key"
allow_dev_certs = true

[apps.demo]
password_hash = "{hash}"
senders = ["@example.test"]
rate_limit = 0

[dkim]
allow_dev_keys = true

[[dkim.keys]]
domain = "example.test"
selector = "dev"
algorithm = "ed25519"
file = "{data}/keys/example.test.dev.ed25519.pem"
active = true

[dns]
servers = ["127.0.0.1:9"]

[delivery]
retry_schedule = ["1s", "2s"]
"#,
        data = dir.display(),
        hash = DEMO_HASH,
    );
    toml::from_str(&text).expect("base config parses")
}

/// The demo app's password (its hash is [`DEMO_HASH`]).
pub const DEMO_PASSWORD: &str = "herald-demo-password";
/// argon2id hash of [`DEMO_PASSWORD`].
pub const DEMO_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";

/// A running herald child process.
pub struct Herald {
    /// The child; killed on drop.
    pub child: Child,
    /// Path of the config file it was started with.
    pub config_path: PathBuf,
    /// The config it was started with.
    pub config: toml::Table,
    /// Every line it has written to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    /// The thread copying stderr into `log`; finished once herald's stderr is closed.
    reader: std::thread::JoinHandle<()>,
}

impl Herald {
    /// Writes `config` to `dir/herald.toml`, starts `herald serve` and waits until it is ready.
    pub fn start(dir: &Path, config: toml::Table) -> Herald {
        let config_path = dir.join("herald.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).expect("config serializes"),
        )
        .expect("write config");
        let mut h = Herald::spawn(&config_path, config, &["serve"]);
        h.wait_for_event("ready", Duration::from_secs(60));
        h
    }

    /// Starts herald with arbitrary arguments (not waiting for anything).
    pub fn spawn(config_path: &Path, config: toml::Table, args: &[&str]) -> Herald {
        Herald::spawn_with_env(config_path, config, args, &[])
    }

    /// [`Herald::spawn`] with extra environment variables (e.g. `HERALD__…` overrides,
    /// `NOTIFY_SOCKET`).
    pub fn spawn_with_env(
        config_path: &Path,
        config: toml::Table,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Herald {
        let mut child = Command::new(herald_bin())
            .arg("--config")
            .arg(config_path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let (log, lines, reader) = collect_stderr_until_closed(&mut child);
        Herald {
            child,
            config_path: config_path.to_path_buf(),
            config,
            log,
            lines,
            reader,
        }
    }

    /// Waits for a stderr line containing `needle`; panics with the log after `timeout`
    /// or if herald exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        wait_for_line(&self.lines, &self.log, needle, timeout)
    }

    /// Waits for a stderr line with the structured field `event = <event>` (e.g. `ready`,
    /// `reloaded`, `reload_refused`, `stopped`) and returns it; panics with the log after
    /// `timeout` or if herald exits first.
    pub fn wait_for_event(&mut self, event: &str, timeout: Duration) -> String {
        wait_for_match(
            &self.lines,
            &self.log,
            &format!("event {event:?}"),
            timeout,
            |l| has_event(l, event),
        )
    }

    /// An address from the `[smtp]` section, e.g. `submission`.
    pub fn smtp_addr(&self, listener: &str) -> SocketAddr {
        self.config["smtp"][listener]
            .as_str()
            .expect("listener configured")
            .parse()
            .expect("socket address")
    }

    /// Kills herald with SIGKILL (no clean-up), as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting (see [`Herald::wait_exit`]).
    pub fn send_sigterm(&self) {
        self.send_signal(15);
    }

    /// Sends signal `sig` (e.g. 1 = SIGHUP) to herald without waiting.
    pub fn send_signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc_kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for herald to exit and for the last of its log lines; panics with the log if it
    /// has not exited within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait herald") {
                // Every line herald wrote is in `log` once its stderr reached end of file.
                while !self.reader.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "herald did not exit within {timeout:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            // Polling a child's exit status has no blocking-with-deadline form in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        self.child.wait().expect("wait herald")
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Points a herald config at the fake internet: `[dns] servers` = the test DNS server, and
/// `[tls] extra_roots` = the test CA's root (written to `dir/test-ca.pem`), so herald resolves
/// test zones and trusts certificates the test CA issues. Ports (`[delivery] port`,
/// `[mta_sts] port`) stay the test's choice, e.g. `support::set(&mut cfg, "delivery.port",
/// port as i64)` with the port from `same_port_listeners`.
pub fn point_at(
    cfg: &mut toml::Table,
    dir: &Path,
    dns: &super::dns::DnsServer,
    ca: &super::ca::TestCa,
) {
    let root = dir.join("test-ca.pem");
    ca.write_root(&root);
    super::set(cfg, "dns.servers", vec![dns.addr.to_string()]);
    super::set(cfg, "tls.extra_roots", vec![root.display().to_string()]);
}

/// Copies a child's stderr lines to ours (prefixed `[herald]`), into a shared log and onto a
/// channel, from a thread; returns the log and the channel's receiving end.
pub fn collect_stderr(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let (log, lines, _reader) = collect_stderr_until_closed(child);
    (log, lines)
}

/// [`collect_stderr`], with the copying thread (it ends when the child's stderr closes).
pub fn collect_stderr_until_closed(
    child: &mut Child,
) -> (
    Arc<Mutex<Vec<String>>>,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, lines) = mpsc::channel();
    let log2 = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[herald] {line}");
            log2.lock().expect("log").push(line.clone());
            let _ = tx.send(line);
        }
    });
    (log, lines, reader)
}

/// Waits for a line from `lines` containing `needle` and returns it; panics with the whole
/// `log` after `timeout` or once the sender is gone (herald exited).
pub fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    log: &Mutex<Vec<String>>,
    needle: &str,
    timeout: Duration,
) -> String {
    wait_for_match(lines, log, &format!("{needle:?}"), timeout, |l| {
        l.contains(needle)
    })
}

/// True when a log line (text or JSON) carries the field `event` with the value `event`.
pub fn has_event(line: &str, event: &str) -> bool {
    [
        format!("event=\"{event}\""),
        format!("event={event}"),
        format!("\"event\":\"{event}\""),
    ]
    .iter()
    .any(|field| {
        line.match_indices(field.as_str()).any(|(at, _)| {
            // The whole field: not `prevent=…` nor a longer value.
            let before = line[..at].chars().last();
            let after = line[at + field.len()..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

/// Waits for a line from `lines` that `matches` and returns it; panics (naming `what`) with
/// the whole `log` after `timeout` or once the sender is gone (herald exited).
pub fn wait_for_match(
    lines: &mpsc::Receiver<String>,
    log: &Mutex<Vec<String>>,
    what: &str,
    timeout: Duration,
    matches: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if matches(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!(
                "herald did not log {what} in {timeout:?}; log:\n{}",
                log.lock().expect("log").join("\n")
            ),
        }
    }
}
