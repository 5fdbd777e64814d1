//! The fake internet for end-to-end tests: everything on loopback (127.0.0.0/8), built at test
//! time. `herald` runs herald as a child process with a config the test shapes; `ca` makes a
//! test CA and certificates; `dns` is an authoritative DNS server; `smtp_sink` receives mail
//! with scripted replies; `https` serves MTA-STS policies and takes TLS-RPT POSTs; `tools` finds
//! the external programs tests cross-check against (failing, never skipping, when one is
//! missing). Each server runs on its own thread with its own tokio runtime (usable from
//! `#[test]` and `#[tokio::test]` alike) and stops when dropped.
//!
//! A delivery test typically reads:
//!
//! ```text
//! let dir = tempfile::tempdir()?;
//! let (ca, dns) = (TestCa::new(), DnsServer::start());
//! let (port, mut ls) = support::same_port_listeners(2);        // two MX hosts, one port
//! let mx1 = SmtpSink::start(ls.remove(0), SinkOptions {
//!     tls: Some(ca.server_config(&["mx1.dest.test"], Validity::Current)),
//!     data_replies: vec!["451 4.3.0 try again".into()],         // first attempt deferred
//!     ..Default::default() });
//! dns.add_mx_host("dest.test", 10, "mx1.dest.test", mx1.addr().ip());
//! let mut cfg = herald::base_config(dir.path());
//! herald::point_at(&mut cfg, dir.path(), &dns, &ca);            // [dns] servers, extra_roots
//! support::set(&mut cfg, "delivery.port", port as i64);
//! let h = Herald::start(dir.path(), cfg);
//! // ... submit over SMTP, then:
//! let got = mx1.wait_for_messages(1, Duration::from_secs(30));
//! ```
#![allow(dead_code)]

pub mod browser;
pub mod ca;
pub mod dns;
pub mod herald;
pub mod https;
pub mod lazyfs;
pub mod pebble;
pub mod postgres;
pub mod smtp_sink;
pub mod spool;
mod thread;
pub mod tools;
pub mod world;

#[allow(unused_imports)]
pub use thread::ServerThread;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

// Why ports are picked at random below the kernel's ephemeral range rather than with port 0:
// an address handed out here is often bound again later (by a herald child process, or by a
// second socket), and in between the kernel may give an ephemeral port to another socket —
// `dig`, resolvers and clients in parallel tests bind 0.0.0.0:0 — which then blocks the rebind
// with EADDRINUSE. Ports below the ephemeral range are never handed out implicitly.

/// A loopback address unlikely to be used by any other test running in parallel: a random
/// 127.x.y.z with a random port below the ephemeral range that was free a moment ago.
/// Prefer [`listener`] when the test itself listens (no window for another socket at all).
pub fn free_addr() -> SocketAddr {
    loop {
        let ip = random_ip();
        if let Some(addr) = try_port_on(ip) {
            return addr;
        }
    }
}

/// A free port on a given loopback IP (random, below the ephemeral range).
pub fn free_port_on(ip: Ipv4Addr) -> SocketAddr {
    for _ in 0..10_000 {
        if let Some(addr) = try_port_on(ip) {
            return addr;
        }
    }
    panic!("no free port on {ip}");
}

/// A random loopback IP (127.x.y.z, avoiding .0/.1/.255 in the last octet).
pub fn free_ip() -> Ipv4Addr {
    random_ip()
}

/// A listening socket on a random loopback IP and a kernel-chosen port, for servers the test
/// runs itself (`SmtpSink::start`, `HttpsServer::start`).
pub fn listener() -> TcpListener {
    loop {
        if let Ok(l) = TcpListener::bind((random_ip(), 0)) {
            return l;
        }
    }
}

/// `n` listeners on distinct random loopback IPs sharing one port, because herald delivers to
/// one configured port (`[delivery] port`, `[mta_sts] port`) whatever the MX or policy host.
pub fn same_port_listeners(n: usize) -> (u16, Vec<TcpListener>) {
    'attempt: for _ in 0..1000 {
        let port = random_port();
        let mut listeners: Vec<TcpListener> = Vec::new();
        let mut used: Vec<Ipv4Addr> = Vec::new();
        while listeners.len() < n {
            let ip = random_ip();
            if used.contains(&ip) {
                continue;
            }
            match TcpListener::bind((ip, port)) {
                Ok(l) => {
                    used.push(ip);
                    listeners.push(l);
                }
                Err(_) => continue 'attempt,
            }
        }
        return (port, listeners);
    }
    panic!("could not find a common free port on {n} loopback IPs");
}

/// Sets a dotted key in a herald config table, creating tables on the way:
/// `set(&mut cfg, "delivery.port", port as i64)`, `set(&mut cfg, "dns.servers", vec![addr])`.
pub fn set(cfg: &mut toml::Table, dotted: &str, value: impl Into<toml::Value>) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut table = cfg;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{part} in {dotted} is not a table"));
    }
    table.insert(last.to_string(), value.into());
}

fn try_port_on(ip: Ipv4Addr) -> Option<SocketAddr> {
    let l = TcpListener::bind((ip, random_port())).ok()?;
    l.local_addr().ok()
}

fn random_ip() -> Ipv4Addr {
    Ipv4Addr::new(127, rand_u8(1, 254), rand_u8(0, 255), rand_u8(2, 254))
}

/// A random port in [10000, start of the ephemeral range).
fn random_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > 12_000)
        .unwrap_or(32_768);
    let span = low - 10_000;
    (10_000 + rand_u64() % span as u64) as u16
}

fn rand_u8(lo: u8, hi: u8) -> u8 {
    let span = (hi - lo) as u64 + 1;
    lo + (rand_u64() % span) as u8
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
