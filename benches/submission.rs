//! Submission benchmark (not a test): starts herald (release build), then N concurrent clients
//! submit many 4 KB messages over STARTTLS + AUTH PLAIN, one connection each, pipelining
//! MAIL/RCPT/DATA. Prints accepted messages per second, p50/p99 from end of DATA to `250`, and
//! herald's idle and peak RSS from /proc.
//!
//! `cargo bench --bench submission` — tune with BENCH_CLIENTS (50) and BENCH_MESSAGES (20000).
//! Messages are From: example.test, signed with an Ed25519 key generated at start.

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

fn message(i: usize) -> String {
    let mut m = format!(
        "From: Bench <bench@example.test>\r\nTo: r@example.org\r\nSubject: bench {i}\r\n\
         Message-ID: <{i}@bench.example.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    );
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() <= 4096 {
        m.push_str(line);
    }
    m
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

async fn client(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    next: Arc<AtomicUsize>,
    total: usize,
    logged_in: Arc<tokio::sync::Barrier>,
) -> Vec<Duration> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut s = BufStream::new(tcp);
    assert_eq!(read_reply(&mut s).await, 220);
    s.write_all(b"EHLO bench.test\r\n").await.expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 250);
    s.write_all(b"STARTTLS\r\n").await.expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 220);
    let tcp = s.into_inner();
    let name = ServerName::try_from(HOST).expect("name");
    let tls = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS");
    let mut s = BufStream::new(tls);
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0demo\0{PASSWORD}"));
    s.write_all(format!("EHLO bench.test\r\nAUTH PLAIN {token}\r\n").as_bytes())
        .await
        .expect("write");
    s.flush().await.expect("flush");
    assert_eq!(read_reply(&mut s).await, 250);
    assert_eq!(read_reply(&mut s).await, 235, "AUTH");
    logged_in.wait().await;
    let mut latencies = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        s.write_all(b"MAIL FROM:<bench@example.test>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n")
            .await
            .expect("write");
        s.flush().await.expect("flush");
        for want in [250, 250, 354] {
            assert_eq!(read_reply(&mut s).await, want);
        }
        s.write_all(message(i).as_bytes()).await.expect("write");
        s.write_all(b".\r\n").await.expect("write");
        s.flush().await.expect("flush");
        let t = Instant::now();
        assert_eq!(read_reply(&mut s).await, 250, "message accepted");
        latencies.push(t.elapsed());
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    let _ = s.flush().await;
    latencies
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let total = env_num("BENCH_MESSAGES", 20_000);
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
         [tls]\ncert = \"{d}/herald.crt\"\nkey = \"{d}/herald.key\"\n\
         [apps.demo]\npassword_hash = \"{HASH}\"\nsenders = [\"@example.test\"]\nrate_limit = 0\n\
         [dkim]\nallow_dev_keys = true\n[[dkim.keys]]\ndomain = \"example.test\"\n\
         selector = \"bench\"\nalgorithm = \"ed25519\"\nfile = \"{d}/keys/bench.ed25519.pem\"\n\
         [dns]\nservers = [\"127.0.0.1:9\"]  # no name server: accepted mail stays queued, nothing leaves loopback\n",
        d = dir.path().display()
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

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let (mut latencies, elapsed): (Vec<Duration>, Duration) = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let c = client(addr, tls.clone(), next.clone(), total, barrier.clone());
                tokio::spawn(c)
            })
            .collect();
        // The clock starts once every client has done STARTTLS and AUTH.
        barrier.wait().await;
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        (all, started.elapsed())
    });
    let peak = rss_kb(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();

    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let spooled = std::fs::read_dir(dir.path().join("spool/msg"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!("herald submission benchmark");
    println!("  clients            {clients} (STARTTLS + AUTH PLAIN, one connection each)");
    println!(
        "  messages           {} of 4096 bytes ({spooled} in the spool)",
        latencies.len()
    );
    println!(
        "  elapsed            {:.2} s (after every client did STARTTLS + AUTH)",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput         {:.0} accepted messages/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  end of DATA -> 250 p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99))
    );
    println!("  herald RSS         idle {} KB, peak {} KB", idle, peak);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
