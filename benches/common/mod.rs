//! What every herald benchmark shares: the demo app's credentials, herald's config, starting
//! the release binary and waiting until it is ready, the client side of STARTTLS + AUTH, SMTP
//! replies, test messages, and /proc readings. Each bench uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub mod sink;

/// herald's host name, in its certificate and its config.
pub const HOST: &str = "herald.example.test";
/// The argon2id hash of [`PASSWORD`], for the demo app.
pub const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";
/// The demo app's password.
pub const PASSWORD: &str = "herald-demo-password";
/// A `[dns]` section with no name server behind it: accepted mail stays queued and nothing
/// leaves loopback.
pub const NO_DNS: &str = "[dns]\nservers = [\"127.0.0.1:9\"]  # no name server: accepted mail stays queued, nothing leaves loopback\n";
/// One line of message body (CRLF included).
pub const LINE: &str =
    "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";

/// A knob from the environment, or its default.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A memory figure (`VmRSS:`, `VmHWM:`) of a process from /proc, in KB (0 if unreadable).
pub fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// utime + stime from a /proc `stat` file's text (0 if unreadable).
fn stat_cpu(stat: &str) -> Duration {
    // Fields after the command name (in parentheses, possibly with spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// CPU time (user + system) of a process so far (`pid`, or `self`), from /proc/<pid>/stat.
pub fn cpu_time(pid: &str) -> Duration {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time of each thread of a process so far, by thread id: (name, CPU), from
/// /proc/<pid>/task/*/stat and comm.
pub fn thread_cpu(pid: u32) -> std::collections::BTreeMap<u32, (String, Duration)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cpu = stat_cpu(&std::fs::read_to_string(dir.join("stat")).unwrap_or_default());
        out.insert(tid, (name.trim().to_string(), cpu));
    }
    out
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A loopback address nothing listens on yet.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Message `i` of about `size` bytes, From: example.test, its index in the Message-ID.
pub fn message(i: usize, size: usize) -> String {
    let mut m = format!(
        "From: Bench <bench@example.test>\r\nTo: r@example.org\r\nSubject: bench {i}\r\n\
         Message-ID: <{i}@bench.example.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    );
    while m.len() + LINE.len() <= size {
        m.push_str(LINE);
    }
    m
}

/// Writes herald's certificate and key (PEM) where [`config`] points: `dir`/herald.crt, .key.
pub fn write_tls(dir: &Path, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) {
    std::fs::write(dir.join("herald.crt"), cert).expect("cert");
    std::fs::write(dir.join("herald.key"), key).expect("key");
}

/// herald's config for a bench: the demo app (no rate limit), TLS from `dir`/herald.crt and
/// .key, a dev DKIM key of `dkim` (`ed25519` or `rsa`) for example.test, log level `info`.
/// `data_dir` is herald's data directory, `smtp` the `[smtp]` lines (listeners and limits),
/// `rest` the sections after `[dkim]` (at least `[dns]`).
pub fn config(dir: &Path, data_dir: &Path, smtp: &str, dkim: &str, rest: &str) -> String {
    format!(
        "[server]\nhostname = \"{HOST}\"\ndata_dir = \"{data}\"\nlog_level = \"info\"\n\
         [smtp]\n{smtp}max_connections_per_ip = 1000\n\
         [tls]\ncert = \"{d}/herald.crt\"\nkey = \"{d}/herald.key\"\n\
         [apps.demo]\npassword_hash = \"{HASH}\"\nsenders = [\"@example.test\"]\nrate_limit = 0\n\
         [dkim]\nallow_dev_keys = true\n[[dkim.keys]]\ndomain = \"example.test\"\n\
         selector = \"bench\"\nalgorithm = \"{dkim}\"\nfile = \"{d}/keys/bench.{dkim}.pem\"\n\
         {rest}",
        d = dir.display(),
        data = data_dir.display(),
    )
}

/// A running herald (`serve`), killed when dropped.
pub struct Herald {
    child: Child,
    /// Its process id, for /proc readings.
    pub pid: u32,
}

impl Herald {
    /// Writes `config` to `config_path`, starts the built herald with it and waits for its
    /// "herald ready" line. `rust_log` sets RUST_LOG; with `forward_warnings` herald's WARN and
    /// ERROR lines are copied to stderr.
    pub fn start(
        config_path: &Path,
        config: &str,
        rust_log: Option<&str>,
        forward_warnings: bool,
    ) -> Herald {
        std::fs::write(config_path, config).expect("config");
        // BENCH_HERALD: another build of herald (e.g. an older commit's, for before/after runs
        // of the same bench).
        let bin =
            std::env::var_os("BENCH_HERALD").unwrap_or_else(|| env!("CARGO_BIN_EXE_herald").into());
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config_path)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().expect("start herald");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("herald ready") {
                    let _ = ready_tx.send(());
                }
                if forward_warnings && (line.contains("WARN") || line.contains("ERROR")) {
                    eprintln!("[herald] {line}");
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("herald ready");
        let pid = child.id();
        Herald { child, pid }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The code of the next (possibly multi-line) SMTP reply; 0 if the connection ended.
pub async fn read_reply<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// A submission session after STARTTLS.
pub type Session = BufStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects to the submission port: greeting, EHLO and STARTTLS (pipelined), TLS handshake.
pub async fn starttls(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Session {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut s = BufStream::new(tcp);
    assert_eq!(read_reply(&mut s).await, 220);
    s.write_all(b"EHLO bench.test\r\nSTARTTLS\r\n")
        .await
        .expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 250);
    assert_eq!(read_reply(&mut s).await, 220);
    let tls = TlsConnector::from(tls)
        .connect(ServerName::try_from(HOST).expect("name"), s.into_inner())
        .await
        .expect("TLS");
    BufStream::new(tls)
}

/// The `AUTH PLAIN` command line for the demo app.
pub fn auth_plain() -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0demo\0{PASSWORD}"));
    format!("AUTH PLAIN {token}\r\n")
}

/// [`starttls`], then EHLO and AUTH PLAIN (pipelined): a session ready for MAIL.
pub async fn login(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Session {
    let mut s = starttls(addr, tls).await;
    s.write_all(format!("EHLO bench.test\r\n{}", auth_plain()).as_bytes())
        .await
        .expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 250);
    assert_eq!(read_reply(&mut s).await, 235, "AUTH");
    s
}

/// Sends message `i` (`size` bytes) on a logged-in session: MAIL, RCPT and DATA pipelined,
/// then the message and its final dot, flushed (the caller reads the reply).
pub async fn send_message(s: &mut Session, i: usize, size: usize) {
    send_message_to(s, i, size, "r@example.org").await;
}

/// [`send_message`] to the recipient `rcpt`.
pub async fn send_message_to(s: &mut Session, i: usize, size: usize, rcpt: &str) {
    let envelope = format!("MAIL FROM:<bench@example.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    s.write_all(envelope.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
    for want in [250, 250, 354] {
        assert_eq!(read_reply(s).await, want);
    }
    s.write_all(message(i, size).as_bytes())
        .await
        .expect("write");
    s.write_all(b".\r\n").await.expect("write");
    s.flush().await.expect("flush");
}

/// The `p` quantile (0.0–1.0) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
