//! Outbound: MX resolution, connecting, TLS policy (opportunistic / MTA-STS / required), the SMTP
//! transaction with the recipient's MX, and DSN bounces.

pub mod client;
pub mod deliver;
pub mod dsn;
pub mod pool;
pub mod resolve;
pub mod tls;
