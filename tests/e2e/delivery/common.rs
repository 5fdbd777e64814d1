//! Shared set-up for the delivery tests: a DNS server, sinks on one port, a herald config
//! pointed at them, and messages written straight into herald's spool.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use herald::spool::{Envelope, Spool};

use crate::support::dns::DnsServer;
use crate::support::herald::{Herald, base_config};
use crate::support::smtp_sink::{SinkOptions, SmtpSink, same_port_listeners};

/// Upper bound for any wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(30);

/// One test's small internet: DNS, a port shared by its MX addresses, the listeners for it.
pub struct World {
    /// The test's directory (config, spool, keys).
    pub dir: tempfile::TempDir,
    /// The DNS server herald asks.
    pub dns: DnsServer,
    /// The port every MX listens on (`[delivery] port`).
    pub port: u16,
    listeners: Vec<TcpListener>,
}

impl World {
    /// A world with `n` loopback addresses sharing one port.
    pub fn new(n: usize) -> World {
        let (port, listeners) = same_port_listeners(n);
        World {
            dir: tempfile::tempdir().expect("tempdir"),
            dns: DnsServer::start(),
            port,
            listeners,
        }
    }

    /// Takes the next address: its listener and IP (drop the listener for a host that is down).
    pub fn take(&mut self) -> (TcpListener, Ipv4Addr) {
        let l = self.listeners.remove(0);
        let ip = match l.local_addr().expect("addr").ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => unreachable!("loopback v4"),
        };
        (l, ip)
    }

    /// Starts a sink on the next address and publishes `host` A → it.
    pub fn sink(&mut self, host: &str, opts: SinkOptions) -> SmtpSink {
        let (l, ip) = self.take();
        self.dns.add_a(host, ip);
        SmtpSink::start(l, opts)
    }

    /// A host name that resolves to an address where nothing listens (connection refused).
    pub fn down_host(&mut self, host: &str) -> Ipv4Addr {
        let (l, ip) = self.take();
        drop(l);
        self.dns.add_a(host, ip);
        ip
    }

    /// The herald config: base, plus our DNS and port, and a fast retry schedule.
    pub fn config(&self) -> toml::Table {
        let mut cfg = base_config(self.dir.path());
        let mut dns = toml::Table::new();
        dns.insert("servers".into(), self.dns.config_value());
        cfg.insert("dns".into(), toml::Value::Table(dns));
        let delivery = cfg
            .entry("delivery")
            .or_insert(toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("delivery table");
        delivery.insert("port".into(), toml::Value::Integer(self.port as i64));
        delivery.insert(
            "retry_schedule".into(),
            toml::Value::Array(vec!["1s".into(), "1s".into()]),
        );
        delivery.insert("connect_timeout".into(), "5s".into());
        cfg
    }

    /// Writes a message into herald's spool (as inbound would) and returns its queue id.
    pub fn store(&self, from: &str, rcpts: &[&str], subject: &str) -> String {
        store_in(&self.dir.path().join("spool"), from, rcpts, subject)
    }
}

/// Sets `[section] key = value` in a config table.
pub fn set(cfg: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    cfg.entry(section)
        .or_insert(toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("section is a table")
        .insert(key.into(), value.into());
}

/// A small message with a unique Message-ID derived from `subject`.
pub fn message(from: &str, rcpts: &[&str], subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from the delivery tests.\r\n.a line with a leading dot\r\n",
        rcpts.join(", ")
    )
    .into_bytes()
}

/// Stores messages in a spool directory with herald's own spool code (same format).
pub fn store_in(spool_dir: &Path, from: &str, rcpts: &[&str], subject: &str) -> String {
    store_many(spool_dir, from, rcpts, &[subject.to_string()]).remove(0)
}

/// Stores one message per subject; returns their queue ids in order.
pub fn store_many(
    spool_dir: &Path,
    from: &str,
    rcpts: &[&str],
    subjects: &[String],
) -> Vec<String> {
    let messages = subjects.iter().map(|s| message(from, rcpts, s)).collect();
    store_messages(spool_dir, from, rcpts, messages)
}

/// Stores each of `messages` (whole messages, CRLF line endings) from `from` to `rcpts`, as an
/// app would have submitted them; returns their queue ids in order.
pub fn store_messages(
    spool_dir: &Path,
    from: &str,
    rcpts: &[&str],
    messages: Vec<Vec<u8>>,
) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (spool, _arrivals) = Spool::open_dir(spool_dir).expect("open spool");
        let mut ids = Vec::new();
        for data in messages {
            let envelope = Envelope {
                app: Some("demo".into()),
                mail_from: from.into(),
                mail_from_params: vec![],
                recipients: rcpts.iter().map(|r| r.to_string()).collect(),
                received_at: herald::clock::unix_now(),
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                helo: "tests".into(),
                tls: None,
                tls_report: false,
                tls_request: herald::spool::TlsRequest::Policy,
                return_path_domain: None,
            };
            ids.push(spool.store(envelope, data).await.expect("store"));
        }
        ids
    })
}

/// Starts herald with `cfg` in the world's directory.
pub fn start(world: &World, cfg: toml::Table) -> Herald {
    Herald::start(world.dir.path(), cfg)
}

/// Waits until herald has logged `needle` on at least `n` lines (counting lines already
/// logged); returns them.
pub fn wait_lines(h: &mut Herald, needle: &str, n: usize) -> Vec<String> {
    loop {
        let found = logged(h, needle);
        if found.len() >= n {
            return found;
        }
        h.wait_for_log(needle, WAIT);
    }
}

/// Waits for a queued message to leave the spool (delivered or failed for every recipient).
pub fn wait_finished(h: &mut Herald, id: &str) {
    wait_lines(h, &format!("queue {id} finished"), 1);
}

/// The lines logged so far that contain `needle`.
pub fn logged(h: &Herald, needle: &str) -> Vec<String> {
    h.log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// How many times each Message-ID reached the sink.
pub fn arrivals(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in sink.messages() {
        let text = m.text();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .expect("Message-ID")
            .to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}
