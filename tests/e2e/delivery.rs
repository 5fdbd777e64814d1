//! End-to-end tests: delivery. Herald runs as a child process pointed at the fake internet
//! (a loopback DNS server and receiving SMTP sinks, all on 127.x addresses) through its
//! ordinary config: `[dns] servers`, `[delivery] port`, `[tls] extra_roots`.

mod capture;
mod chunking;
pub mod common;
mod durability;
mod pool;
mod queue_cmd;
mod relay;
mod required_tls;
mod retries;
mod routing;
mod shutdown;
mod submitted;
