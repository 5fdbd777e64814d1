//! The fake internet for end-to-end tests: everything on loopback (127.0.0.0/8), built at test
//! time. `herald` runs herald as a child process with a config the test shapes.
#![allow(dead_code)]

pub mod herald;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A loopback address unlikely to be used by any other test running in parallel:
/// a random 127.x.y.z with a port the kernel just handed out on it.
pub fn free_addr() -> SocketAddr {
    loop {
        let ip = Ipv4Addr::new(127, rand_u8(1, 254), rand_u8(0, 255), rand_u8(2, 254));
        if let Ok(l) = TcpListener::bind((ip, 0)) {
            if let Ok(addr) = l.local_addr() {
                return addr;
            }
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
