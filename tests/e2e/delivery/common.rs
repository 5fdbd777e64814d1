//! Shared set-up for the delivery tests: the test world (DNS, sinks on one port), a herald
//! config pointed at them, and messages written straight into herald's spool.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use herald::spool::{Envelope, Spool};

use crate::support::herald::Herald;
use crate::support::smtp_sink::SmtpSink;

/// Upper bound for any wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(30);

/// One test's small internet ([`crate::support::world::World`]): DNS and `n` addresses
/// sharing one port; this area adds its config and messages written straight into the spool.
pub struct World(crate::support::world::World);

impl std::ops::Deref for World {
    type Target = crate::support::world::World;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl World {
    /// A world with `n` loopback addresses sharing one port.
    pub fn new(n: usize) -> World {
        World(crate::support::world::World::builder().addresses(n).build())
    }

    /// The herald config: base, plus our DNS and port, and a fast retry schedule.
    pub fn config(&self) -> toml::Table {
        let mut cfg = self.0.config();
        set(&mut cfg, "delivery", "retry_schedule", vec!["1s", "1s"]);
        set(&mut cfg, "delivery", "connect_timeout", "5s");
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
