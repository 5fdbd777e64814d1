//! Let's Encrypt's test ACME server, Pebble (Debian package `pebble`), run per test on
//! loopback: its JSON config written with random ports, its HTTPS certificate issued by the
//! test CA for `acme.test` (published on the test DNS server), its challenge look-ups sent to
//! the test DNS server (`-dnsserver`), and its TLS-ALPN-01 validations sent to the port the
//! test chooses (herald's `[web] listen` port). The root that signs what it issues is made at
//! its start and fetched from the management endpoint ([`Pebble::root_pem`]).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::ca::{TestCa, Validity};
use super::dns::DnsServer;
use super::tools::require_tool;

/// The host name of Pebble's ACME and management endpoints (an A record on the test DNS).
pub const ACME_HOST: &str = "acme.test";

/// A running Pebble; killed on drop.
pub struct Pebble {
    child: Child,
    /// The ACME directory URL (`https://acme.test:PORT/dir`).
    pub directory: String,
    /// The management endpoint's address (roots, intermediates).
    pub management: SocketAddr,
    /// Every line Pebble has written.
    pub log: Arc<Mutex<Vec<String>>>,
    root_pem: String,
}

/// What a test chooses about Pebble.
pub struct PebbleOptions {
    /// The port Pebble connects to for TLS-ALPN-01 (herald's `[web] listen` port).
    pub tls_port: u16,
    /// Validity of the certificates it issues, in seconds (short ones make renewal testable).
    pub validity_secs: u64,
}

impl Pebble {
    /// Starts Pebble with its files in `dir`, its HTTPS certificate from `ca`, challenge
    /// look-ups at `dns`; returns once its directory answers and its root is fetched.
    pub fn start(dir: &Path, ca: &TestCa, dns: &DnsServer, opts: PebbleOptions) -> Pebble {
        let pebble = require_tool("pebble", "pebble");
        let acme = super::free_addr();
        let management = super::free_port_on(match acme.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => unreachable!("loopback IPv4"),
        });
        dns.add_ip(ACME_HOST, acme.ip());
        let cert = dir.join("pebble.crt");
        let key = dir.join("pebble.key");
        ca.write_issued(
            &[ACME_HOST, &acme.ip().to_string()],
            Validity::Current,
            &cert,
            &key,
        );
        let config = dir.join("pebble.json");
        let json = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": 9,
                "tlsPort": opts.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": opts.validity_secs,
            }
        });
        std::fs::write(&config, json.to_string()).expect("write pebble config");
        let mut child = Command::new(pebble)
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(dns.addr.to_string())
            // Validations at once, every nonce good, every order validated afresh.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pebble");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[pebble] {line}");
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        super::herald::wait_for_line(
            &rx,
            &log,
            "ACME directory available",
            Duration::from_secs(30),
        );
        let ca_file = dir.join("test-ca-for-curl.pem");
        ca.write_root(&ca_file);
        let root_pem = curl_text(
            &ca_file,
            &format!("https://{ACME_HOST}:{}/roots/0", management.port()),
            &[(ACME_HOST, management)],
        );
        assert!(
            root_pem.contains("BEGIN CERTIFICATE"),
            "pebble root: {root_pem}"
        );
        Pebble {
            child,
            directory: format!("https://{ACME_HOST}:{}/dir", acme.port()),
            management,
            log,
            root_pem,
        }
    }

    /// The root that signs the certificates this Pebble issues (PEM).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Writes [`Pebble::root_pem`] to `path` (for curl's `--cacert` and herald's roots).
    pub fn write_root(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.root_pem).expect("write pebble root");
        path.to_path_buf()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` fetching `url` trusting only `ca_file`, with each `(host, addr)` resolved as given;
/// returns the body, panicking with curl's words when the transfer or TLS check fails.
pub fn curl_text(ca_file: &Path, url: &str, resolve: &[(&str, SocketAddr)]) -> String {
    let out = curl(ca_file, url, resolve, &[]);
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl -sS` with `extra` arguments; the raw output (status, body, curl's stderr).
pub fn curl(
    ca_file: &Path,
    url: &str,
    resolve: &[(&str, SocketAddr)],
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(require_tool("curl", "curl"));
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca_file);
    for (host, addr) in resolve {
        cmd.arg("--resolve")
            .arg(format!("{host}:{}:{}", addr.port(), addr.ip()));
    }
    cmd.args(extra).arg(url);
    cmd.output().expect("run curl")
}
