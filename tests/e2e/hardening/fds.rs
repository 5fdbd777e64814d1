//! Item 3: file descriptors. Connection limits hold at accept, before TLS; a TLS handshake has
//! its own short timeout; herald raises its soft `nofile` limit and refuses to start when
//! `max_connections` plus its reserve cannot fit; accepted mail is written under a flood.
//! herald runs here under a lowered `RLIMIT_NOFILE`, set in the child before exec.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BODY, certs};
use crate::submission::client::{Client, tcp_from};
use crate::support::herald::{base_config, herald_bin};

/// herald started with `RLIMIT_NOFILE` = (`soft`, `hard`), its stderr collected.
struct Limited {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Limited {
    fn spawn(dir: &Path, cfg: &toml::Table, soft: u64, hard: u64) -> Limited {
        let path = dir.join("herald.toml");
        std::fs::write(&path, toml::to_string(cfg).expect("config serializes")).expect("write");
        let mut cmd = Command::new(herald_bin());
        cmd.arg("--config")
            .arg(&path)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[herald] {line}");
                log2.lock().expect("log").push(line);
            }
        });
        Limited { child, log }
    }

    fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(needle))
    }

    fn wait_logged(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logged(needle) {
            assert!(
                Instant::now() < deadline,
                "herald did not log {needle:?}; log:\n{}",
                self.log.lock().expect("log").join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn herald_refuses_to_start_when_max_connections_cannot_fit_the_nofile_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    certs(dir.path());
    let mut cfg = base_config(dir.path());
    crate::support::set(&mut cfg, "smtp.max_connections", 1000);
    let mut h = Limited::spawn(dir.path(), &cfg, 300, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = h.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "herald started anyway");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2));
    // The reader thread may lag the exit by a moment.
    h.wait_logged("smtp.max_connections", Duration::from_secs(5));
    assert!(h.logged("open-files limit"));
    assert!(h.logged("LimitNOFILE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_tls_connections_neither_starves_the_spool_nor_new_clients() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = certs(dir.path());
    let mut cfg = base_config(dir.path());
    crate::support::set(&mut cfg, "smtp.max_connections", 100);
    crate::support::set(&mut cfg, "smtp.max_connections_per_ip", 1000);
    crate::support::set(&mut cfg, "smtp.tls_handshake_timeout", "2s");
    crate::support::set(&mut cfg, "delivery.max_connections", 10);
    // Soft 128 (herald must raise it), hard 400: 100 connections + reserve 276 fit.
    let h = Limited::spawn(dir.path(), &cfg, 128, 400);
    h.wait_logged("herald ready", Duration::from_secs(60));
    let addr = |l: &str| -> std::net::SocketAddr {
        cfg["smtp"][l]
            .as_str()
            .expect("listener")
            .parse()
            .expect("addr")
    };

    // An app is logged in and mid-transaction before the flood starts.
    let mut app = Client::submission_login(addr("submission"), tls.clone()).await;
    app.expect("MAIL FROM:<app@example.test>", 250).await;
    app.expect("RCPT TO:<r@example.org>", 250).await;

    // 600 bare TCP connections to 465 that never start TLS.
    let mut flood = Vec::new();
    let attacker = crate::support::free_ip();
    for _ in 0..600 {
        flood.push(
            tcp_from(attacker, addr("submissions"))
                .await
                .expect("connect"),
        );
    }
    h.wait_logged("refused: too many connections", Duration::from_secs(30));

    // The accepted message is still written.
    app.expect("DATA", 354).await;
    app.send(format!("{BODY}\r\n.\r\n")).await;
    let r = app.reply().await;
    assert_eq!(r.code, 250, "end of DATA under the flood: {r:?}");

    // A new client gets an answer at once (421 while the slots are full)...
    let mut newcomer = Client::plain(addr("submission")).await;
    let r = newcomer.reply().await;
    assert!(r.code == 220 || r.code == 421, "{r:?}");
    // ...and a greeting once the half-open handshakes time out (2 s), flood still connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::plain(addr("submission")).await;
        if c.reply().await.code == 220 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no greeting while the flood holds its sockets"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !h.logged("Too many open files"),
        "herald ran out of descriptors"
    );
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_dns_tcp_connections_cannot_take_the_spool_reserve_under_nofile_1024() {
    use crate::support::dns::DnsServer;
    use crate::support::smtp_sink::{SinkOptions, SmtpSink};

    let dir = tempfile::tempdir().expect("temp dir");
    let tls = certs(dir.path());
    let dns = DnsServer::start();
    let mx = crate::support::free_addr();
    let sink = SmtpSink::start(
        std::net::TcpListener::bind(mx).expect("bind the MX"),
        SinkOptions::default(),
    );
    let mx_ip = match mx.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => unreachable!("loopback v4"),
    };
    dns.add_mx("example.org", 10, "mx.example.org");
    dns.add_a("mx.example.org", mx_ip);
    let dns_listen = crate::support::free_addr();
    let mut cfg = base_config(dir.path());
    crate::support::set(&mut cfg, "dns.servers", dns.config_value());
    crate::support::set(&mut cfg, "delivery.port", mx.port() as i64);
    crate::support::set(&mut cfg, "smtp.max_connections", 100);
    crate::support::set(&mut cfg, "delivery.max_connections", 10);
    crate::support::set(&mut cfg, "dns_server.listen", dns_listen.to_string());
    crate::support::set(&mut cfg, "spf.include", "_spf.example.test");
    crate::support::set(&mut cfg, "spf.addresses", vec!["192.0.2.1".to_string()]);
    let h = Limited::spawn(dir.path(), &cfg, 1024, 1024);
    h.wait_logged("herald ready", Duration::from_secs(60));
    let addr = |l: &str| -> std::net::SocketAddr {
        cfg["smtp"][l]
            .as_str()
            .expect("listener")
            .parse()
            .expect("addr")
    };

    // 1,100 idle DNS-over-TCP connections (more than the descriptors herald may open).
    let attacker = crate::support::free_ip();
    let mut flood = Vec::new();
    for _ in 0..1100 {
        match tcp_from(attacker, dns_listen).await {
            Ok(c) => flood.push(c),
            Err(e) => panic!("connect to the DNS listener: {e}"),
        }
    }
    h.wait_logged("dns: TCP connection refused", Duration::from_secs(30));

    // Authenticated submission still works, end of data included, and the mail is delivered.
    let mut app = Client::submission_login(addr("submission"), tls.clone()).await;
    app.expect("MAIL FROM:<app@example.test>", 250).await;
    app.expect("RCPT TO:<r@example.org>", 250).await;
    app.expect("DATA", 354).await;
    app.send(format!("{BODY}\r\n.\r\n")).await;
    let r = app.reply().await;
    assert_eq!(r.code, 250, "end of DATA under the DNS flood: {r:?}");
    let got = tokio::task::spawn_blocking(move || {
        sink.wait_for_messages(1, Duration::from_secs(30)).len()
    })
    .await
    .expect("sink");
    assert_eq!(got, 1, "the message was delivered during the flood");
    assert!(
        !h.logged("Too many open files"),
        "herald ran out of descriptors"
    );
    drop(flood);
}
