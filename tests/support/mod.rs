//! The fake internet for end-to-end tests: everything on loopback (127.0.0.0/8), built at test
//! time. `herald` runs herald as a child process with a config the test shapes; `ca` makes a
//! test CA and certificates; `dns` is an authoritative DNS server; `smtp_sink` receives mail
//! with scripted replies; `https` serves MTA-STS policies and takes TLS-RPT POSTs. Each server
//! runs on its own thread with its own tokio runtime (usable from `#[test]` and
//! `#[tokio::test]` alike) and stops when dropped.
#![allow(dead_code)]

pub mod ca;
pub mod dns;
pub mod herald;
pub mod https;
pub mod smtp_sink;
mod thread;

#[allow(unused_imports)]
pub use thread::ServerThread;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A loopback address unlikely to be used by any other test running in parallel:
/// a random 127.x.y.z with a port the kernel just handed out on it.
pub fn free_addr() -> SocketAddr {
    loop {
        let ip = Ipv4Addr::new(127, rand_u8(1, 254), rand_u8(0, 255), rand_u8(2, 254));
        if let Ok(l) = TcpListener::bind((ip, 0))
            && let Ok(addr) = l.local_addr()
        {
            return addr;
        }
    }
}

/// A free port on a given loopback IP.
pub fn free_port_on(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind loopback");
    l.local_addr().expect("local addr")
}

/// A random loopback IP (127.x.y.z, avoiding .0/.1/.255 in the last octet).
pub fn free_ip() -> Ipv4Addr {
    match free_addr().ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => unreachable!(),
    }
}

/// `n` listeners on distinct random loopback IPs sharing one port, because herald delivers to
/// one configured port (`[delivery] port`, `[mta_sts] port`) whatever the MX or policy host.
pub fn same_port_listeners(n: usize) -> (u16, Vec<TcpListener>) {
    'attempt: for _ in 0..1000 {
        let first = TcpListener::bind((free_ip(), 0)).expect("bind loopback");
        let port = first.local_addr().expect("local addr").port();
        let mut listeners = vec![first];
        let mut used = vec![listeners[0].local_addr().expect("local addr").ip()];
        while listeners.len() < n {
            let ip = free_ip();
            if used.contains(&std::net::IpAddr::V4(ip)) {
                continue;
            }
            match TcpListener::bind((ip, port)) {
                Ok(l) => {
                    used.push(std::net::IpAddr::V4(ip));
                    listeners.push(l);
                }
                Err(_) => continue 'attempt,
            }
        }
        listeners.truncate(n);
        return (port, listeners);
    }
    panic!("could not find a common free port on {n} loopback IPs");
}

fn rand_u8(lo: u8, hi: u8) -> u8 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let span = (hi - lo) as u64 + 1;
    lo + (h.finish() % span) as u8
}
