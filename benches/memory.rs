//! Memory benchmark (not a test): starts herald (release build), then N authenticated sessions
//! each send half of a large message in DATA and pause there. Prints herald's RSS idle, with
//! every session mid-way (the target: 50 sessions mid-way through 20 MB messages stay under
//! 100 MB), and its peak once all are finished, signed and spooled.
//!
//! `cargo bench --bench memory` — tune with BENCH_CLIENTS (50) and BENCH_MESSAGE_MB (20).
//! Nothing is delivered (no name server): the messages stay in a temporary spool.

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "herald.example.test";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";
const PASSWORD: &str = "herald-demo-password";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One line of message body (CRLF included).
const LINE: &[u8] = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";

/// The size of the spool's staging directory: messages being received.
fn staged_bytes(spool: &std::path::Path) -> u64 {
    std::fs::read_dir(spool.join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn read_reply<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
) -> u16 {
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

type Session = BufStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Logs in and starts a message: greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA.
async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, i: usize) -> Session {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut s = BufStream::new(tcp);
    assert_eq!(read_reply(&mut s).await, 220);
    s.write_all(b"EHLO bench.test\r\nSTARTTLS\r\n")
        .await
        .expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 250);
    assert_eq!(read_reply(&mut s).await, 220);
    let name = ServerName::try_from(HOST).expect("name");
    let tls = TlsConnector::from(tls)
        .connect(name, s.into_inner())
        .await
        .expect("TLS");
    let mut s = BufStream::new(tls);
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0demo\0{PASSWORD}"));
    s.write_all(
        format!(
            "EHLO bench.test\r\nAUTH PLAIN {token}\r\nMAIL FROM:<bench@example.test>\r\n\
             RCPT TO:<r{i}@example.org>\r\nDATA\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    s.flush().await.expect("flush");
    for want in [250, 235, 250, 250, 354] {
        assert_eq!(read_reply(&mut s).await, want);
    }
    s.write_all(
        format!(
            "From: Bench <bench@example.test>\r\nTo: r{i}@example.org\r\nSubject: big {i}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    s
}

/// Sends `bytes` of body lines.
async fn send_body(s: &mut Session, bytes: usize) {
    let mut block = Vec::with_capacity(64 * 1024);
    while block.len() + LINE.len() <= 64 * 1024 {
        block.extend_from_slice(LINE);
    }
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&block).await.expect("write body");
        sent += block.len();
    }
    s.flush().await.expect("flush");
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let size = env_num("BENCH_MESSAGE_MB", 20) * 1024 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    std::fs::write(dir.path().join("herald.crt"), cert).expect("cert");
    std::fs::write(dir.path().join("herald.key"), key).expect("key");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let config = format!(
        "[server]\nhostname = \"{HOST}\"\ndata_dir = \"{d}\"\nlog_level = \"info\"\n\
         [smtp]\nsubmission = \"{addr}\"\nmax_connections_per_ip = 1000\n\
         max_message_size = {max}\ndata_timeout = \"10m\"\n\
         [tls]\ncert = \"{d}/herald.crt\"\nkey = \"{d}/herald.key\"\n\
         [apps.demo]\npassword_hash = \"{HASH}\"\nsenders = [\"@example.test\"]\nrate_limit = 0\n\
         [dkim]\nallow_dev_keys = true\n[[dkim.keys]]\ndomain = \"example.test\"\n\
         selector = \"bench\"\nalgorithm = \"ed25519\"\nfile = \"{d}/keys/bench.ed25519.pem\"\n\
         [dns]\nservers = [\"127.0.0.1:9\"]  # no name server: accepted mail stays queued, nothing leaves loopback\n",
        d = dir.path().display(),
        max = size + 1024 * 1024,
    );
    let config_path = dir.path().join("herald.toml");
    std::fs::write(&config_path, config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let pid = child.id();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("herald ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("herald ready");
    let idle = rss_kb(pid, "VmRSS:");
    let spool = dir.path().join("spool");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let half = size / 2;
    let (mid, accepted, elapsed) = rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut s = open(addr, tls, i).await;
                    send_body(&mut s, half).await;
                    s
                })
            })
            .collect();
        let mut sessions = Vec::new();
        for t in tasks {
            sessions.push(t.await.expect("session"));
        }
        // Every half is in herald once the staging files hold it (less a write buffer each).
        let want = (clients * (half - 64 * 1024)) as u64;
        let deadline = Instant::now() + Duration::from_secs(300);
        while staged_bytes(&spool) < want {
            assert!(Instant::now() < deadline, "herald did not take in the data");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mid = rss_kb(pid, "VmRSS:");
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    send_body(&mut s, size - half).await;
                    s.write_all(b".\r\n").await.expect("write");
                    s.flush().await.expect("flush");
                    read_reply(&mut s).await == 250
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            accepted += usize::from(t.await.expect("finish"));
        }
        (mid, accepted, started.elapsed())
    });
    let peak = rss_kb(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    println!("herald memory benchmark");
    println!(
        "  sessions           {clients} (STARTTLS + AUTH PLAIN), each a {} MB message",
        size / (1024 * 1024)
    );
    println!("  herald RSS idle    {idle} KB");
    println!(
        "  herald RSS mid-way {mid} KB (every session {} MB into its DATA)",
        half / (1024 * 1024)
    );
    println!(
        "  accepted           {accepted} of {clients} in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!("  herald peak RSS    {peak} KB (VmHWM, signing and spooling included)");
}
